r"""Diversity diagnostics of MultiHands annotations (``summary.json``; issue 6 §1).

Per image, with its ``n`` annotations ``x_{s,j}`` (camera-frame mm) and their per-joint mean
``\bar x_j``:

* **spread** under each alignment (Global, RRR, RR): :func:`handflow.metrics.sample_spread`,
  the mean over the 42 joints of the RMS 3D deviation from the mean;
* **decomposition** (no alignment), per joint: the deviation ``d = x − \bar x_j`` is split
  into its component along the camera ray through ``\bar x_j`` (depth) and the rest (image
  plane); RMS of each in mm, averaged separately over the joints visible and the joints
  occluded in the ground truth;
* the **2D spread** (pixels) of the visible joints' projections: it is bounded by the
  reprojection threshold ``T`` and shows that the 3D spread is not noise in what the image
  shows.

A plausible annotation set has its spread concentrated on occluded joints and, for visible
joints, along the camera ray, while the visible joints' in-plane spread stays at the
sub-``T`` level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from handflow.data.multihands_io import MultiHandsRecord
from handflow.geometry.camera import project
from handflow.metrics import sample_spread

__all__ = ["image_diagnostics", "summarize", "format_summary", "ALIGNMENT_ORDER"]

ALIGNMENT_ORDER = ("global", "rrr", "rr")
#: images need at least this many annotations for a spread
MIN_ANNOTATIONS = 2
_PERCENTILES = (10, 50, 90)


def _masked_joint_mean(values: Tensor, mask: Tensor) -> float:
    """Mean of (42,) per-joint values over ``mask``; NaN when empty."""
    return float(values[mask].mean()) if bool(mask.any()) else float("nan")


def image_diagnostics(rec: MultiHandsRecord) -> dict[str, float] | None:
    """Diagnostics of one image (None with fewer than two annotations).

    Returns:
        ``spread_<alignment>`` (mm), ``visible_<total|along_ray|in_plane>`` and
        ``occluded_<…>`` (mm, NaN when the class is empty), ``visible_2d_px``.
    """
    n = rec.params.shape[0]
    if n < MIN_ANNOTATIONS:
        return None
    x = torch.as_tensor(rec.joints, dtype=torch.float64)  # (n, 42, 3)
    out: dict[str, float] = {f"spread_{a}": float(sample_spread(x, a)) for a in ALIGNMENT_ORDER}
    mean = x.mean(0)
    ray = mean / mean.norm(dim=-1, keepdim=True)
    d = x - mean
    along = (d * ray).sum(-1)  # (n, 42)
    perp = d - along[..., None] * ray
    rms = lambda v: v.pow(2).mean(0).sqrt()  # noqa: E731
    per_joint = {"total": rms(d.norm(dim=-1)), "along_ray": rms(along), "in_plane": rms(perp.norm(dim=-1))}
    vis = torch.as_tensor(rec.gt_visible, dtype=torch.bool)
    for cls, m in (("visible", vis), ("occluded", ~vis)):
        for k, v in per_joint.items():
            out[f"{cls}_{k}"] = _masked_joint_mean(v, m)
    uv = project(x, torch.as_tensor(rec.K, dtype=torch.float64))
    out["visible_2d_px"] = _masked_joint_mean(rms((uv - uv.mean(0)).norm(dim=-1)), vis)
    return out


def _dist(values: list[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": float("nan"), **{f"p{p}": float("nan") for p in _PERCENTILES}, "count": 0}
    return {"mean": float(v.mean()), **{f"p{p}": float(np.percentile(v, p)) for p in _PERCENTILES},
            "count": int(v.size)}


def summarize(records: Mapping[int, MultiHandsRecord], num: int) -> dict[str, Any]:
    """Split-level summary: distributions over images of every per-image diagnostic.

    Args:
        records: from :func:`handflow.multihands.load`.
        num: N, the requested annotations per image.
    """
    counts_l: list[int] = []
    per: list[dict[str, float]] = []
    for r in records.values():  # one pass: records may be read lazily from disk
        counts_l.append(r.params.shape[0])
        d = image_diagnostics(r)
        if d is not None:
            per.append(d)
    counts = np.asarray(counts_l, dtype=np.int64)
    keys = per[0].keys() if per else ()
    return {
        "num_images": len(records),
        "num_requested": num,
        "fraction_fewer_than_num": float((counts < num).mean()) if counts.size else float("nan"),
        "fraction_without_annotations": float((counts == 0).mean()) if counts.size else float("nan"),
        "annotations_per_image": _dist(counts.astype(float).tolist()),
        "images_with_spread": len(per),
        "per_image": {k: _dist([d[k] for d in per]) for k in keys},
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable table of :func:`summarize` (printed at the end of a run)."""
    lines = [f"{summary['num_images']} images, N = {summary['num_requested']}: "
             f"{summary['fraction_fewer_than_num']:.1%} with fewer than N, "
             f"{summary['fraction_without_annotations']:.1%} with none; "
             f"annotations per image mean {summary['annotations_per_image']['mean']:.1f}"]
    per = summary["per_image"]
    if not per:
        return lines[0]
    lines.append(f"{'per-image statistic (mm unless px)':36s} {'mean':>8s} {'p10':>8s} {'p50':>8s} {'p90':>8s}")
    for k, v in per.items():
        lines.append(f"{k:36s} {v['mean']:8.2f} {v['p10']:8.2f} {v['p50']:8.2f} {v['p90']:8.2f}")
    return "\n".join(lines)
