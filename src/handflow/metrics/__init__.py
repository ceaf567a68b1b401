r"""Evaluation metrics (SPEC section 7): MPJPE (RR, RRR, Global, RR*), min/max MPJPE over
plausible annotations, MMD between samples and annotations, and sample spread.

All inputs are two-hand InterHand2.6M joints ``(..., 42, 3)`` in millimetres (right 0-20,
left 21-41). Definitions, bandwidths and precision are documented in ``docs/metrics.md``.

>>> import torch
>>> from handflow.metrics import mpjpe, mmd, sample_spread
>>> g = torch.Generator().manual_seed(0)
>>> gt = torch.randn(2, 42, 3, generator=g) * 50                       # (B, 42, 3) mm
>>> pred = gt + 10.0                                                   # every joint 10 mm off in x, y and z
>>> mpjpe(pred, gt, "global"), mpjpe(pred, gt, "rr").abs().max() < 1e-4   # (B,) mm; root-relative: no error
(tensor([17.3205, 17.3205]), tensor(True))
>>> samples = gt[:, None] + torch.randn(2, 8, 42, 3, generator=g) * 5        # (B, S, 42, 3)
>>> annotations = gt[:, None] + torch.randn(2, 4, 42, 3, generator=g) * 5    # (B, N, 42, 3)
>>> mmd(samples, annotations, "global").shape    # (B,) in [0, sqrt 2]
torch.Size([2])
>>> sample_spread(samples).shape                 # (B,) mm
torch.Size([2])
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
