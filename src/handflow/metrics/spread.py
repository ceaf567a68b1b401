r"""Sample spread: how far a predicted distribution's samples scatter, per joint, in mm.

Definition (population statistics, no Bessel correction): for each joint :math:`j`, with
samples :math:`x_{s,j}\in\mathbb R^3` and their mean :math:`\bar x_j`,

.. math::
    \mathrm{spread}_j = \sqrt{\tfrac1S \textstyle\sum_s \lVert x_{s,j} - \bar x_j\rVert^2},

the RMS 3D deviation (= the square root of the trace of the joint's 3x3 sample covariance).
:func:`sample_spread` is the mean of :math:`\mathrm{spread}_j` over the selected joints
(SPEC section 7, "mean per-joint standard deviation"). Under ``"rr"`` the two roots have zero
spread by construction and ``"rrr"`` the right root; they are still averaged in unless masked
out, so values under different alignments are directly comparable only with the same mask.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handflow.constants import NUM_JOINTS
from handflow.metrics.align import align, check_alignment, check_joints

__all__ = ["per_joint_spread", "sample_spread"]


def per_joint_spread(
    samples: Tensor, alignment: str = "global", sample_mask: Tensor | None = None
) -> Tensor:
    """Per-joint RMS 3D deviation of the samples around their mean.

    Args:
        samples: ``(..., S, 42, 3)`` mm (e.g. ``(B, S, 42, 3)``).
        alignment: ``"rr" | "rrr" | "global"`` applied to each sample first.
        sample_mask: optional ``(..., S)`` bool, False for padding samples (ignored).

    Returns:
        ``(..., 42)`` mm; ``NaN`` where no sample is valid.
    """
    check_alignment(alignment)
    if not isinstance(samples, Tensor) or samples.ndim < 3:
        raise ValueError(f"samples must have shape (..., S, {NUM_JOINTS}, 3)")
    if sample_mask is None:
        sample_mask = torch.ones(samples.shape[:-2], dtype=torch.bool, device=samples.device)
    elif sample_mask.dtype != torch.bool or sample_mask.shape != samples.shape[:-2]:
        raise ValueError(
            f"sample_mask must be a bool tensor of shape {tuple(samples.shape[:-2])}"
        )
    check_joints(samples, "samples", finite_where=sample_mask[..., None])
    x = align(samples, alignment)
    w = sample_mask[..., None, None].to(x.dtype)  # (..., S, 1, 1)
    x = torch.where(sample_mask[..., None, None], x, x.new_zeros(()))
    n = w.sum(dim=-3)  # (..., 1, 1)
    mean = x.sum(dim=-3, keepdim=True) / n.clamp_min(1)[..., None, :, :]
    dev2 = (((x - mean) ** 2).sum(-1, keepdim=True) * w).sum(dim=-3)  # (..., 42, 1)
    spread = (dev2 / n.clamp_min(1)).sqrt().squeeze(-1)
    return spread.masked_fill(n.squeeze(-1) == 0, float("nan"))


def sample_spread(
    samples: Tensor,
    alignment: str = "global",
    mask: Tensor | None = None,
    sample_mask: Tensor | None = None,
) -> Tensor:
    """Mean per-joint sample spread (mm), the "mean joint std" of the paper's Table 3.

    Args:
        samples: ``(..., S, 42, 3)`` mm.
        alignment: ``"rr" | "rrr" | "global"``.
        mask: optional ``(..., 42)`` or ``(42,)`` bool, the joints to average over.
        sample_mask: optional ``(..., S)`` bool, False for padding samples.

    Returns:
        ``(...)`` mm; ``NaN`` where the joint mask is empty or no sample is valid.
    """
    spread = per_joint_spread(samples, alignment, sample_mask)
    if mask is None:
        return spread.mean(-1)
    if mask.dtype != torch.bool or mask.shape[-1] != NUM_JOINTS:
        raise ValueError(f"mask must be a bool tensor of shape (..., {NUM_JOINTS})")
    mask = mask.expand_as(spread)
    total = torch.where(mask, spread, spread.new_zeros(())).sum(-1)
    count = mask.sum(-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.nan)
