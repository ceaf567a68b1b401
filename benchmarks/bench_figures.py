"""Prediction figures: drawing 100 sampled skeletons as one line collection per panel against
one matplotlib line per bone (the previous code), side by side (issue #16: lifting and
prediction write a three-panel figure per image).

    .venv/bin/python benchmarks/bench_figures.py [--samples 100] [--repeats 5]

Both sides draw the same three-panel figure of ``plot_skeleton_set`` (image panel + two novel
views, S faint skeletons and one bold one) and save it as PNG; blocks alternate, medians printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import handflow.viz.predictions as P


def _per_bone(ax, pts, alpha: float = 1.0, lw: float = 1.5) -> None:
    for s in np.asarray(pts):
        for j, p in enumerate(P.IH42_PARENTS):
            if p >= 0:
                col = P.HAND_COLORS[0 if j < P.NUM_HAND_JOINTS else 1]
                ax.plot(s[[j, p], 0], s[[j, p], 1], color=col, alpha=alpha, lw=lw, solid_capstyle="round")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    bold = torch.randn(42, 3, generator=g, dtype=torch.float64) * 30 + torch.tensor([0.0, 0.0, 500.0])
    drawn = bold + torch.randn(a.samples, 42, 3, generator=g, dtype=torch.float64) * 10
    K = torch.tensor([[300.0, 0, 64], [0, 300.0, 64], [0, 0, 1]], dtype=torch.float64)
    image = np.full((128, 128, 3), 128, np.uint8)
    spread = np.linspace(0, 20, 42)
    new = P.draw_skeletons
    times: dict[str, list[float]] = {"one line per bone": [], "one collection": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            for name in (list(times) if r % 2 == 0 else list(times)[::-1]):
                P.draw_skeletons = _per_bone if name == "one line per bone" else new
                t = time.perf_counter()
                P.plot_skeleton_set(image, K, drawn, bold, spread, Path(tmp) / f"{r}.png", "camera", "{name}", "spread",
                                    "bench")
                times[name].append(time.perf_counter() - t)
    P.draw_skeletons = new
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:18s} {v:6.2f} s per figure ({a.samples} samples)")
    print(f"ratio: {med['one line per bone'] / med['one collection']:.1f}x faster")


if __name__ == "__main__":
    main()
