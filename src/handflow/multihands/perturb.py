"""Proposal step of MultiHands: perturb two-hand parameters (paper Sec. 4; SPEC section 6).

A two-hand state is kept in *physical* camera-frame form, batched over proposals ``P``:
``rotmats`` (P, 2, 16, 3, 3) (right, left; global orientation in the camera frame first),
``betas`` (P, 2, 10) and ``root`` (P, 2, 3) camera-frame wrists in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from handflow.geometry.rotations import axis_angle_to_matrix

__all__ = ["TwoHandState", "PerturbConfig", "perturb"]


@dataclass
class TwoHandState:
    """Batched two-hand parameters (index 0 right, 1 left along the hand axis).

    Attributes:
        rotmats: (P, 2, 16, 3, 3).
        betas: (P, 2, 10).
        root: (P, 2, 3) camera-frame wrist, mm.
    """

    rotmats: Tensor
    betas: Tensor
    root: Tensor

    def __len__(self) -> int:
        return int(self.rotmats.shape[0])

    def index(self, idx: Tensor) -> TwoHandState:
        """Select proposals by an index or boolean mask over ``P``."""
        return TwoHandState(self.rotmats[idx], self.betas[idx], self.root[idx])

    @staticmethod
    def cat(states: list[TwoHandState]) -> TwoHandState:
        return TwoHandState(
            torch.cat([s.rotmats for s in states]),
            torch.cat([s.betas for s in states]),
            torch.cat([s.root for s in states]),
        )


@dataclass
class PerturbConfig:
    """Standard deviations of one perturbation step (documented defaults, docs/multihands.md).

    Attributes:
        finger: radians, isotropic axis-angle noise on each of the 15 finger joints.
        global_rot: radians, axis-angle noise on each hand's global orientation.
        log_depth: std of ``log(Z'/Z)``: the wrist moves along its camera ray, keeping its 2D
            projection.
        betas: std of additive shape noise.
        finger_fraction: probability that a given finger joint is perturbed in a step
            (sparse moves keep the visible joints within the pixel threshold more often).
    """

    finger: float = 0.25
    global_rot: float = 0.08
    log_depth: float = 0.06
    betas: float = 0.25
    finger_fraction: float = 0.35


def _random_rot(shape: tuple[int, ...], sigma: float, g: torch.Generator, like: Tensor) -> Tensor:
    aa = torch.randn(*shape, 3, generator=g, dtype=like.dtype, device="cpu").to(like.device) * sigma
    return axis_angle_to_matrix(aa)


def perturb(state: TwoHandState, cfg: PerturbConfig, g: torch.Generator) -> TwoHandState:
    """One random perturbation of every proposal.

    Finger joints: ``R_k ← R_k · exp(ε)`` (local); global orientation: ``R_0 ← exp(ε) · R_0``
    (camera frame, about the wrist); wrist: ``root ← root · exp(δ)`` (along the camera ray:
    the projected wrist is unchanged); shape: ``β ← β + η``.

    Args:
        state: P proposals.
        cfg: noise scales.
        g: CPU generator (reproducible on any device).

    Returns:
        New :class:`TwoHandState` with P proposals.
    """
    P = len(state)
    dev, dt = state.rotmats.device, state.rotmats.dtype
    R = state.rotmats.clone()
    fingers = _random_rot((P, 2, 15), cfg.finger, g, R)
    active = (torch.rand(P, 2, 15, generator=g) < cfg.finger_fraction).to(dev)
    eye = torch.eye(3, dtype=dt, device=dev)
    fingers = torch.where(active[..., None, None], fingers, eye)
    R[:, :, 1:] = R[:, :, 1:] @ fingers
    R[:, :, 0] = _random_rot((P, 2), cfg.global_rot, g, R) @ R[:, :, 0]
    scale = torch.exp(torch.randn(P, 2, 1, generator=g, dtype=dt).to(dev) * cfg.log_depth)
    betas = state.betas + torch.randn(P, 2, state.betas.shape[-1], generator=g, dtype=dt).to(dev) * cfg.betas
    return TwoHandState(R, betas, state.root * scale)
