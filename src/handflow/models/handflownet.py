"""HandFlowNet: ResNet feature -> conditional GLOW over the 218 two-hand parameters."""

from __future__ import annotations

import torch
from torch import Tensor

from handflow.config import Config
from handflow.constants import PARAM_DIM
from handflow.flow import ConditionalGlow
from handflow.models.base import HandPoseModel

__all__ = ["HandFlowNet", "ACTNORM_MIN_STD"]

#: floor of ActNorm's data-dependent std in standardized units
ACTNORM_MIN_STD = 0.05


class HandFlowNet(HandPoseModel):
    """The paper's model. The flow works in standardized parameter space; ``z0`` is the
    *z = 0 estimate* ``f_v(0)`` (not the exact mode with affine coupling)."""

    kind = "flow"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        m = cfg.model
        # parameters are standardized, so no dimension should be scaled by more than 1/ACTNORM_MIN_STD
        self.flow = ConditionalGlow(PARAM_DIM, self.backbone.dim, steps=m.flow_steps, hidden=m.flow_hidden,
                                    blocks=m.flow_blocks, scale_bound=m.scale_bound, min_std=ACTNORM_MIN_STD,
                                    check_finite=False)

    def initialize(self, feats: Tensor, y_std: Tensor) -> None:
        """ActNorm data init. Call it on many diverse annotations (``fit_normalizer`` does,
        with a zero context: the couplings start as the identity, so the context plays no
        role at init); a first image batch of one sequence would see constant betas."""
        if not self.flow.initialized:
            self.flow.initialize(y_std, feats.detach())

    def z0_std(self, feats: Tensor) -> Tensor:
        return self.flow.mode(feats)

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.flow.sample(feats, n, generator=generator)

    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """``nll`` (min over the N annotations) and ``det`` (DetMag at the same number of
        sampled z, context detached so no gradient reaches the backbone).

        Args:
            feats: (B, C); y_std: (B, N, 218); y_mask: (B, N) bool, at least one True per row
                that has parameters (rows without any are ignored).
        """
        lc = self.cfg.loss
        cache = self.flow.project_context(feats)
        out: dict[str, Tensor] = {}
        rows = y_mask.any(1)
        if lc.w_nll > 0 and bool(rows.any()):
            noise = torch.randn(y_std.shape, generator=generator, dtype=y_std.dtype).to(y_std.device) * lc.nll_noise
            lp = self.flow.log_prob(y_std + noise, context_cache=cache)  # (B, N)
            nll = torch.where(y_mask, -lp, torch.full_like(lp, float("inf"))).amin(1)
            out["nll"] = nll[rows].mean() / PARAM_DIM
        if lc.w_det > 0:
            z = torch.randn(feats.shape[0], max(1, y_std.shape[1]), PARAM_DIM, generator=generator, dtype=feats.dtype).to(feats.device)
            _, logdet = self.flow.forward(z, context_cache=cache.detach())
            out["det"] = -logdet.mean() / PARAM_DIM
        return out
