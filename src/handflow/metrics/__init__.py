r"""Evaluation metrics (SPEC section 7): MPJPE (RR, RRR, Global, RR*), min/max MPJPE over
plausible annotations, MMD between samples and annotations, and sample spread.

All inputs are two-hand InterHand2.6M joints ``(..., 42, 3)`` in millimetres (right 0-20,
left 21-41). Definitions, bandwidths and precision are documented in ``docs/metrics.md``.

>>> from handflow.metrics import mpjpe, mmd, sample_spread
>>> mpjpe(pred, gt, "rr")                        # (B,) mm
>>> mmd(samples, annotations, "global")          # (B,) in [0, sqrt 2]
>>> sample_spread(samples)                       # (B,) mm
"""

from handflow.metrics.align import ALIGNMENTS, Alignment, align, check_alignment
from handflow.metrics.mmd import DEFAULT_BANDWIDTHS, mmd, mmd_per_bandwidth
from handflow.metrics.mpjpe import joint_errors, mpjpe, mpjpe_min_max, mpjpe_occluded, nanmean
from handflow.metrics.spread import per_joint_spread, sample_spread

__all__ = [
    "ALIGNMENTS",
    "Alignment",
    "DEFAULT_BANDWIDTHS",
    "align",
    "check_alignment",
    "joint_errors",
    "mmd",
    "mmd_per_bandwidth",
    "mpjpe",
    "mpjpe_min_max",
    "mpjpe_occluded",
    "nanmean",
    "per_joint_spread",
    "sample_spread",
]
