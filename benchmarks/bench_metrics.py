"""Benchmark: chunked MMD for B images x S samples x N annotations on CPU.

    .venv/bin/python benchmarks/bench_metrics.py            # B=10000, S=N=100, 2 threads
    .venv/bin/python benchmarks/bench_metrics.py --images 1000 --threads 1

Each configuration runs in a fresh subprocess, which prints wall time, images/s and the peak
extra resident memory of the call (inputs excluded; Linux ``VmHWM`` reset before the call).
Configurations: chunked float64 (default) and float32 on all B images, then a naive
unchunked broadcast implementation against the chunked one on a smaller batch, as ratios.
Goal (issue 7): <= 60 s for 10,000 x 100 x 100 on 2 cores, memory bounded by chunking.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from handflow.constants import NUM_JOINTS
from handflow.metrics import DEFAULT_BANDWIDTHS, align, mmd


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) in MiB, from /proc (Linux)."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, val = line.split(":")
                vals[key] = int(val.split()[0]) / 1024
    return vals["VmRSS"], vals["VmHWM"]


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def make_data(B: int, S: int, N: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-frame-like joints: a per-image centre, samples/annotations scattered around it."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(B, 1, NUM_JOINTS, 3, generator=g) * 40 + torch.tensor([0.0, 0.0, 600.0])
    x = centre + torch.randn(B, S, NUM_JOINTS, 3, generator=g) * 10
    y = centre + torch.randn(B, N, NUM_JOINTS, 3, generator=g) * 10
    return x, y


def naive_mmd(x: torch.Tensor, y: torch.Tensor, alignment: str) -> torch.Tensor:
    """Unchunked broadcast differences (B, S, N, 126) in float64: the obvious vectorization."""
    x = align(x, alignment).flatten(2).double()
    y = align(y, alignment).flatten(2).double()
    dxx = ((x[:, :, None] - x[:, None]) ** 2).sum(-1)
    dyy = ((y[:, :, None] - y[:, None]) ** 2).sum(-1)
    dxy = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    vals = []
    for s in DEFAULT_BANDWIDTHS:
        g = -0.5 / s**2
        m2 = (
            (dxx * g).exp().mean((1, 2))
            + (dyy * g).exp().mean((1, 2))
            - 2 * (dxy * g).exp().mean((1, 2))
        )
        vals.append(m2.clamp_min(0).sqrt())
    return torch.stack(vals, 1).mean(1)


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    x, y = make_data(args.images, args.samples, args.annotations)
    base, _ = rss_mib()
    reset_peak()
    t0 = time.perf_counter()
    if args.worker == "naive":
        out = naive_mmd(x, y, args.alignment)
    else:
        dtype = {"float64": torch.float64, "float32": torch.float32}[args.worker]
        out = mmd(x, y, args.alignment, dtype=dtype, chunk=args.chunk)
    dt = time.perf_counter() - t0
    _, peak = rss_mib()
    print(json.dumps({"s": dt, "mib": peak - base, "mean": out.mean().item(),
                      "head": out[:8].tolist()}))


def run(args: argparse.Namespace, mode: str, images: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--images", str(images),
           "--samples", str(args.samples), "--annotations", str(args.annotations),
           "--threads", str(args.threads), "--alignment", args.alignment,
           "--chunk", str(args.chunk)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description="chunked MMD benchmark")
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--annotations", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--naive-images", type=int, default=50)
    ap.add_argument("--alignment", default="global")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    B, S, N = args.images, args.samples, args.annotations
    print(f"MMD B={B} S={S} N={N} alignment={args.alignment} threads={args.threads} "
          f"chunk={args.chunk} bandwidths={DEFAULT_BANDWIDTHS} "
          f"inputs {2 * B * (S + N) // 2 * NUM_JOINTS * 3 * 4 / 2**20:.0f} MiB float32")
    for mode in ("float64", "float32"):
        r = run(args, mode, B)
        print(f"  chunked {mode}: {r['s']:7.2f} s  {B / r['s']:7.0f} img/s  "
              f"peak extra RSS {r['mib']:6.1f} MiB  mean MMD {r['mean']:.4f}")
    b = args.naive_images
    naive, fast = run(args, "naive", b), run(args, "float64", b)
    diff = max(abs(u - v) for u, v in zip(naive["head"], fast["head"]))
    print(f"  B={b}: naive unchunked {naive['s']:.3f} s, {naive['mib']:.0f} MiB | chunked "
          f"{fast['s']:.3f} s, {fast['mib']:.0f} MiB | chunked is x{naive['s'] / fast['s']:.1f} "
          f"faster, naive uses x{naive['mib'] / max(fast['mib'], 1.0):.0f} the memory | "
          f"max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
