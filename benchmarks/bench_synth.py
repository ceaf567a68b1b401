"""Synthetic-data throughput: images/s at 128 px and the per-stage breakdown.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_synth.py [--frames 40] [--cameras 8]
[--size 128] [--workers 1]``

Stages (seconds summed over the run, as measured inside ``frames.process_sequence``):
sampling (scene sampling with contact search and collision rejection, cameras, subject),
skinning (posing both hands for the sequence + NeuralAnnot conversion), rendering (camera
transform, view check, rasterization, visibility), encoding (JPEG), writing (atomic image
write + records). Goal: >= 50 images/s on 2 CPU cores with EGL (issue 4).

Uses the real renderer (``handflow.render``, EGL when available) if importable; otherwise it
falls back to the test suite's vertex-splat stand-in and says so: those numbers are then not
the renderer's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from handflow.data.synth import generate as gen

    try:
        backends = gen.default_backends("openhand")
        kind = "real handflow.render / collision / neuralannot"
    except ImportError as e:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from test_synth import _real_backends_or_standin

        backends = _real_backends_or_standin()
        kind = f"STAND-IN pieces where missing ({e})"
    cfg = gen.SynthConfig(frames=args.frames, cameras=args.cameras, image_size=args.size, seed=0)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        res = gen.generate(Path(d), cfg, backends=None if args.workers > 1 else backends,
                           workers=args.workers, progress=False)
        wall = time.perf_counter() - t
    n = res["summary"]["images"]
    print(f"backends: {kind}")
    print(f"{n} images ({args.frames} frames x {args.cameras} cameras, {args.size} px, workers {args.workers}) "
          f"in {wall:.2f} s: {n / wall:.1f} images/s (goal 50)")
    tm = res["timers"]
    tot = sum(tm.values()) or 1.0
    for k in ("sampling", "skinning", "rendering", "encoding", "writing"):
        v = tm.get(k, 0.0)
        print(f"  {k:<10} {v:7.2f} s  {100 * v / tot:5.1f} %  {1000 * v / max(n, 1):7.2f} ms/image")
    print(f"  (merge and other: {wall - tot:.2f} s)")


if __name__ == "__main__":
    main()
