"""Per-image metrics of one batch for ``handflow evaluate`` (float64, mm).

Shapes: ``B`` images, ``S`` samples per image, ``N`` plausible annotations per image (the
ground truth first, then the MultiHands annotations, padded), 42 two-hand joints.

Joint masks (``joint_valid``) apply everywhere a ground truth is compared:

* RR and Global use the valid joints;
* RRR uses the valid joints only when the **right root is valid** (both hands are expressed
  relative to it); images without a valid right root have no RRR value (NaN);
* the MMD compares flattened aligned joints restricted to the alignment's valid joints (the
  masked joints are set to zero in every sample and annotation after alignment, so they add
  nothing to any distance);
* the sample spread averages the per-joint spread over the valid joints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from handflow.constants import NUM_JOINTS, RIGHT_ROOT
from handflow.metrics import align, mmd, mpjpe, mpjpe_min_max, mpjpe_occluded, sample_spread

__all__ = ["ALIGNS", "COLUMNS", "MH_COLUMNS", "GT_MISMATCH_MM", "alignment_mask", "image_metrics",
           "gather_annotations"]

ALIGNS = ("rr", "rrr", "global")
#: per-image columns that need MultiHands annotations (NaN without)
MH_COLUMNS = (*(f"min_{a}" for a in ALIGNS), *(f"max_{a}" for a in ALIGNS), *(f"mmd_{a}" for a in ALIGNS))
#: per-image float columns of ``per_image.npz``
COLUMNS = (
    "spread_mm",
    *(f"mpjpe_z0_{a}" for a in ALIGNS),
    "mpjpe_z0_rr_occ",
    *(f"mpjpe_best_{a}" for a in ALIGNS),
    *MH_COLUMNS,
)
#: a MultiHands record whose stored ground-truth joints are further than this (mean over valid
#: joints, mm) from the dataset's is taken for annotations of other data. The stored ground
#: truth is the hand model's fit, so on real data it differs by the fit residual (a few mm).
GT_MISMATCH_MM = 30.0


def alignment_mask(valid: Tensor, alignment: str) -> Tensor:
    """Joints that count under ``alignment``: (..., 42) bool from ``valid`` (..., 42).

    RRR needs the right root: without it every joint is masked out (the metric is NaN).
    """
    if alignment == "rrr":
        return valid & valid[..., RIGHT_ROOT : RIGHT_ROOT + 1]
    return valid


def _masked_aligned(x: Tensor, mask: Tensor, alignment: str) -> Tensor:
    """Align ``x`` (B, K, 42, 3) and zero the joints outside ``mask`` (B, 42)."""
    return torch.where(mask[:, None, :, None], align(x, alignment), x.new_zeros(()))


def _nan_min(x: Tensor, dim: int) -> Tensor:
    """Min over ``dim`` ignoring NaN; NaN where every entry is NaN."""
    return torch.where(x.isnan(), torch.inf, x).amin(dim).nan_to_num(nan=torch.nan, posinf=torch.nan)


def image_metrics(
    z0: Tensor,
    samples: Tensor,
    gt: Tensor,
    valid: Tensor,
    visible: Tensor,
    annotations: Tensor | None = None,
    ann_valid: Tensor | None = None,
) -> dict[str, Tensor]:
    """Every per-image metric of one batch, in float64 on the inputs' device.

    Args:
        z0: (B, 42, 3) mm, the z = 0 (deterministic) estimate.
        samples: (B, S, 42, 3) mm, the sampled estimates.
        gt: (B, 42, 3) mm, the ground truth.
        valid: (B, 42) bool, joints with a valid ground truth.
        visible: (B, 42) bool, joints visible in the image (RR* uses the others).
        annotations: optional (B, N, 42, 3) mm plausible annotations (the ground truth among
            them); padding rows may hold anything.
        ann_valid: (B, N) bool, False for padding rows (all True when omitted).

    Returns:
        ``{column: (B,)}`` float64 for every name in :data:`COLUMNS`; NaN where undefined
        (empty mask, no annotation, or no ``annotations`` given).
    """
    z0, samples, gt = z0.double(), samples.double(), gt.double()
    B = z0.shape[0]
    out: dict[str, Tensor] = {"spread_mm": sample_spread(samples, "global", mask=valid)}
    for a in ALIGNS:
        m = alignment_mask(valid, a)
        out[f"mpjpe_z0_{a}"] = mpjpe(z0, gt, a, mask=m)
        out[f"mpjpe_best_{a}"] = _nan_min(mpjpe(samples, gt[:, None], a, mask=m[:, None]), 1)
    out["mpjpe_z0_rr_occ"] = mpjpe_occluded(z0, gt, visible, valid)
    if annotations is None:
        nan = torch.full((B,), torch.nan, dtype=torch.float64, device=z0.device)
        return out | {k: nan for k in MH_COLUMNS}
    ann = annotations.double()
    if ann_valid is None:
        ann_valid = torch.ones(ann.shape[:2], dtype=torch.bool, device=ann.device)
    ann = torch.where(ann_valid[..., None, None], ann, z0[:, None])  # padding: finite filler, masked out
    for a in ALIGNS:
        m = alignment_mask(valid, a)
        out[f"min_{a}"], out[f"max_{a}"] = mpjpe_min_max(z0, ann, a, mask=m, ann_valid=ann_valid)
        # alignment done here so that masked joints can be zeroed; "global" = no further alignment
        d = mmd(_masked_aligned(samples, m, a), _masked_aligned(ann, m, a), "global", ann_mask=ann_valid)
        out[f"mmd_{a}"] = torch.where(m.any(-1), d, torch.nan)
    return out


def gather_annotations(
    records: Mapping[int, Any] | None, image_ids: list[int], gt: Tensor, valid: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The plausible annotations of a batch: the ground truth first, then the MultiHands ones.

    Args:
        records: ``handflow.multihands.load(...)`` (image id -> record) or None.
        image_ids: the B image ids of the batch.
        gt: (B, 42, 3) mm dataset ground truth; valid: (B, 42) bool.

    Returns:
        ``(annotations (B, 1+N, 42, 3) float64, ann_valid (B, 1+N) bool, has (B,) bool)`` on
        the CPU; N is the largest annotation count in the batch; ``has`` is True where the
        image has a MultiHands record.

    Raises:
        ValueError: a record's ground truth is not the dataset's (annotations of other data).
    """
    recs = [records.get(i) if records is not None else None for i in image_ids]
    n = max([0] + [len(r.joints) for r in recs if r is not None])
    B = len(image_ids)
    ann = torch.zeros(B, 1 + n, NUM_JOINTS, 3, dtype=torch.float64)
    ok = torch.zeros(B, 1 + n, dtype=torch.bool)
    ann[:, 0], ok[:, 0] = gt.detach().double().cpu(), True
    has = torch.zeros(B, dtype=torch.bool)
    for b, r in enumerate(recs):
        if r is None:
            continue
        vb = valid[b].cpu()
        diff = float(np.linalg.norm(np.asarray(r.gt_joints, np.float64) - ann[b, 0].numpy(), axis=-1)[vb.numpy()].mean())
        if not diff <= GT_MISMATCH_MM:
            raise ValueError(
                f"MultiHands record of image {image_ids[b]}: its ground truth is {diff:.1f} mm from the dataset's "
                f"(> {GT_MISMATCH_MM} mm): the annotations were made from other data; pass the --multihands "
                "folder generated from this --data")
        k = len(r.joints)
        ann[b, 1 : 1 + k] = torch.as_tensor(np.asarray(r.joints), dtype=torch.float64)
        ok[b, 1 : 1 + k] = True
        has[b] = True
    return ann, ok, has
