"""Figures and small tables of ``handflow report`` (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from handflow.data import InterHandDataset
from handflow.evaluation.viewselect import plot_view_selection
from handflow.extras import pyplot
from handflow.models import decode_joints
from handflow.viz.predictions import plot_prediction

__all__ = ["mmd_bars", "spread_vs_error", "view_selection_table", "view_selection_figure", "qualitative"]

ALIGNS = ("global", "rrr", "rr")
#: number of equal-count bins of the binned mean in the spread-vs-error figure
SPREAD_BINS = 10


def _plt() -> Any:
    return pyplot("report figures")


def mmd_bars(res: Any, names: list[str], path: Path, labels: dict[str, str]) -> Path:
    """Grouped bars: MMD per alignment for each run (mean over seeds, error bar = seed range),
    and the sample spread beside it."""
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 1.3]})
    w = 0.8 / max(len(names), 1)
    for i, n in enumerate(names):
        vals = [res.metric(n, f"mmd_{a}") for a in ALIGNS]
        m = [np.nanmean(v) for v in vals]
        err = np.array([[mm - np.nanmin(v), np.nanmax(v) - mm] for mm, v in zip(m, vals)]).T
        ax.bar(np.arange(3) + (i - (len(names) - 1) / 2) * w, m, w, yerr=err, capsize=2, label=labels[n])
        s = res.metric(n, "spread_mm")
        ax2.bar(i, np.nanmean(s), yerr=[[np.nanmean(s) - np.nanmin(s)], [np.nanmax(s) - np.nanmean(s)]], capsize=2)
    ax.set_xticks(range(3), [a.upper() for a in ALIGNS])
    ax.set_ylabel("MMD (lower is better)")
    ax.legend(fontsize=8, ncol=2)
    ax2.set_xticks(range(len(names)), [labels[n] for n in names], rotation=30, ha="right", fontsize=8)
    ax2.set_ylabel("sample spread (mm)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def spread_vs_error(res: Any, name: str, path: Path, alignment: str = "global") -> Path:
    """Per-image sample spread vs the z = 0 MPJPE (first seed), with the binned mean."""
    plt = _plt()
    seed = min(res.per_image[name])
    d = res.per_image[name][seed]
    x, y = d["spread_mm"].astype(float), d[f"mpjpe_z0_{alignment}"].astype(float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    fig, ax = plt.subplots(figsize=(5.2, 4))
    ax.scatter(x, y, s=4, alpha=0.3, color="#2e86ab", lw=0)
    if x.size >= SPREAD_BINS:
        edges = np.quantile(x, np.linspace(0, 1, SPREAD_BINS + 1))
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, SPREAD_BINS - 1)
        cx = [x[idx == b].mean() for b in range(SPREAD_BINS) if (idx == b).any()]
        cy = [y[idx == b].mean() for b in range(SPREAD_BINS) if (idx == b).any()]
        ax.plot(cx, cy, "o-", color="#e4572e", label="binned mean")
        r = np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1]
        ax.set_title(f"Spearman ρ = {r:.2f} over {x.size} images", fontsize=9)
        ax.legend(fontsize=8)
    ax.set_xlabel("sample spread (mm)")
    ax.set_ylabel(f"MPJPE {alignment.upper()} of the z = 0 estimate (mm)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def view_selection_table(vs: dict[int, dict]) -> str:
    """Markdown table: regret (mm) per strategy and alignment, mean over seeds of the per-seed
    mean over frames (± std over seeds), with the within-frame Spearman correlation."""
    seeds = sorted(vs)
    first = vs[seeds[0]]
    head = ["alignment", "best-ranked view", "random view (expected)", "worst-ranked view", "best < worst (frames)",
            "Spearman ρ (spread, MPJPE)"]

    def col(a: str, key: str, field: str = "mean") -> str:
        v = np.array([vs[s]["alignments"][a]["summary"][key][field] for s in seeds])
        return f"{v.mean():.1f}" + (f" ± {v.std(ddof=1):.1f}" if len(v) > 1 else "")

    rows = []
    for a in first["alignments"]:
        frac = np.mean([vs[s]["alignments"][a]["best_beats_worst"] for s in seeds])
        rho = np.mean([vs[s]["alignments"][a]["spearman"] for s in seeds])
        rows.append([a.upper(), col(a, "best_ranked"), col(a, "average"), col(a, "worst_ranked"), f"{frac:.0%}", f"{rho:.2f}"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + (f"\n\n{first['frames']} test frames with {first['views_per_frame']:.1f} views each; "
                                f"seeds {', '.join(map(str, seeds))}.")


def view_selection_figure(vs: dict[int, dict], path: Path, alignment: str = "global") -> Path:
    """The first seed's spread-vs-MPJPE and regret figure (:func:`plot_view_selection`)."""
    return plot_view_selection(vs[min(vs)], path, alignment)


def qualitative(checkpoint: Path, data: Path, per_image: dict[str, np.ndarray], out_dir: Path, samples: int = 100,
                seed: int = 0, prefix: str = "results_") -> list[Path]:
    """Prediction figures (input with projected z = 0 estimate and samples, two novel views)
    for the test images of lowest, median and highest sample spread in ``per_image``
    (evaluate's rows are in dataset order). Returns the written PNG paths."""
    # lazy: handflow.training needs Lightning (the [train] extra); handflow.evaluation imports without it
    from handflow.training import load_checkpoint
    module, cfg = load_checkpoint(checkpoint)
    size = cfg.data.image_size
    ds = InterHandDataset(data, "test", size, hand_model=cfg.data.hand_model, augment=False)
    spread = np.where(np.isfinite(per_image["spread_mm"]), per_image["spread_mm"], np.nan)
    order = np.argsort(np.nan_to_num(spread, nan=-1.0))
    finite = order[np.isfinite(spread[order])]
    picks = {"confident": finite[0], "median": finite[len(finite) // 2], "ambiguous": finite[-1]}
    paths = []
    g = torch.Generator().manual_seed(seed)
    for name, i in picks.items():
        it = ds[int(i)]
        if int(it["meta"]["image_id"]) != int(per_image["image_id"][i]):
            raise ValueError(f"evaluation rows are not in dataset order (row {i}: image "
                             f"{int(per_image['image_id'][i])}, dataset {int(it['meta']['image_id'])})")
        with torch.no_grad():  # the image's backbone features, or its keypoint evidence (model.backbone=keypoints)
            res = module.model.predict_features(module.batch_features(torch.utils.data.default_collate([it]), seed), samples, g)
            K = it["K"][None]
            z0 = decode_joints(res["z0"], K, size, module.hand_model)[0]
            smp = decode_joints(res["samples"], K, size, module.hand_model)[0]
        path = out_dir / f"{prefix}samples_{name}.png"
        plot_prediction(it["image"], it["K"], z0, smp, path, gt=it["joints_cam"],
                        title=f"{name}: test image {int(it['meta']['image_id'])}, sample spread {spread[i]:.1f} mm, "
                              f"z = 0 MPJPE RR {per_image['mpjpe_z0_rr'][i]:.1f} mm")
        paths.append(path)
    return paths
