"""Keypoint-evidence training (``model.backbone=keypoints``): the per-item loader against the
in-memory targets with batched augmentation and batched MultiHands targets, side by side (issue #16).

    .venv/bin/python benchmarks/bench_keypoint_loader.py [--data D --multihands MH] [--steps 20] [--repeats 3]

Both sides run the same training step of the `cpu` preset's keypoint flow (evidence encoder,
flow, the six losses, backward, fused AdamW) at batch 32 on one thread, with the loader in the
training process (``num_workers=0``, as the report trains its runs side by side); only the
dataset differs. Blocks of ``--steps`` steps alternate between the sides (order flipped every
repeat); the median loader time per batch, step time and their ratios are printed, with the
one-time cost of building the in-memory targets. Without ``--data``, a small synthetic set and
its MultiHands annotations are made in a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _make_data(tmp: Path) -> tuple[Path, Path]:
    from handflow.data.synth.generate import SynthConfig, generate
    from handflow.multihands.generate import GenerateConfig, dataset_targets
    from handflow.multihands.generate import generate as mh_generate

    data, mh = tmp / "data", tmp / "mh"
    generate(data, SynthConfig(frames=60, cameras=4, image_size=256, seed=0), progress=False)
    cfg = GenerateConfig(num=16, rounds=3, proposals_per_image=32, image_size=128, seed=0)
    mh_generate(mh, "train", cfg, dataset_targets(data, "train", 128), progress=False)
    return data, mh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--multihands", type=Path)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from handflow.config import load_config
    from handflow.data.datamodule import InterHandDataModule
    from handflow.data.interhand import InterHandDataset
    from handflow.multihands.dataset import MultiHandsDataset
    from handflow.training.module import HandFlowModule

    tmp = tempfile.TemporaryDirectory()
    data, mh = (a.data, a.multihands) if a.data else _make_data(Path(tmp.name))
    over = ["model.backbone=keypoints", "data.keypoint_noise_px=2.0", f"data.multihands={mh}", f"data.root={data}",
            "data.num_workers=0", "train.threads=1"]
    cfg = load_config("cpu", over)
    t0 = time.perf_counter()
    fast_dm = InterHandDataModule.from_config(cfg)
    fast = fast_dm.train_dataloader()
    build_s = time.perf_counter() - t0
    per_item = InterHandDataset(data, "train", 128, augment=True, seed=0, load_images=False)
    slow = torch.utils.data.DataLoader(MultiHandsDataset(per_item, mh, "train", 8, image_size=128), batch_size=32,
                                       shuffle=True, num_workers=0, drop_last=True)
    module = HandFlowModule(cfg)
    module.train()
    first = next(iter(fast))
    module.ensure_initialized(first)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=True)
    its = {"per-item": iter(slow), "batched": iter(fast)}
    loaders = {"per-item": slow, "batched": fast}

    def batch(name: str) -> dict:
        try:
            return next(its[name])
        except StopIteration:
            its[name] = iter(loaders[name])
            return next(its[name])

    load_t: dict[str, list[float]] = {k: [] for k in its}
    step_t: dict[str, list[float]] = {k: [] for k in its}
    for r in range(a.repeats):
        for name in (list(its) if r % 2 == 0 else list(its)[::-1]):
            tl = ts = 0.0
            for _ in range(a.steps):
                t = time.perf_counter()
                b = batch(name)
                tl += time.perf_counter() - t
                t = time.perf_counter()
                total, _, _ = module.compute_losses(b)
                opt.zero_grad()
                total.backward()
                opt.step()
                ts += time.perf_counter() - t
            load_t[name].append(tl / a.steps)
            step_t[name].append((tl + ts) / a.steps)
    med = {k: (statistics.median(load_t[k]), statistics.median(step_t[k])) for k in its}
    print(f"train split: {len(fast_dm.dataset('train'))} items; in-memory targets built in {build_s:.1f} s (once per run)")
    for k, (lt, st) in med.items():
        print(f"{k:9s} loader {lt * 1e3:7.1f} ms/batch   loader+step {st * 1e3:7.1f} ms  ({1 / st:.2f} steps/s)")
    print(f"ratio batched/per-item: loader {med['per-item'][0] / med['batched'][0]:.1f}x faster, "
          f"training step {med['per-item'][1] / med['batched'][1]:.2f}x faster")


if __name__ == "__main__":
    main()
