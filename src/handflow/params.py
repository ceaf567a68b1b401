"""The 218-number two-hand parameter vector ``y`` (SPEC section 2).

Per hand (109): ``rot6d`` 16×6 (global orientation in the camera frame + 15 finger
joints, MANO joint order), ``betas`` 10, ``root_uv`` 2, ``log_s`` 1. Two hands:
``y = [y_right, y_left]``. Standardization with training statistics is done by
:class:`ParamNormalizer` (betas, root_uv and log_s only; 6D blocks are left as they are).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from handflow.constants import HAND_PARAM_DIM, NUM_BETAS, NUM_ROT, PARAM_DIM, ROT6D_DIM, SIDES
from handflow.geometry.root import root_to_uvs, uvs_to_root
from handflow.geometry.rotations import matrix_to_rot6d, rot6d_to_matrix

__all__ = ["HandParams", "pack_hand", "unpack_hand", "pack", "unpack", "ParamNormalizer", "SCALAR_SLICE", "TwoHandState",
           "state_from_params", "params_from_state"]

#: within one hand's 109 numbers: rot6d, betas, root (u, v, log_s)
ROT6D_SLICE = slice(0, ROT6D_DIM)
BETAS_SLICE = slice(ROT6D_DIM, ROT6D_DIM + NUM_BETAS)
ROOT_SLICE = slice(ROT6D_DIM + NUM_BETAS, HAND_PARAM_DIM)
#: betas + root_uv + log_s (the standardized part of one hand)
SCALAR_SLICE = slice(ROT6D_DIM, HAND_PARAM_DIM)


@dataclass
class HandParams:
    """Decoded parameters of one hand.

    Attributes:
        rotmats: (*, 16, 3, 3) global orientation (camera frame) + 15 joints, MANO order.
        betas: (*, 10) shape.
        root: (*, 3) camera-frame wrist position, mm.
        rot6d: (*, 16, 6) the raw 6D blocks (before Gram-Schmidt), for ``L_R``.
    """

    rotmats: Tensor
    betas: Tensor
    root: Tensor
    rot6d: Tensor


def pack_hand(rotmats: Tensor, betas: Tensor, root: Tensor, K: Tensor, size: int) -> Tensor:
    """One hand -> (*, 109). rotmats (*, 16, 3, 3); betas (*, 10); root (*, 3) mm; K (*, 3, 3) crop."""
    rot6d = matrix_to_rot6d(rotmats).flatten(-2)
    return torch.cat([rot6d, betas, root_to_uvs(root, K, size)], -1)


def unpack_hand(y: Tensor, K: Tensor, size: int) -> HandParams:
    """(*, 109) -> :class:`HandParams`; K (*, 3, 3) broadcast against the leading dims of ``y``."""
    if y.shape[-1] != HAND_PARAM_DIM:
        raise ValueError(f"unpack_hand: expected (*, {HAND_PARAM_DIM}), got {tuple(y.shape)}")
    rot6d = y[..., ROT6D_SLICE].unflatten(-1, (NUM_ROT, 6))
    return HandParams(
        rotmats=rot6d_to_matrix(rot6d),
        betas=y[..., BETAS_SLICE],
        root=uvs_to_root(y[..., ROOT_SLICE], K, size),
        rot6d=rot6d,
    )


def pack(right: Tensor, left: Tensor) -> Tensor:
    """Concatenate two (*, 109) hand vectors into (*, 218)."""
    return torch.cat([right, left], -1)


def unpack(y: Tensor, K: Tensor, size: int) -> dict[str, HandParams]:
    """(*, 218) -> ``{"right": HandParams, "left": HandParams}``. K (*, 3, 3) crop intrinsics."""
    if y.shape[-1] != PARAM_DIM:
        raise ValueError(f"unpack: expected (*, {PARAM_DIM}), got {tuple(y.shape)}")
    return {
        side: unpack_hand(y[..., i * HAND_PARAM_DIM : (i + 1) * HAND_PARAM_DIM], K, size)
        for i, side in enumerate(SIDES)
    }


def _scalar_mask() -> Tensor:
    m = torch.zeros(PARAM_DIM, dtype=torch.bool)
    for i in range(2):
        off = i * HAND_PARAM_DIM
        m[off + SCALAR_SLICE.start : off + SCALAR_SLICE.stop] = True
    return m


class ParamNormalizer(nn.Module):
    """Standardizes betas, root_uv and log_s with training statistics; 6D blocks pass through.

    The statistics are buffers, so they are saved in every checkpoint.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(PARAM_DIM))
        self.register_buffer("std", torch.ones(PARAM_DIM))
        self.register_buffer("mask", _scalar_mask(), persistent=False)
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, y: Tensor, min_std: float = 1e-3) -> ParamNormalizer:
        """Set the statistics from training parameters ``y`` (N, 218), N >= 2."""
        if y.dim() != 2 or y.shape[-1] != PARAM_DIM or y.shape[0] < 2:
            raise ValueError(f"ParamNormalizer.fit: need (N>=2, {PARAM_DIM}), got {tuple(y.shape)}")
        if not torch.isfinite(y).all():
            raise ValueError("ParamNormalizer.fit: training parameters contain NaN or inf")
        mean, std = y.mean(0), y.std(0).clamp_min(min_std)
        self.mean.copy_(torch.where(self.mask, mean, torch.zeros_like(mean)))
        self.std.copy_(torch.where(self.mask, std, torch.ones_like(std)))
        self.fitted.fill_(True)
        return self

    def normalize(self, y: Tensor) -> Tensor:
        """(*, 218) physical -> standardized."""
        return (y - self.mean) / self.std

    def denormalize(self, y: Tensor) -> Tensor:
        """(*, 218) standardized -> physical."""
        return y * self.std + self.mean


# ----------------------------------------------------------------------------- batched two-hand state
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


def state_from_params(params: Tensor, K: Tensor, size: int) -> TwoHandState:
    """(P, 218) parameters and (P, 3, 3) crop intrinsics -> :class:`TwoHandState` (same dtype)."""
    hp = unpack(params, K, size)
    return TwoHandState(
        torch.stack([hp[s].rotmats for s in SIDES], 1),
        torch.stack([hp[s].betas for s in SIDES], 1),
        torch.stack([hp[s].root for s in SIDES], 1),
    )


def params_from_state(state: TwoHandState, K: Tensor, size: int) -> Tensor:
    """Inverse of :func:`state_from_params`: (P, 218)."""
    hands = [pack_hand(state.rotmats[:, h], state.betas[:, h], state.root[:, h], K, size) for h in range(2)]
    return pack(*hands)
