"""Pose prior of the MANO backend: a Gaussian in MANO's PCA space.

MANO ships, per side, ``hands_components`` (45×45, rows are principal directions of the
45 axis-angle finger values), ``hands_mean`` (45,) and ``hands_coeffs`` (N×45), the PCA
coefficients of its N training poses. The prior is the Gaussian fitted to those
coefficients, ``c ~ N(μ, Σ + λI)`` with ``λ = 1e-4`` (rad²) so that directions the training
poses never used stay finite. ``log_prob`` maps rotations to axis-angle, subtracts
``hands_mean`` and projects on the components.

Some MANO distributions leave ``hands_coeffs`` empty. With fewer than two training poses no
covariance can be fitted: the prior is then ``c ~ N(0, I)`` (the components are centred on
``hands_mean``, so the coefficients have zero mean), the standard-normal PCA prior of MANO
fitting code, and a warning says so.

:meth:`ManoPCAPrior.from_components` turns anatomical (twist, spread, flex) angles into
rotations with the anatomical frames of ``openhand``, whose rest frame and rotation
semantics are MANO's (``docs/openhand.md``): hand-written poses (the hand gallery) then mean
the same motion for both models.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from handflow.constants import NUM_MANO_JOINTS, Side
from handflow.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from handflow.hand.base import PosePrior
from handflow.hand.openhand_prior import OpenHandPrior

if TYPE_CHECKING:  # mano imports this module
    from handflow.hand.mano import ManoModel

__all__ = ["ManoPCAPrior", "COV_REGULARIZER", "MIN_COEFF_ROWS"]

log = logging.getLogger(__name__)
COV_REGULARIZER = 1e-4
#: fewer training poses than this in ``hands_coeffs`` (e.g. none): the N(0, I) fallback
MIN_COEFF_ROWS = 2


def _gaussian(coeffs: Tensor, side: str) -> tuple[Tensor, Tensor]:
    """``(mean, covariance)`` of the PCA coefficients of the training poses (float64), or the
    N(0, I) fallback (logged) when there are fewer than :data:`MIN_COEFF_ROWS` of them."""
    d = coeffs.shape[1]
    if coeffs.shape[0] < MIN_COEFF_ROWS:
        log.warning("MANO %s: hands_coeffs holds %d training poses: the PCA pose prior falls back to N(0, I)",
                    side, coeffs.shape[0])
        return torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    return coeffs.mean(0), torch.cov(coeffs.T) + COV_REGULARIZER * torch.eye(d, dtype=torch.float64)


class ManoPCAPrior(PosePrior):
    """Gaussian prior over MANO PCA coefficients (one per side). See the module docstring."""

    def __init__(self, model: ManoModel) -> None:
        super().__init__()
        self.sides = model.sides
        self.anatomical = OpenHandPrior()  # its anatomical frames only (non-persistent buffers: follow .to(device))
        for side in model.sides:
            mu, cov = _gaussian(model.buffer(side, "hands_coeffs").double(), side)
            L = torch.linalg.cholesky(cov)
            self.register_buffer(f"{side}_mu", mu, persistent=False)
            self.register_buffer(f"{side}_chol", L, persistent=False)
            comps = model.buffer(side, "hands_components").double()
            self.register_buffer(f"{side}_components", comps, persistent=False)
            self.register_buffer(f"{side}_projection", torch.linalg.pinv(comps), persistent=False)
            self.register_buffer(f"{side}_mean", model.buffer(side, "hands_mean").double(), persistent=False)

    def _get(self, side: str, key: str) -> Tensor:
        if side not in self.sides:
            raise ValueError(f"the MANO prior has no {side} hand (its file was not loaded)")
        return getattr(self, f"{side}_{key}")

    def coefficients(self, rotmats: Tensor, side: Side = "right") -> Tensor:
        """(B, 15, 3, 3) -> (B, 45) PCA coefficients (float64)."""
        if rotmats.dim() != 4 or rotmats.shape[1:] != (NUM_MANO_JOINTS - 1, 3, 3):
            raise ValueError(f"rotmats must be (B, 15, 3, 3), got {tuple(rotmats.shape)}")
        aa = matrix_to_axis_angle(rotmats.double()).reshape(rotmats.shape[0], -1)
        return (aa - self._get(side, "mean")) @ self._get(side, "projection")

    def from_components(self, comps: Tensor, side: Side = "right") -> Tensor:
        """(B, 15, 3) anatomical (twist, spread, flex) radians -> (B, 15, 3, 3) rotations, in
        openhand's anatomical frames (module docstring); the left hand is mirrored."""
        self._get(side, "mean")  # the side must be loaded, as for the other methods
        return self.anatomical.from_components(comps, side)

    def log_prob(self, rotmats: Tensor, side: Side = "right") -> Tensor:
        c = self.coefficients(rotmats, side) - self._get(side, "mu")
        L = self._get(side, "chol")
        sol = torch.linalg.solve_triangular(L, c.T, upper=False).T
        d = c.shape[-1]
        logdet = 2 * torch.log(torch.diagonal(L)).sum()
        return (-0.5 * (sol**2).sum(-1) - 0.5 * logdet - 0.5 * d * math.log(2 * math.pi)).to(rotmats.dtype)

    def sample(self, n: int, side: Side = "right", generator: torch.Generator | None = None) -> Tensor:
        L = self._get(side, "chol")
        eps = torch.randn(n, L.shape[0], generator=generator, dtype=torch.float64)
        c = self._get(side, "mu") + eps @ L.T
        aa = c @ self._get(side, "components") + self._get(side, "mean")
        return axis_angle_to_matrix(aa.reshape(n, NUM_MANO_JOINTS - 1, 3)).float()
