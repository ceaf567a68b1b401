"""The ``gaussian`` baseline: a diagonal Gaussian over the standardized parameters."""

from __future__ import annotations

import torch
from torch import Tensor

from handflow.config import Config
from handflow.constants import PARAM_DIM
from handflow.models.base import HandPoseModel
from handflow.models.baselines.common import (
    clamp_logvar,
    draw_normal,
    gaussian_log_prob,
    head_mlp,
    masked_targets,
)
from handflow.models.losses import nll_loss


class GaussianModel(HandPoseModel):
    """Aleatoric baseline: diagonal Gaussian with regressed mean and log-variance (clamped to
    [LOGVAR_MIN, LOGVAR_MAX]), trained by its NLL (``nll``) plus the shared terms."""

    kind = "gaussian"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.head = head_mlp(self.backbone.dim, 2 * PARAM_DIM)

    def mean_logvar(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C) -> mean (B, 218), log-variance (B, 218), standardized units."""
        mean, raw = self.head(feats).chunk(2, -1)
        return mean, clamp_logvar(raw)

    def z0_std(self, feats: Tensor) -> Tensor:
        """(B, C) -> the mean (B, 218), standardized."""
        return self.mean_logvar(feats)[0]

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, C) -> ``mean + σ ε`` (B, n, 218), ε ~ N(0, I) from ``generator``."""
        return self.estimate_and_sample_std(feats, n, generator)[1]

    def estimate_and_sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(B, C) -> (mean (B, 218), samples (B, n, 218)); one head pass."""
        mean, logvar = self.mean_logvar(feats)
        eps = draw_normal((feats.shape[0], n, PARAM_DIM), mean, generator)
        return mean, mean[:, None] + torch.exp(0.5 * logvar)[:, None] * eps

    def log_prob_std(self, feats: Tensor, y_std: Tensor) -> Tensor:
        """``log N(y; mean(v), σ²(v))`` of standardized annotations: (B, C), (B, N, 218) -> (B, N)."""
        mean, logvar = self.mean_logvar(feats)
        return gaussian_log_prob(y_std, mean[:, None], logvar[:, None])

    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """``nll``: min over the N annotations of the Gaussian NLL, per dimension, averaged over
        images with ≥ 1 annotation (:func:`~handflow.models.losses.nll_loss`).

        Args:
            feats: (B, C); y_std: (B, N, 218) standardized annotations; y_mask: (B, N) bool;
            generator: unused (the NLL is exact).
        """
        if not self.cfg.loss.active("nll") or not bool(y_mask.any()):
            return {}
        return {"nll": nll_loss(self.log_prob_std(feats, masked_targets(y_std, y_mask)), y_mask)}
