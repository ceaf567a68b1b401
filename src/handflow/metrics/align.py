r"""Joint alignment for the evaluation metrics and shared input checks.

Joints are two-hand InterHand2.6M arrays ``(..., 42, 3)`` in millimetres: right hand
``0..20``, left hand ``21..41``, roots :data:`~handflow.constants.RIGHT_ROOT` and
:data:`~handflow.constants.LEFT_ROOT`.

Alignments (SPEC section 7):

* ``"rr"`` (root-relative): each hand minus its own root, so only the two hands' articulated
  shapes are compared.
* ``"rrr"`` (right-root-relative): both hands minus the right root, so the relative placement
  of the left hand counts too.
* ``"global"``: no alignment (camera-frame error, depth included).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from handflow.constants import (
    IH_WRIST,
    LEFT_ROOT,
    NUM_HAND_JOINTS,
    NUM_JOINTS,
    RIGHT_ROOT,
)

__all__ = ["ALIGNMENTS", "Alignment", "align", "check_alignment", "check_joints"]

Alignment = Literal["rr", "rrr", "global"]
#: the alignment names accepted by every metric
ALIGNMENTS: tuple[Alignment, ...] = ("rr", "rrr", "global")

# the per-hand reshape in ``align`` relies on this layout
assert RIGHT_ROOT == IH_WRIST and LEFT_ROOT == NUM_HAND_JOINTS + IH_WRIST


def check_alignment(alignment: str) -> Alignment:
    """Return ``alignment`` if known, else raise a ``ValueError`` listing the options."""
    if alignment not in ALIGNMENTS:
        raise ValueError(
            f"unknown alignment {alignment!r}: expected one of {', '.join(map(repr, ALIGNMENTS))}"
        )
    return alignment  # type: ignore[return-value]


def check_joints(joints: Tensor, name: str, finite_where: Tensor | None = None) -> None:
    """Raise a clear error unless ``joints`` is a floating tensor of shape ``(..., 42, 3)``.

    Args:
        joints: the tensor to check.
        name: argument name used in the message.
        finite_where: optional bool mask broadcastable to ``joints.shape[:-1]``; NaN/inf are
            only rejected where it is True (padding rows may hold anything).
    """
    if not isinstance(joints, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(joints).__name__}")
    if joints.ndim < 2 or joints.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(
            f"{name} must have shape (..., {NUM_JOINTS}, 3) (two-hand InterHand joints, mm), "
            f"got {tuple(joints.shape)}"
        )
    if not joints.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {joints.dtype}")
    bad = ~torch.isfinite(joints).all(dim=-1)
    if finite_where is not None:
        bad = bad & finite_where
    if bool(bad.any()):
        raise ValueError(
            f"{name} contains NaN or inf at {int(bad.sum())} joint(s); mask them out or fix "
            "the input"
        )


def align(joints: Tensor, alignment: str) -> Tensor:
    """Align two-hand joints.

    Args:
        joints: ``(..., 42, 3)`` mm.
        alignment: ``"rr"`` (each hand minus its own root), ``"rrr"`` (both hands minus the
            right root) or ``"global"`` (unchanged).

    Returns:
        ``(..., 42, 3)`` aligned joints (a new tensor, or ``joints`` itself for ``"global"``).
    """
    check_alignment(alignment)
    if joints.ndim < 2 or joints.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(f"joints must have shape (..., {NUM_JOINTS}, 3), got {tuple(joints.shape)}")
    if alignment == "global":
        return joints
    if alignment == "rrr":
        return joints - joints[..., RIGHT_ROOT : RIGHT_ROOT + 1, :]
    per_hand = joints.unflatten(-2, (2, NUM_HAND_JOINTS))  # (..., 2, 21, 3): right, left
    return (per_hand - per_hand[..., IH_WRIST : IH_WRIST + 1, :]).flatten(-3, -2)
