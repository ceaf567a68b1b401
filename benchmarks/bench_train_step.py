"""Training steps/s: today's loader (JPEG decoding, per-sample augmentation) against the packed
store with batched augmentation, same model and batch, side by side (issue #17).

    .venv/bin/python benchmarks/bench_train_step.py [--data D] [--store S] [--threads 2] [--repeats 5]

Both sides run the `cpu` preset's training step (ResNet-18, 128 px, batch 32: forward, the six
losses, backward, gradient clipping, fused AdamW) on the same model; only the loader differs.
Blocks of ``--steps`` steps alternate between the sides (the order flips every repeat, the
first ``WARMUP_STEPS`` of a block are not timed, so batches a worker prefetched while the
other side ran do not count); the median steps/s of each side and their ratio are printed,
and the CPU seconds per step (training process and loader workers together): on a machine
shared with other jobs, the kernel's fair share gives a side with more threads more CPU,
which the wall-clock rate hides and the CPU cost does not.
Without ``--data``, a small synthetic set (256 px images, as docs/training.md) is made in a
temporary folder; without ``--store`` it is packed there.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

#: steps of each block that are not timed (prefetched batches, first-batch effects)
WARMUP_STEPS = 2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: synthetic set made when --data is not given: 120 frames x 4 cameras at 256 px (~380 training images)
DEFAULT_SYNTH = dict(frames=120, cameras=4, image_size=256, seed=0)


class Batches:
    """Batches forever (a new epoch when one ends), with the CPU time of the loader's workers."""

    def __init__(self, make_loader: Any) -> None:
        self.make, self.epoch, self.it = make_loader, 0, None

    def __next__(self) -> dict:
        while True:
            if self.it is None:
                loader = self.make()
                sampler = getattr(loader, "sampler", None)
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(self.epoch)
                self.it = iter(loader)
            try:
                return next(self.it)
            except StopIteration:
                self.it, self.epoch = None, self.epoch + 1

    def live_worker_cpu(self) -> float:
        """CPU seconds of this loader's running workers (from /proc; 0 without workers)."""
        total = 0.0
        for w in getattr(self.it, "_workers", []):
            try:
                fields = open(f"/proc/{w.pid}/stat").read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        return total


def cpu_seconds(sides: dict[str, Batches]) -> float:
    """CPU seconds of this process, its finished children and the live loader workers."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime + sum(b.live_worker_cpu() for b in sides.values())


def _step(module: Any, opt: torch.optim.Optimizer, batch: dict, clip: float) -> None:
    module.train()
    loss, _, _ = module.compute_losses(batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    opt.step()


def _block(module: Any, opt: torch.optim.Optimizer, sides: dict[str, Batches], name: str, steps: int,
           clip: float) -> tuple[float, float]:
    """(steps/s, CPU seconds per step) over ``steps`` timed steps after ``WARMUP_STEPS`` untimed ones."""
    it = sides[name]
    for _ in range(WARMUP_STEPS):
        _step(module, opt, next(it), clip)
    t0, c0 = time.perf_counter(), cpu_seconds(sides)
    for _ in range(steps):
        _step(module, opt, next(it), clip)
    return steps / (time.perf_counter() - t0), (cpu_seconds(sides) - c0) / steps


def loader_only(today: Any, packed: Any, batches: int, repeats: int, batch_size: int) -> None:
    """Seconds per batch of each loader alone, in this process (no workers, this process's
    threads), interleaved ``repeats`` times; medians and their ratio."""
    import copy

    sides = {"JPEG + per-sample augmentation": today, "packed + batched augmentation": packed}
    per: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(repeats):
        for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            dm = copy.copy(sides[name])
            dm.num_workers = 0
            it = iter(dm.train_dataloader())
            next(it)
            t0 = time.perf_counter()
            for _ in range(batches):
                next(it)
            per[name].append((time.perf_counter() - t0) / batches)
    med = {k: statistics.median(v) for k, v in per.items()}
    print(f"\n| loader alone (main process, no workers) | s per batch (median of {repeats}) | images/s |")
    print("|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} | {batch_size / v:.0f} |")
    a, b = med.values()
    print(f"\nloader alone: packed {a / b:.1f}x faster")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="dataset root (default: a small synthetic set in a temporary folder)")
    ap.add_argument("--store", type=Path, help="packed store of --data (default: packed into a temporary folder)")
    ap.add_argument("--config", default="cpu", help="preset (default cpu)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    ap.add_argument("--workers", type=int, default=None, help="loader workers of today's loader (default: the preset's)")
    ap.add_argument("--packed-workers", type=int, default=0, help="loader workers of the packed side (default 0)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per block")
    ap.add_argument("--repeats", type=int, default=5, help="blocks per side")
    ap.add_argument("--loader-batches", type=int, default=8, help="batches per side of the loader-only measurement (0: none)")
    ap.add_argument("--set", nargs="*", default=[], help="extra config overrides")
    a = ap.parse_args()

    from handflow.config import load_config
    from handflow.data.datamodule import InterHandDataModule
    from handflow.data.packed import PackedDataModule, pack_split
    from handflow.training.module import HandFlowModule
    from handflow.training.runner import fit_normalizer

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_step_")) if a.data is None or a.store is None else None
    data = a.data
    if data is None:
        from handflow.data.synth.generate import SynthConfig, generate

        data = tmp / "data"
        print(f"making a synthetic set in {data}: {DEFAULT_SYNTH}")
        generate(data, SynthConfig(**DEFAULT_SYNTH), workers=2, progress=False)
    cfg = load_config(a.config, [f"data.root={data}", *a.set])
    store = a.store or tmp / "store"
    t0 = time.perf_counter()
    meta = pack_split(data, "train", store, cfg.data.image_size, progress=False)
    print(f"packed store {store}: {meta['shape'][0]} crops of {meta['shape'][2]} px ({time.perf_counter() - t0:.1f} s)")

    torch.set_num_threads(a.threads)
    torch.manual_seed(cfg.train.seed)
    workers = cfg.data.num_workers if a.workers is None else a.workers
    today = InterHandDataModule.from_config(cfg, num_workers=workers)
    packed = PackedDataModule.from_config(cfg, packed=str(store), num_workers=a.packed_workers)
    module = HandFlowModule(cfg)
    fit_normalizer(module, today.dataset("train"), seed=cfg.train.seed)
    opt_cfg = module.configure_optimizers()
    opt = opt_cfg["optimizer"] if isinstance(opt_cfg, dict) else opt_cfg
    sides = {f"JPEG + per-sample augmentation ({workers} worker{'s' if workers != 1 else ''})": Batches(today.train_dataloader),
             f"packed + batched augmentation ({a.packed_workers} worker{'s' if a.packed_workers != 1 else ''})":
                 Batches(packed.train_dataloader)}
    rates: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    print(f"{a.config} preset: {cfg.model.backbone}, {cfg.data.image_size} px, batch {cfg.data.batch_size}, "
          f"{a.threads} threads; {a.repeats} blocks of {a.steps} steps per side")
    names = list(sides)
    for r in range(a.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            sps, cps = _block(module, opt, sides, name, a.steps, cfg.train.grad_clip)
            rates[name].append(sps)
            cpu[name].append(cps)
            print(f"  repeat {r}: {name}: {sps:.3f} steps/s, {cps:.2f} CPU-s/step", flush=True)
    if a.loader_batches:
        loader_only(today, packed, a.loader_batches, a.repeats, cfg.data.batch_size)
    med = {k: statistics.median(v) for k, v in rates.items()}
    mcpu = {k: statistics.median(v) for k, v in cpu.items()}
    print()
    print(f"| loader | steps/s (median of {a.repeats}) | images/s | CPU-s per step (median) | steps/s of every block |")
    print("|---|---|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} | {v * cfg.data.batch_size:.1f} | {mcpu[k]:.2f} | {', '.join(f'{x:.2f}' for x in rates[k])} |")
    print(f"\nratio packed / JPEG: {med[names[1]] / med[names[0]]:.2f}x steps/s, "
          f"{mcpu[names[0]] / mcpu[names[1]]:.2f}x fewer CPU-seconds per step")


if __name__ == "__main__":
    main()
