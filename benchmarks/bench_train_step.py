"""Training steps/s: today's loader (JPEG decoding, per-sample augmentation) against the packed
store with batched augmentation, same model and batch, side by side (issue #17).

    .venv/bin/python benchmarks/bench_train_step.py [--data D] [--store S] [--threads 2] [--repeats 5]

Both sides run the `cpu` preset's training step (ResNet-18, 128 px, batch 32: forward, the six
losses, backward, gradient clipping, fused AdamW) on the same model; only the loader differs.
Blocks of ``--steps`` steps alternate between the sides (the order flips every repeat, the
first ``WARMUP_STEPS`` of a block are not timed, so batches a worker prefetched while the
other side ran do not count); the median steps/s of each side and their ratio are printed.
Without ``--data``, a small synthetic set (256 px images, as docs/training.md) is made in a
temporary folder; without ``--store`` it is packed there.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

#: steps of each block that are not timed (prefetched batches, first-batch effects)
WARMUP_STEPS = 2
#: synthetic set made when --data is not given: 120 frames x 4 cameras at 256 px (~380 training images)
DEFAULT_SYNTH = dict(frames=120, cameras=4, image_size=256, seed=0)


def _endless(make_loader: Any) -> Iterator[dict]:
    """Batches forever: a new epoch (iterator) when one ends."""
    epoch = 0
    while True:
        loader = make_loader()
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _step(module: Any, opt: torch.optim.Optimizer, batch: dict, clip: float) -> float:
    module.train()
    loss, _, _ = module.compute_losses(batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    opt.step()
    return float(loss)


def _block(module: Any, opt: torch.optim.Optimizer, it: Iterator[dict], steps: int, clip: float) -> float:
    """Steps/s over ``steps`` timed steps after ``WARMUP_STEPS`` untimed ones."""
    for _ in range(WARMUP_STEPS):
        _step(module, opt, next(it), clip)
    t0 = time.perf_counter()
    for _ in range(steps):
        _step(module, opt, next(it), clip)
    return steps / (time.perf_counter() - t0)


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
    ap.add_argument("--set", nargs="*", default=[], help="extra config overrides")
    a = ap.parse_args()

    from handflow.config import load_config
    from handflow.data.datamodule import InterHandDataModule
    from handflow.data.packed import PackedDataModule, pack_split
    from handflow.training.module import HandFlowModule
    from handflow.training.train import fit_normalizer

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_step_"))
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
    sides = {f"JPEG + per-sample augmentation ({workers} worker{'s' if workers != 1 else ''})": _endless(today.train_dataloader),
             f"packed + batched augmentation ({a.packed_workers} workers)": _endless(packed.train_dataloader)}
    rates: dict[str, list[float]] = {k: [] for k in sides}
    print(f"{a.config} preset: {cfg.model.backbone}, {cfg.data.image_size} px, batch {cfg.data.batch_size}, "
          f"{a.threads} threads; {a.repeats} blocks of {a.steps} steps per side")
    names = list(sides)
    for r in range(a.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            rates[name].append(_block(module, opt, sides[name], a.steps, cfg.train.grad_clip))
            print(f"  repeat {r}: {name}: {rates[name][-1]:.3f} steps/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print()
    print(f"| loader | steps/s (median of {a.repeats}) | images/s | all blocks |")
    print("|---|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} | {v * cfg.data.batch_size:.1f} | {', '.join(f'{x:.2f}' for x in rates[k])} |")
    print(f"\nratio packed / JPEG: {med[names[1]] / med[names[0]]:.2f}x")


if __name__ == "__main__":
    main()
