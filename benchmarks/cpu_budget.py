"""What a training budget gives: z = 0 MPJPE of a run's checkpoints against the no-image reference.

    python benchmarks/cpu_budget.py --run RUN_DIR --data DATA [--splits val,test] [--limit 320] \
        [--json curve.json] [--plot curve.png] [--label NAME] [--also OTHER.json ...] [--images-before N]
    python benchmarks/cpu_budget.py --plot curve.png --also A.json B.json      # redraw from saved rows

For every periodic checkpoint of ``RUN_DIR`` (``checkpoints/stepNNNNNNN.ckpt``) and its
``last.ckpt``, prints the RR / RRR / Global MPJPE (mm) of the z = 0 estimate on an evenly spaced
subset of each split, and the 2D error (px at the crop size) of the visible joints, next to the
mean training pose decoded through the same crop cameras (``handflow.evaluation.chance``: what a
model that ignores the image scores). A model is useful when it is clearly below that reference
on every alignment. ``--json`` keeps the rows with the images each checkpoint has seen (step ×
batch); ``--plot`` draws the learning curve against image presentations (log scale) from this
run and the ``--also`` files. docs/training.md records the figures ("What a CPU budget gives",
"Shipped model").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from handflow.data.datamodule import InterHandDataModule
from handflow.extras import pyplot
from handflow.geometry.camera import project
from handflow.metrics import ALIGNMENTS, mpjpe
from handflow.models import decode_joints
from handflow.models.checkpoint import checkpoint_step
from handflow.safeio import load_torch_file
from handflow.training import load_checkpoint
from handflow.training.select import step_checkpoints

#: the 2D column: mean pixel error of the visible joints at the crop size
COL_2D = "2d_px"


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
    """Mean MPJPE per alignment (mm) of the z = 0 estimate and of the mean training pose, and
    (column :data:`COL_2D`) the mean 2D error in crop pixels of the visible joints."""
    module, cfg = load_checkpoint(ckpt)
    errs: dict[str, list[torch.Tensor]] = {a: [] for a in (*ALIGNMENTS, COL_2D)}
    ref: dict[str, list[torch.Tensor]] = {a: [] for a in (*ALIGNMENTS, COL_2D)}
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
            vis = b["visible"].bool() & b["joint_valid"].bool()
            out[COL_2D].append((project(J, b["K"].float()) - b["joints_2d"]).norm(dim=-1)[vis])
    return ({a: torch.cat(v).mean().item() for a, v in errs.items()},
            {a: torch.cat(v).mean().item() for a, v in ref.items()})


def images_seen(path: Path, before: int = 0) -> tuple[int, int]:
    """(global step, images presented = ``before`` + step × batch size) of a checkpoint;
    ``before``: images its starting weights had seen (a run continued with ``model.init_from``)."""
    ck = load_torch_file(path)
    step = checkpoint_step(ck)
    return step, before + step * int(ck["hyper_parameters"]["config"]["data"]["batch_size"])


def read_curves(files: list[Path]) -> dict[str, list[dict]]:
    """``{label: rows}`` of saved ``--json`` files, without their ``last`` rows (a periodic
    snapshot at the same step is already there)."""
    return {(o := json.loads(f.read_text()))["label"]: [r for r in o["rows"] if r["checkpoint"] != "last"] for f in files}


def plot_curves(curves: dict[str, list[dict]], out: Path) -> None:
    """z = 0 MPJPE (RR, RRR, Global) and visible-joint 2D error against images presented (log x),
    one line per run, the mean training pose dashed."""
    plt = pyplot("learning curve")
    cols = (*ALIGNMENTS, COL_2D)
    fig, axes = plt.subplots(1, len(cols), figsize=(3.4 * len(cols), 3.0))
    for label, rows in curves.items():
        rows = sorted((r for r in rows if r["images"] > 0), key=lambda r: r["images"])
        for ax, c in zip(axes, cols):
            line, = ax.plot([r["images"] for r in rows], [r["model"][c] for r in rows], "o-", ms=3, lw=1.2, label=label)
            if rows:
                ax.axhline(rows[-1]["reference"][c], ls="--", lw=0.8, color=line.get_color())
    for ax, c in zip(axes, cols):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # a short range labels its minor ticks, overlapping
        ax.set_xlabel("images presented", fontsize=8)
        ax.set_title(f"z = 0 {c.upper()} (mm)" if c != COL_2D else "2D error, visible joints (px)", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # below the panels: never over a curve
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), fontsize=7, frameon=False)
    fig.suptitle("dashed: mean training pose", fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a handflow train output folder (without it: --plot of the --also files)")
    ap.add_argument("--data", type=Path, help="dataset root (with --run)")
    ap.add_argument("--splits", default="val", help="comma-separated splits")
    ap.add_argument("--limit", type=int, default=320, help="images per split (evenly spaced)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the rows (with images presented) here")
    ap.add_argument("--plot", type=Path, help="draw the learning curve here (PNG)")
    ap.add_argument("--label", default=None, help="this run's name in the plot (default: the run folder)")
    ap.add_argument("--also", type=Path, nargs="*", default=[], help="other runs' --json files drawn beside it")
    ap.add_argument("--device", default=None, help="the machine, recorded in the JSON (e.g. '2-core CPU')")
    ap.add_argument("--images-before", type=int, default=0,
                    help="images the run's starting weights had seen (a run continued with model.init_from): "
                         "added to every checkpoint's count")
    a = ap.parse_args()
    if a.run is None:
        if not (a.plot and a.also):
            ap.error("give --run and --data, or --plot with --also files to redraw")
        plot_curves(read_curves(a.also), a.plot)
        return
    if a.data is None:
        ap.error("--run needs --data")
    torch.set_num_threads(a.threads)
    ckpts = {f"step {s}": p for s, p in step_checkpoints(a.run).items()}
    last = a.run / "checkpoints" / "last.ckpt"
    if last.exists():
        ckpts["last"] = last
    if not ckpts:
        raise SystemExit(f"no checkpoint in {a.run / 'checkpoints'}")
    names = (*ALIGNMENTS, COL_2D)
    cols = " ".join(f"{x:>8}" for x in names)
    print(f"{'split':<6} {'checkpoint':<11} {'images':>9} {cols}   (mean training pose: {cols.strip()})")
    rows = []
    for split in a.splits.split(","):
        batches = load_batches(next(iter(ckpts.values())), a.data, split, a.limit)
        for name, path in ckpts.items():
            model, ref = z0_errors(path, batches)
            step, seen = images_seen(path, a.images_before)
            rows.append({"split": split, "checkpoint": name, "step": step, "images": seen, "model": model, "reference": ref})
            m = " ".join(f"{model[x]:8.1f}" for x in names)
            r = " ".join(f"{ref[x]:.1f}" for x in names)
            print(f"{split:<6} {name:<11} {seen:>9} {m}   ({r})", flush=True)
    label = a.label or a.run.name
    if a.json:
        a.json.write_text(json.dumps({"label": label, "run": str(a.run), "data": str(a.data), "limit": a.limit,
                                      "device": a.device, "images_before": a.images_before, "rows": rows}, indent=1))
    if a.plot:
        plot_curves({label: [r for r in rows if r["checkpoint"] != "last"], **read_curves(a.also)}, a.plot)


if __name__ == "__main__":
    main()
