"""Cost of N samples vs one deterministic pass, batch 1 (the backbone runs once per image).

    OMP_NUM_THREADS=1 python benchmarks/bench_predict.py [--config cpu|paper] [--device cpu|cuda] \
        [--set model.flow_hidden=256 ...]

Prints the time of (a) backbone + the z = 0 estimate and (b) backbone + z = 0 + N samples,
measured side by side, and their ratio (goal: N = 100 costs <= 1.2x one pass).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from handflow.config import load_config
from handflow.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--samples", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. model.flow_hidden=256 model.flow_blocks=1")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config, a.set)
    model = build_model(cfg).to(a.device).eval()
    y = torch.randn(64, 218, device=a.device)
    model.normalizer.fit(y)
    model.initialize(torch.zeros(64, model.backbone.dim, device=a.device), model.normalizer.normalize(y))
    S = cfg.data.image_size
    img = torch.rand(1, 3, S, S, device=a.device)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    half = a.device.startswith("cuda") and "16" in cfg.train.precision
    ctx = torch.autocast("cuda", dtype=torch.float16) if half else torch.autocast("cpu", enabled=False)
    fns = {0: lambda: model.z0(model.features(img))}  # one deterministic pass
    for n in a.samples:
        fns[n] = functools.partial(model.predict, img, n)
    times: dict[int, list[float]] = {k: [] for k in fns}
    with torch.no_grad(), ctx:
        for fn in fns.values():
            fn()
        for _ in range(a.reps):  # interleaved, so background load hits every variant alike
            for k, fn in fns.items():
                sync()
                t = time.perf_counter()
                fn()
                sync()
                times[k].append(time.perf_counter() - t)
    base = statistics.median(times[0])
    m = cfg.model
    print(f"{m.backbone} {S}px, flow {m.flow_steps} steps x {m.flow_blocks} blocks x {m.flow_hidden} wide, on {a.device} "
          f"({a.threads} thread(s)): one deterministic pass {base * 1e3:.1f} ms")
    print(f"{'samples':>8} {'ms':>9} {'ratio':>7}")
    for n in a.samples:
        t = statistics.median(times[n])
        print(f"{n:>8} {t * 1e3:>9.1f} {t / base:>7.2f}")


if __name__ == "__main__":
    main()
