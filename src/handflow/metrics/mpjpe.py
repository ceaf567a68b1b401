r"""Mean per-joint position error (MPJPE) in millimetres, with masks and alignments.

Every function broadcasts over leading dimensions, so one prediction can be scored against
many annotations (``pred (B,1,42,3)`` vs ``gt (B,N,42,3)``) or many samples against one
annotation (``pred (B,S,42,3)`` vs ``gt (B,1,42,3)``).

**Empty masks.** A row whose mask selects no joint has no defined error: it is returned as
``NaN``, never as 0. Aggregate such results with :func:`nanmean`, which skips the NaN rows and
tells you how many rows counted.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handflow.constants import NUM_JOINTS
from handflow.metrics.align import align, check_alignment, check_joints

__all__ = ["joint_errors", "mpjpe", "mpjpe_occluded", "mpjpe_min_max", "nanmean"]


def _check_mask(mask: Tensor, name: str, last: int = NUM_JOINTS) -> None:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}")
    if mask.ndim < 1 or mask.shape[-1] != last:
        raise ValueError(f"{name} must have shape (..., {last}), got {tuple(mask.shape)}")


def joint_errors(pred: Tensor, gt: Tensor, alignment: str) -> Tensor:
    """Per-joint Euclidean errors after alignment.

    Args:
        pred: ``(..., 42, 3)`` mm, leading dimensions broadcastable with ``gt``'s.
        gt: ``(..., 42, 3)`` mm.
        alignment: ``"rr" | "rrr" | "global"`` (see :func:`~handflow.metrics.align.align`).

    Returns:
        ``(..., 42)`` errors in mm (broadcast leading shape).
    """
    check_alignment(alignment)
    check_joints(pred, "pred")
    check_joints(gt, "gt")
    return torch.linalg.vector_norm(align(pred, alignment) - align(gt, alignment), dim=-1)


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over the last dim where ``mask``; NaN where the mask is empty."""
    if mask is None:
        return values.mean(dim=-1)
    mask = mask.expand_as(values) if mask.shape != values.shape else mask
    total = torch.where(mask, values, values.new_zeros(())).sum(dim=-1)
    count = mask.sum(dim=-1)
    nan = values.new_full((), float("nan"))
    return torch.where(count > 0, total / count.clamp_min(1), nan)


def mpjpe(pred: Tensor, gt: Tensor, alignment: str, mask: Tensor | None = None) -> Tensor:
    """Mean per-joint position error (mm).

    Args:
        pred: ``(..., 42, 3)`` mm; leading dimensions broadcast against ``gt``'s (e.g. ``pred (B,S,42,3)``
            against ``gt (B,1,42,3)``).
        gt: ``(..., 42, 3)`` mm.
        alignment: ``"rr"`` (each hand at its own root), ``"rrr"`` (both at the right root)
            or ``"global"`` (none).
        mask: optional ``(..., 42)`` bool, True for the joints that count (e.g. valid joints);
            broadcast against the leading dimensions. ``None`` counts all 42.

    Returns:
        ``(...)`` mean error over the selected joints; ``NaN`` where a row's mask is empty
        (use :func:`nanmean` to aggregate).
    """
    err = joint_errors(pred, gt, alignment)
    if mask is not None:
        _check_mask(mask, "mask")
        shape = torch.broadcast_shapes(err.shape, mask.shape)
        err, mask = err.expand(shape), mask.expand(shape)
    return _masked_mean(err, mask)


def mpjpe_occluded(
    pred: Tensor, gt: Tensor, visible: Tensor, valid: Tensor | None = None
) -> Tensor:
    """RR* (SPEC section 7): root-relative MPJPE on the joints occluded in the image.

    Args:
        pred: ``(..., 42, 3)`` mm.
        gt: ``(..., 42, 3)`` mm.
        visible: ``(..., 42)`` bool, True where the joint is visible in the image.
        valid: optional ``(..., 42)`` bool, True where the annotation is valid.

    Returns:
        ``(...)`` mm; ``NaN`` for rows without any valid occluded joint.
    """
    _check_mask(visible, "visible")
    mask = ~visible
    if valid is not None:
        _check_mask(valid, "valid")
        mask = mask & valid
    return mpjpe(pred, gt, "rr", mask=mask)


def mpjpe_min_max(
    pred: Tensor,
    annotations: Tensor,
    alignment: str,
    mask: Tensor | None = None,
    ann_valid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Min and max MPJPE of one prediction over all plausible annotations (paper Table 1).

    Args:
        pred: ``(B, 42, 3)`` mm, one prediction per image.
        annotations: ``(B, N, 42, 3)`` mm, the N plausible annotations of each image.
        alignment: ``"rr" | "rrr" | "global"``.
        mask: optional joint mask ``(B, 42)`` or ``(B, N, 42)`` bool.
        ann_valid: optional ``(B, N)`` bool, False for padding annotations (their content
            is ignored, NaN allowed).

    Returns:
        ``(min (B,), max (B,))`` in mm over the valid annotations whose joint mask is not
        empty; ``NaN`` for images with none.
    """
    check_joints(pred, "pred")
    if pred.ndim != 3:
        raise ValueError(f"pred must have shape (B, 42, 3), got {tuple(pred.shape)}")
    if annotations.ndim != 4 or annotations.shape[0] != pred.shape[0]:
        raise ValueError(
            f"annotations must have shape (B={pred.shape[0]}, N, 42, 3), "
            f"got {tuple(annotations.shape)}"
        )
    B, N = annotations.shape[:2]
    if ann_valid is None:
        ann_valid = torch.ones(B, N, dtype=torch.bool, device=annotations.device)
    elif ann_valid.dtype != torch.bool or ann_valid.shape != (B, N):
        raise ValueError(f"ann_valid must be a bool tensor of shape ({B}, {N})")
    check_joints(annotations, "annotations", finite_where=ann_valid[..., None])
    annotations = torch.where(ann_valid[..., None, None], annotations, pred[:, None])
    if mask is not None and mask.ndim == 2:
        mask = mask[:, None]
    err = mpjpe(pred[:, None], annotations, alignment, mask)  # (B, N)
    ok = ann_valid & ~torch.isnan(err)
    inf = err.new_full((), float("inf"))
    lo = torch.where(ok, err, inf).amin(dim=1)
    hi = torch.where(ok, err, -inf).amax(dim=1)
    nan = err.new_full((), float("nan"))
    any_ok = ok.any(dim=1)
    return torch.where(any_ok, lo, nan), torch.where(any_ok, hi, nan)


def nanmean(values: Tensor, dim: int | None = None) -> tuple[Tensor, Tensor]:
    """Mean that skips NaN entries (e.g. rows with an empty mask), with the count used.

    Args:
        values: any shape.
        dim: dimension to reduce; ``None`` reduces everything.

    Returns:
        ``(mean, count)``: the mean of the non-NaN entries (NaN where there is none) and the
        number of entries that counted, so a report can state it.
    """
    ok = ~torch.isnan(values)
    zero = values.new_zeros(())
    if dim is None:
        total, count = torch.where(ok, values, zero).sum(), ok.sum()
    else:
        total, count = torch.where(ok, values, zero).sum(dim), ok.sum(dim)
    nan = values.new_full((), float("nan"))
    return torch.where(count > 0, total / count.clamp_min(1), nan), count
