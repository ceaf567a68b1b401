"""View selection (paper Sec. 5.8): rank the views of a frame by sample spread.

For a frame seen by several cameras, the model's sample spread on each view is its own
estimate of how ambiguous that view is. Choosing the view of lowest spread should give a
lower error than choosing the highest-spread view or a random one. Regret of a choice =
MPJPE of the chosen view − the lowest MPJPE among the frame's views (0 for an oracle).

Works on the per-image table of :func:`handflow.evaluation.evaluate` (``per_image.npz``), so
no network runs twice. Frames are ``(capture, seq, frame)``; views with a NaN spread or MPJPE
are dropped, and frames left with fewer than ``min_views`` views are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from handflow.extras import pyplot

__all__ = ["view_selection", "plot_view_selection", "STRATEGIES", "REQUIRED"]

ALIGNS = ("rr", "rrr", "global")
STRATEGIES = ("best_ranked", "random", "worst_ranked")
REQUIRED = ("capture", "seq", "frame", "spread_mm")
#: Monte-Carlo draws per frame of the random-choice strategy
RANDOM_DRAWS = 100


def _rank(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for v in np.unique(x):
        tie = x == v
        r[tie] = r[tie].mean()
    return r


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3:
        return float("nan")
    rx, ry = _rank(x), _rank(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _stats(v: np.ndarray) -> dict[str, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": float("nan"), "sem": float("nan"), "median": float("nan"), "count": 0}
    sem = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "sem": sem, "median": float(np.median(v)), "count": int(v.size)}


def view_selection(per_image: dict[str, np.ndarray], alignment: str = "all", min_views: int = 2,
                   seed: int = 0) -> dict[str, Any]:
    """Regret of choosing a frame's view by sample spread.

    Args:
        per_image: columns of ``per_image.npz`` (length M): ``capture``, ``seq``, ``frame``,
            ``spread_mm`` and ``mpjpe_z0_<alignment>``.
        alignment: ``"rr" | "rrr" | "global"`` or ``"all"`` (every one present).
        min_views: frames with fewer usable views are skipped.
        seed: seed of the Monte-Carlo random choice.

    Returns:
        ``{"frames": F, "views_per_frame": mean, "alignments": {a: {"summary": {strategy: stats},
        "spearman": mean within-frame rank correlation of spread and MPJPE, "best_beats_worst":
        fraction of frames, "per_frame": {strategy: (F,) regret}, "spread": [per-frame arrays],
        "mpjpe": [...]}}}``. Strategy ``random`` is the Monte-Carlo mean regret of a uniformly
        chosen view; ``average`` is its exact expectation (mean over views).
    """
    missing = [k for k in REQUIRED if k not in per_image]
    if missing:
        raise KeyError(f"per-image table lacks {missing}: pass the per_image.npz of `handflow evaluate`")
    aligns = [a for a in ALIGNS if f"mpjpe_z0_{a}" in per_image] if alignment == "all" else [alignment]
    if not aligns or any(f"mpjpe_z0_{a}" not in per_image for a in aligns):
        raise KeyError(f"per-image table lacks mpjpe_z0_{alignment}")
    keys = list(zip(per_image["capture"].tolist(), per_image["seq"].tolist(), per_image["frame"].tolist()))
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    rng = np.random.default_rng(seed)
    spread = per_image["spread_mm"].astype(np.float64)
    result: dict[str, Any] = {"alignments": {}}
    for a in aligns:
        err = per_image[f"mpjpe_z0_{a}"].astype(np.float64)
        per_frame: dict[str, list[float]] = {s: [] for s in (*STRATEGIES, "average")}
        rho, beats, sp_list, er_list, nviews = [], [], [], [], []
        for idx in groups.values():
            idx = np.asarray(idx)
            ok = np.isfinite(spread[idx]) & np.isfinite(err[idx])
            idx = idx[ok]
            if len(idx) < min_views:
                continue
            s, e = spread[idx], err[idx]
            best = e.min()
            per_frame["best_ranked"].append(e[np.argmin(s)] - best)
            per_frame["worst_ranked"].append(e[np.argmax(s)] - best)
            per_frame["average"].append(e.mean() - best)
            per_frame["random"].append(e[rng.integers(0, len(e), RANDOM_DRAWS)].mean() - best)
            rho.append(_spearman(s, e))
            beats.append(float(e[np.argmin(s)] < e[np.argmax(s)]))
            sp_list.append(s)
            er_list.append(e)
            nviews.append(len(idx))
        pf = {k: np.asarray(v) for k, v in per_frame.items()}
        r = np.asarray(rho)
        result["alignments"][a] = {
            "summary": {k: _stats(v) for k, v in pf.items()},
            "spearman": float(np.nanmean(r)) if np.isfinite(r).any() else float("nan"),
            "best_beats_worst": float(np.mean(beats)) if beats else float("nan"),
            "per_frame": pf, "spread": sp_list, "mpjpe": er_list,
        }
        result["frames"] = len(nviews)
        result["views_per_frame"] = float(np.mean(nviews)) if nviews else float("nan")
    return result


def plot_view_selection(result: dict[str, Any], path: str | Path, alignment: str | None = None) -> Path:
    """(a) spread vs MPJPE across the views of each frame, both centred on the frame's mean;
    (b) mean regret per strategy with standard errors."""
    plt = pyplot("view-selection figures")

    a = alignment or next(iter(result["alignments"]))
    r = result["alignments"][a]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for s, e in zip(r["spread"], r["mpjpe"]):
        order = np.argsort(s)
        ax.plot(s[order] - s.mean(), e[order] - e.mean(), "-", color="#2e86ab", alpha=0.15, lw=0.8)
        ax.scatter(s - s.mean(), e - e.mean(), s=5, color="#2e86ab", alpha=0.4, lw=0)
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("sample spread − frame mean (mm)")
    ax.set_ylabel(f"MPJPE {a.upper()} − frame mean (mm)")
    ax.set_title(f"{result['frames']} frames, {result['views_per_frame']:.1f} views each; "
                 f"mean Spearman ρ {r['spearman']:.2f}", fontsize=9)
    names = ("best_ranked", "average", "worst_ranked")
    m = [r["summary"][k]["mean"] for k in names]
    se = [r["summary"][k]["sem"] for k in names]
    ax2.bar(range(3), m, yerr=se, capsize=3, color=("#3b8f3b", "#999999", "#c0392b"))
    ax2.set_xticks(range(3), ["best-ranked\n(lowest spread)", "random view\n(expected)", "worst-ranked\n(highest spread)"])
    ax2.set_ylabel(f"regret, MPJPE {a.upper()} (mm)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
