"""Aggregates of ``handflow evaluate``: ``summary.json``, ``summary.csv`` and ``summary.md``."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from handflow.atomic import write_text as atomic_text  # the old name, still imported by other modules
from handflow.evaluation.per_image import ALIGNS

__all__ = ["column_stats", "summary_markdown", "write_summary", "atomic_text"]


def column_stats(values: np.ndarray) -> dict[str, float | int]:
    """Mean, standard deviation (ddof 1), standard error and count of the finite entries of
    ``values`` (M,); NaN statistics and count 0 when there is none."""
    f = np.asarray(values, dtype=np.float64)
    f = f[np.isfinite(f)]
    if f.size == 0:
        return {"mean": math.nan, "std": math.nan, "sem": math.nan, "count": 0}
    sd = float(f.std(ddof=1)) if f.size > 1 else 0.0
    return {"mean": float(f.mean()), "std": sd, "sem": sd / math.sqrt(f.size), "count": int(f.size)}


def _fmt(m: dict[str, Any], key: str, digits: int = 1) -> str:
    s = m[key]
    return "–" if not s["count"] else f"{s['mean']:.{digits}f} ± {s['sem']:.{digits}f}"


def summary_markdown(summary: dict[str, Any]) -> str:
    """Table-1 (min/max MPJPE over the plausible annotations) and Table-2 (MMD) style
    Markdown of one evaluation, plus the single-annotation MPJPE and the sample spread."""
    m = summary["metrics"]
    head = [
        f"# Evaluation of `{summary['checkpoint']}` ({summary['model_kind']})",
        "",
        f"{summary['num_images']} images of `{summary['data']}` ({summary['split']}), {summary['samples']} samples "
        f"each (seed {summary['seed']}); {summary['num_images_multihands']} with MultiHands annotations "
        "(the ground truth counted as one of them). Mean ± standard error over images.",
        "",
    ]
    t1 = ["## Single prediction (z = 0) against one and against all plausible annotations (Table 1)", "",
          "| alignment | MPJPE vs GT (mm) | min over annotations (mm) | max over annotations (mm) | max − min (mm) |",
          "|---|---|---|---|---|"]
    for a in ALIGNS:
        lo, hi = m[f"min_{a}"], m[f"max_{a}"]
        gap = f"{hi['mean'] - lo['mean']:.1f}" if lo["count"] and hi["count"] else "–"
        t1.append(f"| {a.upper()} | {_fmt(m, f'mpjpe_z0_{a}')} | {_fmt(m, f'min_{a}')} | {_fmt(m, f'max_{a}')} | {gap} |")
    t1 += ["", f"RR* (occluded joints) of the z = 0 estimate: {_fmt(m, 'mpjpe_z0_rr_occ')} mm "
           f"({m['mpjpe_z0_rr_occ']['count']} images with an occluded joint).", ""]
    t2 = ["## Distribution (Table 2: MMD, lower is better)", "",
          "| alignment | MMD samples vs annotations | best of N vs GT (mm) |", "|---|---|---|"]
    for a in ALIGNS:
        t2.append(f"| {a.upper()} | {_fmt(m, f'mmd_{a}', 3)} | {_fmt(m, f'mpjpe_best_{a}')} |")
    t2 += ["", f"Sample spread (mean per-joint RMS deviation of the samples): {_fmt(m, 'spread_mm')} mm.", ""]
    return "\n".join(head + t1 + t2)


def summary_csv(summary: dict[str, Any]) -> str:
    """One row per metric: ``metric,mean,std,sem,count``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["metric", "mean", "std", "sem", "count"])
    for k, s in summary["metrics"].items():
        w.writerow([k, s["mean"], s["std"], s["sem"], s["count"]])
    return buf.getvalue()


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json``, ``summary.csv`` and ``summary.md`` into ``out`` (atomically)."""
    atomic_text(out / "summary.json", json.dumps(summary, indent=1))
    atomic_text(out / "summary.csv", summary_csv(summary))
    atomic_text(out / "summary.md", summary_markdown(summary))
