"""The ``deterministic`` baseline: a regression (a Dirac at the predicted parameters)."""

from __future__ import annotations

import torch
from torch import Tensor

from handflow.config import Config
from handflow.constants import PARAM_DIM
from handflow.models.base import HandPoseModel
from handflow.models.baselines.common import head_mlp


class DeterministicModel(HandPoseModel):
    """Regression: a Dirac at the predicted parameters. Trained by the shared terms only
    (``L_θ`` on the regression, ``L_3D``/``L_2D``/``L_R`` on it and on its repeats)."""

    kind = "deterministic"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.head = head_mlp(self.backbone.dim, PARAM_DIM)

    def z0_std(self, feats: Tensor) -> Tensor:
        """(B, C) -> the regression (B, 218), standardized."""
        return self.head(feats)

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, C) -> the regression repeated (B, n, 218); ``generator`` is unused."""
        return self.estimate_and_sample_std(feats, n, generator)[1]

    def estimate_and_sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(B, C) -> (regression (B, 218), its n repeats (B, n, 218)); one head pass."""
        z0 = self.z0_std(feats)
        return z0, z0[:, None].expand(-1, n, -1).clone()

    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """No likelihood: a Dirac has none. Returns ``{}``."""
        return {}
