"""Benchmark of handflow.flow.ConditionalGlow at the HandFlow size (D = 218, hidden 1024, 4 steps).

Rows, per context size (512: ResNet-18 feature, 2048: ResNet-50 feature):

* train step: ``log_prob`` of a batch of 32 + 2 reparameterised samples per image + backward;
* one ``mode`` call for one image (the z = 0 estimate), the unit of the ratios;
* 100 samples for one image, three ways: the context repeated per sample (no caching,
  as ProHMR does), ``sample(context, 100)`` (projection once per image inside the call),
  ``sample(context_cache=..., n=100)`` with the projection precomputed;
* ``mode, W rebuilt``: the mode call with the LU layers' ``W = (L U')[perm]`` rebuilt on every
  call, as before the layers cached it (side by side with ``mode, 1 image``);
* ``train step, N = 16``: the train step with 16 annotations per image in the ``log_prob``
  (MultiHands targets, a (32, 16, 218) input), now and with the LU layers as before issue #16's
  fix (``LU before``: ``W`` formed on every call with gradients, and the triangular solves
  broadcast over the (32, 16) leading axes, whose backward forms one (D, D) gradient per index).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_flow.py [--repeats 7] [--device cpu] [--hidden 1024]

(``--hidden 256``: the ``cpu`` preset's flow, as the keypoint protocol trains it.)

Timings are the median of ``--repeats`` runs after 2 warm-up runs (1 CPU thread).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from handflow.constants import PARAM_DIM
from handflow.flow import ConditionalGlow, LULinear

HIDDEN, STEPS, BATCH, TRAIN_SAMPLES, EVAL_SAMPLES, ANNOTATIONS = 1024, 4, 32, 2, 100, 16
CONTEXTS = {"ResNet-18": 512, "ResNet-50": 2048}
WARMUP = 2


def _forward_before(self: LULinear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x @ self._build()[2].mT, self._logdet(x)


def _inverse_before(self: LULinear, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lower, upper, _ = self._build()
    v = y[..., self.inv_perm]
    a = torch.linalg.solve_triangular(lower.mT, v, upper=True, left=False, unitriangular=True)
    return torch.linalg.solve_triangular(upper.mT, a, upper=False, left=False), -self._logdet(y)


@contextlib.contextmanager
def lu_before() -> Iterator[None]:
    """The LU layers as before issue #16's fix (for the side-by-side rows only)."""
    saved = LULinear.forward, LULinear.inverse
    LULinear.forward, LULinear.inverse = _forward_before, _inverse_before  # type: ignore[method-assign]
    try:
        yield
    finally:
        LULinear.forward, LULinear.inverse = saved  # type: ignore[method-assign]


def timeit(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    times = []
    for i in range(WARMUP + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= WARMUP:
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def bench(context_dim: int, repeats: int, device: torch.device, hidden: int = HIDDEN) -> dict[str, float]:
    torch.manual_seed(0)
    flow = ConditionalGlow(PARAM_DIM, context_dim, steps=STEPS, hidden=hidden).to(device)
    y = torch.randn(BATCH, PARAM_DIM, device=device)
    ctx = torch.randn(BATCH, context_dim, device=device)
    flow.initialize(y, ctx)
    gen = torch.Generator(device=device).manual_seed(0)

    def train_step() -> None:
        flow.zero_grad(set_to_none=True)
        cache = flow.project_context(ctx)
        loss = -flow.log_prob(y, context_cache=cache).mean()
        samples = flow.sample(n=TRAIN_SAMPLES, generator=gen, context_cache=cache)
        (loss + samples.square().mean()).backward()

    ys = torch.randn(BATCH, ANNOTATIONS, PARAM_DIM, device=device)

    def multi_step() -> None:  # MultiHands targets: N annotations per image in the NLL
        flow.zero_grad(set_to_none=True)
        cache = flow.project_context(ctx)
        loss = -flow.log_prob(ys, context_cache=cache).mean()  # (B, N, D): the sample axis
        samples = flow.sample(n=TRAIN_SAMPLES, generator=gen, context_cache=cache)
        (loss + samples.square().mean()).backward()

    c1 = ctx[:1]
    cache1 = flow.project_context(c1)
    z = torch.randn(EVAL_SAMPLES, PARAM_DIM, device=device)

    def repeated_context() -> None:  # the context projected once per sample
        flow.forward(z, c1.expand(EVAL_SAMPLES, -1))

    out = {"params (M)": sum(p.numel() for p in flow.parameters()) / 1e6}
    out["train step"] = timeit(train_step, repeats, device)
    out[f"train step, N = {ANNOTATIONS}"] = timeit(multi_step, repeats, device)
    with lu_before():
        out[f"train step, N = {ANNOTATIONS}, LU before"] = timeit(multi_step, repeats, device)
    train_step()  # gradients for the optimizer rows
    for fused in (False, True):
        opt = torch.optim.AdamW(flow.parameters(), lr=1e-6, fused=fused)
        out[f"AdamW step, {'fused' if fused else 'unfused'}"] = timeit(opt.step, repeats, device)
    with torch.no_grad():
        out["mode, 1 image"] = timeit(lambda: flow.mode(c1), repeats, device)
        out["mode, cached"] = timeit(lambda: flow.mode(context_cache=cache1), repeats, device)
        cached_parts = LULinear._parts
        LULinear._parts = LULinear._build  # type: ignore[method-assign]  # no W cache
        try:
            out["mode, W rebuilt"] = timeit(lambda: flow.mode(c1), repeats, device)
        finally:
            LULinear._parts = cached_parts  # type: ignore[method-assign]
        out["100 samples, context repeated"] = timeit(repeated_context, repeats, device)
        out["100 samples, sample(c)"] = timeit(
            lambda: flow.sample(c1, EVAL_SAMPLES, generator=gen), repeats, device
        )
        out["100 samples, cached"] = timeit(
            lambda: flow.sample(n=EVAL_SAMPLES, generator=gen, context_cache=cache1),
            repeats,
            device,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="coupling width (cpu preset: 256)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    results = {name: bench(c, args.repeats, device, args.hidden) for name, c in CONTEXTS.items()}
    print(f"ConditionalGlow D={PARAM_DIM} hidden={args.hidden} steps={STEPS} batch={BATCH} "
          f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    header = f"{'':34s}" + "".join(f"{n + f' (C={CONTEXTS[n]})':>22s}" for n in results)
    print(header)
    rows = next(iter(results.values())).keys()
    for row in rows:
        cells = []
        for res in results.values():
            unit = "" if row == "params (M)" else " ms"
            ratio = ""
            if row.startswith("100 samples") or row in ("mode, cached", "mode, W rebuilt"):
                ratio = f" ({res[row] / res['mode, 1 image']:.2f}x)"
            elif row.endswith("LU before"):
                ratio = f" ({res[row] / res[f'train step, N = {ANNOTATIONS}']:.2f}x)"
            cells.append(f"{res[row]:.1f}{unit}{ratio}")
        print(f"{row:34s}" + "".join(f"{c:>22s}" for c in cells))
    print("(x) = time / one mode call for one image (context projected inside the call); "
          "LU before: time / the same train step now")


if __name__ == "__main__":
    main()
