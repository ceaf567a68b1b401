"""What a training budget gives: z = 0 MPJPE of a run's checkpoints against the no-image reference.

    python benchmarks/cpu_budget.py --run RUN_DIR --data DATA [--splits val,test] [--limit 320]

For every periodic checkpoint of ``RUN_DIR`` (``checkpoints/stepNNNNNNN.ckpt``) and its
``last.ckpt``, prints the RR / RRR / Global MPJPE (mm) of the z = 0 estimate on an evenly spaced
subset of each split, next to the mean training pose decoded through the same crop cameras
(``handflow.evaluation.chance``: what a model that ignores the image scores). A model is useful
when it is clearly below that reference on every alignment. docs/training.md records the
figures ("What a CPU budget gives").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from handflow.data.datamodule import InterHandDataModule
from handflow.metrics import ALIGNMENTS, mpjpe
from handflow.models import decode_joints
from handflow.training import load_checkpoint
from handflow.training.select import step_checkpoints


def load_batches(ckpt: Path, data: Path, split: str, limit: int, batch_size: int = 32) -> list[dict]:
    """An evenly spaced subset of ``split`` as collated batches, cropped as ``ckpt`` expects
    (read once, then scored for every checkpoint of the run)."""
    module, cfg = load_checkpoint(ckpt)
    dm = InterHandDataModule(data, image_size=cfg.data.image_size, batch_size=batch_size, hand_model=module.hand_model,
                             augment=False)
    ds = dm.dataset(split)
    idx = torch.linspace(0, len(ds) - 1, min(limit, len(ds))).long().tolist()
    return [torch.utils.data.default_collate([ds[i] for i in idx[i0:i0 + batch_size]]) for i0 in range(0, len(idx), batch_size)]


@torch.no_grad()
def z0_errors(ckpt: Path, batches: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean MPJPE per alignment (mm) of the z = 0 estimate and of the mean training pose."""
    module, cfg = load_checkpoint(ckpt)
    errs: dict[str, list[torch.Tensor]] = {a: [] for a in ALIGNMENTS}
    ref: dict[str, list[torch.Tensor]] = {a: [] for a in ALIGNMENTS}
    for b in batches:
        if b["image"].shape[-1] != cfg.data.image_size:
            raise ValueError(f"{ckpt} expects {cfg.data.image_size} px crops, the batches are {b['image'].shape[-1]} px")
        z0 = module.model.z0(module.batch_features(b))
        mean = module.model.normalizer.mean.expand_as(z0)
        for out, y in ((errs, z0), (ref, mean)):
            J = decode_joints(y, b["K"].float(), cfg.data.image_size, module.hand_model)
            for a in ALIGNMENTS:
                e = mpjpe(J, b["joints_cam"], a, mask=b["joint_valid"])
                out[a].append(e[torch.isfinite(e)])
    return ({a: torch.cat(v).mean().item() for a, v in errs.items()},
            {a: torch.cat(v).mean().item() for a, v in ref.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a handflow train output folder")
    ap.add_argument("--data", type=Path, required=True, help="dataset root")
    ap.add_argument("--splits", default="val", help="comma-separated splits")
    ap.add_argument("--limit", type=int, default=320, help="images per split (evenly spaced)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ckpts = {f"step {s}": p for s, p in step_checkpoints(a.run).items()}
    last = a.run / "checkpoints" / "last.ckpt"
    if last.exists():
        ckpts["last"] = last
    if not ckpts:
        raise SystemExit(f"no checkpoint in {a.run / 'checkpoints'}")
    cols = " ".join(f"{x:>8}" for x in ALIGNMENTS)
    print(f"{'split':<6} {'checkpoint':<11} {cols}   (mean training pose: {cols.strip()})")
    for split in a.splits.split(","):
        batches = load_batches(next(iter(ckpts.values())), a.data, split, a.limit)
        for name, path in ckpts.items():
            model, ref = z0_errors(path, batches)
            m = " ".join(f"{model[x]:8.1f}" for x in ALIGNMENTS)
            r = " ".join(f"{ref[x]:.1f}" for x in ALIGNMENTS)
            print(f"{split:<6} {name:<11} {m}   ({r})", flush=True)


if __name__ == "__main__":
    main()
