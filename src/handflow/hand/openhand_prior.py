"""Anatomical pose prior of ``openhand``: joint ranges in twist / spread / flex.

Each finger-joint rotation (MANO convention: local rotation in the wrist's rest axes) is
turned into an axis-angle vector and projected onto the joint's anatomical frame
(:func:`handflow.hand.openhand_mesh.anatomical_axes`): ``c = Aᵀ aa = (twist, spread, flex)``
(radians). Per component the log-density is a broad Gaussian centred inside the anatomical
range plus a smooth quadratic barrier outside it:

    log p(c) = −½ ((c − μ) / σ)² − ½ (relu(c − hi)² + relu(lo − c)²) / τ²,

with ``σ`` a quarter of the range and ``τ = 4°``. Sampling uses a flexion synergy: one
global curl shared by all fingers, per-finger deviations and per-joint noise, clipped to
the ranges.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from handflow.constants import FINGER_NAMES, MANO_FINGERS, NUM_MANO_JOINTS, Side, check_side
from handflow.geometry import axis_angle_to_matrix, matrix_to_axis_angle
from handflow.hand.base import PosePrior, mirror_rotmats
from handflow.hand.openhand_mesh import anatomical_axes

__all__ = ["OpenHandPrior", "JOINT_RANGES_DEG"]

NUM_FINGER_JOINTS = NUM_MANO_JOINTS - 1
#: (twist, spread, flex) ranges in degrees per joint level; spread > 0 is towards the thumb
JOINT_RANGES_DEG: dict[str, tuple[tuple[float, float], ...]] = {
    "finger_mcp": ((-10.0, 10.0), (-20.0, 20.0), (-20.0, 90.0)),
    "finger_pip": ((-6.0, 6.0), (-6.0, 6.0), (-3.0, 110.0)),
    "finger_dip": ((-6.0, 6.0), (-6.0, 6.0), (-3.0, 80.0)),
    "thumb_cmc": ((-30.0, 30.0), (-30.0, 30.0), (-20.0, 50.0)),
    "thumb_mcp": ((-12.0, 12.0), (-12.0, 12.0), (-10.0, 60.0)),
    "thumb_ip": ((-8.0, 8.0), (-8.0, 8.0), (-15.0, 80.0)),
}
_LEVELS = {"finger": ("finger_mcp", "finger_pip", "finger_dip"), "thumb": ("thumb_cmc", "thumb_mcp", "thumb_ip")}
#: where the Gaussian sits inside the flexion range (0 = lower, 1 = upper end): slightly curled
FLEX_MEAN_FRACTION = 0.2
#: softness of the range barriers, radians
BARRIER_TAU = math.radians(4.0)


def _range_table() -> Tensor:
    """(15, 3, 2) radians: lower/upper bound of (twist, spread, flex) per MANO joint 1..15."""
    table = torch.zeros(NUM_FINGER_JOINTS, 3, 2, dtype=torch.float64)
    for f in FINGER_NAMES:
        levels = _LEVELS["thumb" if f == "thumb" else "finger"]
        for j, lv in zip(MANO_FINGERS[f], levels):
            table[j - 1] = torch.tensor(JOINT_RANGES_DEG[lv], dtype=torch.float64).deg2rad()
    return table


class OpenHandPrior(PosePrior):
    """Anatomical-range prior over the 15 finger joints (see the module docstring).

    Buffers: ``axes (15, 3, 3)`` anatomical frames (columns twist, spread, flex),
    ``lo, hi, mu, sigma (15, 3)`` radians.
    """

    def __init__(self) -> None:
        super().__init__()
        rng = _range_table()
        lo, hi = rng[..., 0], rng[..., 1]
        mid = (lo + hi) / 2
        mu = mid.clone()
        mu[:, 2] = lo[:, 2] + FLEX_MEAN_FRACTION * (hi[:, 2] - lo[:, 2])
        sigma = (hi - lo) / 4
        for name, t in (("axes", anatomical_axes()), ("lo", lo), ("hi", hi), ("mu", mu), ("sigma", sigma)):
            self.register_buffer(name, t.float(), persistent=False)

    # ------------------------------------------------------------------ decomposition
    def components(self, rotmats: Tensor, side: Side = "right") -> Tensor:
        """(B, 15, 3, 3) local rotations -> (B, 15, 3) (twist, spread, flex) radians."""
        _check_rotmats(rotmats)
        if check_side(side) == "left":
            rotmats = mirror_rotmats(rotmats)
        aa = matrix_to_axis_angle(rotmats)
        return torch.einsum("jkc,bjk->bjc", self.axes.to(aa.dtype), aa)

    def from_components(self, comps: Tensor, side: Side = "right") -> Tensor:
        """(B, 15, 3) (twist, spread, flex) radians -> (B, 15, 3, 3) rotations."""
        aa = torch.einsum("jkc,bjc->bjk", self.axes.to(comps.dtype), comps)
        R = axis_angle_to_matrix(aa)
        return R if check_side(side) == "right" else mirror_rotmats(R)

    # ------------------------------------------------------------------------- API
    def log_prob(self, rotmats: Tensor, side: Side = "right") -> Tensor:
        """rotmats (B, 15, 3, 3) MANO order -> (B,) log-density (up to a constant)."""
        c = self.components(rotmats, side)
        dt = c.dtype
        lo, hi, mu, sigma = (t.to(dt) for t in (self.lo, self.hi, self.mu, self.sigma))
        gauss = -0.5 * ((c - mu) / sigma) ** 2
        barrier = -0.5 * (torch.relu(c - hi) ** 2 + torch.relu(lo - c) ** 2) / BARRIER_TAU**2
        return (gauss + barrier).sum((1, 2))

    def sample(self, n: int, side: Side = "right", generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` natural articulations (n, 15, 3, 3) float32.

        Flexion synergy: a shared curl ``g ~ sigmoid(N(0, 1.5²))``, per-finger curl
        ``g + 0.2 N(0,1)``, per-joint ``+ 0.08 N(0,1)``, mapped into each flexion range;
        spread and twist Gaussian with a quarter and a sixth of their half-ranges; all
        clipped to the ranges."""
        check_side(side)
        if n < 0:
            raise ValueError(f"sample: n must be >= 0, got {n}")
        kw = dict(generator=generator, dtype=torch.float64)
        lo, hi = self.lo.double(), self.hi.double()
        g = torch.sigmoid(1.5 * torch.randn(n, 1, **kw))
        finger_curl = g + 0.2 * torch.randn(n, len(FINGER_NAMES), **kw)
        finger_of_joint = torch.zeros(NUM_FINGER_JOINTS, dtype=torch.long)
        for k, f in enumerate(FINGER_NAMES):
            finger_of_joint[[j - 1 for j in MANO_FINGERS[f]]] = k
        curl = finger_curl[:, finger_of_joint] + 0.08 * torch.randn(n, NUM_FINGER_JOINTS, **kw)
        curl = curl.clamp(0.0, 1.0)
        flex_lo = lo[:, 2].clamp_min(0.0)  # natural poses do not hyperextend
        flex = flex_lo + curl * (hi[:, 2] - flex_lo)
        half = (hi - lo)[:, :2] / 2
        mid = (hi + lo)[:, :2] / 2
        scale = torch.tensor([1 / 6, 1 / 4], dtype=torch.float64)
        ts = mid + half * scale * torch.randn(n, NUM_FINGER_JOINTS, 2, **kw)
        comps = torch.cat([ts, flex[..., None]], -1)
        comps = torch.maximum(torch.minimum(comps, hi), lo)
        return self.from_components(comps, side).float()


def _check_rotmats(rotmats: Tensor) -> None:
    if rotmats.dim() != 4 or rotmats.shape[1:] != (NUM_FINGER_JOINTS, 3, 3):
        raise ValueError(f"pose prior expects rotmats (B, {NUM_FINGER_JOINTS}, 3, 3), got {tuple(rotmats.shape)}")
    if not torch.isfinite(rotmats).all():
        raise ValueError("pose prior: rotmats contain NaN or inf")
