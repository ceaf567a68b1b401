"""``handflow demo``: the main job end to end on the embedded defaults.

1. draw the open hand model (``hand_model.png``);
2. synthesize a small two-hand dataset in the InterHand2.6M format (``data/``);
3. fine-tune the shipped image model (``handflow.pretrained("synthetic")``, the ``cpu`` preset) on that
   dataset for a short budget (``run/``); without the shipped file (a source tree without its
   assets) or with ``from_scratch``, train from scratch instead;
4. predict distributions for held-out test images (``predictions/``: figures, HTML);
5. write a summary (MPJPE of the z = 0 estimate and best-of-N, sample spread).

Full mode takes about 9 minutes on 2 CPU cores (fine-tuning capped at 6; from scratch, 9); ``--quick`` (used by
the test suite) about 2 minutes with tiny settings. Reruns reuse the dataset and resume training; each starting
point keeps its own run folder (``run/``, ``run_scratch/``, ``run_quick/``, and ``data_quick/``) so that every
mode can share one output folder (a dataset or a run is never resumed with other settings).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from handflow.constants import FINGER_NAMES, IH_TIPS, IH_WRIST, NUM_BETAS, NUM_MANO_JOINTS
from handflow.errors import MissingFileError
from handflow.extras import pyplot
from handflow.hand.base import HandModel

__all__ = ["run_demo", "hand_model_summary", "demo_settings", "DemoSettings", "FULL", "FULL_SCRATCH", "QUICK"]


@dataclass
class DemoSettings:
    frames: int
    cameras: int
    image_size: int
    train_minutes: float
    max_steps: int
    batch_size: int
    flow_hidden: int
    test_images: int
    samples: int
    init_from: str | None = None
    lr: float = 3.0e-4


#: the full demo fine-tunes the shipped image model (its architecture: the cpu preset, 256-wide flow) at a lower rate
FULL = DemoSettings(frames=400, cameras=8, image_size=128, train_minutes=6.0, max_steps=4000, batch_size=24,
                    flow_hidden=256, test_images=6, samples=100, init_from="synthetic", lr=1.0e-4)
#: the full demo without the shipped model: from scratch (the earlier default)
FULL_SCRATCH = DemoSettings(frames=400, cameras=8, image_size=128, train_minutes=9.0, max_steps=4000, batch_size=24,
                            flow_hidden=512, test_images=6, samples=100)
QUICK = DemoSettings(frames=24, cameras=3, image_size=64, train_minutes=1.0, max_steps=12, batch_size=4,
                     flow_hidden=64, test_images=2, samples=20)


def hand_model_summary(model: HandModel) -> str:
    """A few lines describing ``model``: vertex/face counts and the β = 0 hand length."""
    rot = torch.eye(3).expand(1, NUM_MANO_JOINTS, 3, 3)
    out = model(rot, torch.zeros(1, NUM_BETAS))
    middle_tip = IH_TIPS[FINGER_NAMES.index("middle")]
    length = (out.joints[0, middle_tip] - out.joints[0, IH_WRIST]).norm().item()
    return (
        f"hand model: {model.name}\n"
        f"vertices: {model.num_vertices}\n"
        f"faces: {int(model.faces.shape[0])}\n"
        f"hand length (wrist joint to middle fingertip, beta = 0): {length:.1f} mm\n"
    )


def _plot_curves(metrics_csv: Path, path: Path) -> None:
    plt = pyplot("training curves")

    rows = list(csv.DictReader(open(metrics_csv)))
    keys = ["train/loss", "train/nll", "train/3d", "train/2d", "train/spread_mm"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8))
    for ax, k in zip(axes, keys):
        pts = [(int(r["step"]), float(r[k])) for r in rows if r.get(k)]
        if pts:
            ax.plot(*zip(*pts), lw=1)
        ax.set_title(k.split("/")[1], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def demo_settings(quick: bool = False, from_scratch: bool = False) -> tuple[DemoSettings, str]:
    """The demo's settings and one line saying where its model starts: :data:`QUICK`, or
    :data:`FULL` (fine-tuning the shipped image model), or :data:`FULL_SCRATCH` when asked or
    when the shipped file is missing from this install."""
    # lazy: `handflow hand` imports this module for hand_model_summary only (the models package loads torchvision)
    from handflow.models.shipped import shipped_path

    if quick:
        return QUICK, "from scratch (quick mode: a tiny model)"
    if from_scratch:
        return FULL_SCRATCH, "from scratch (--from-scratch)"
    assert FULL.init_from is not None
    try:
        path = shipped_path(FULL.init_from)
    except MissingFileError as e:
        return FULL_SCRATCH, f"from scratch ({e})"
    return FULL, f"fine-tuning the shipped image model {FULL.init_from!r} ({path.name})"


def _z0_rr(module: Any, test: Any, indices: list[int], image_size: int) -> list[float]:
    """RR MPJPE (mm) of ``module``'s z = 0 estimate on the test items ``indices``."""
    # lazy: as in demo_settings
    from handflow.metrics import mpjpe
    from handflow.models import decode_joints

    errs = []
    with torch.no_grad():
        for i in indices:
            it = test[i]
            res = module.model.predict(it["image"][None], 0, None)
            z0 = decode_joints(res["z0"], it["K"][None], image_size, module.hand_model)[0]
            errs.append(float(mpjpe(z0, it["joints_cam"], "rr", mask=it["joint_valid"])))
    return errs


def run_demo(out: Path, quick: bool = False, seed: int = 0, from_scratch: bool = False) -> None:
    """Write the demo outputs under ``out`` (see the module docstring)."""
    # lazy: `handflow hand` imports this module for hand_model_summary only; the demo's pipeline loads when it runs
    # (and Lightning, the [train] extra: handflow.demo imports without it)
    from handflow.config import load_config
    from handflow.data import InterHandDataset
    from handflow.data.synth.generate import SynthConfig, generate
    from handflow.hand import load_hand_model
    from handflow.metrics import mpjpe, sample_spread
    from handflow.models import decode_joints
    from handflow.models.shipped import shipped_path
    from handflow.training import load_checkpoint, train
    from handflow.viz.hands import plot_hand_gallery
    from handflow.viz.predictions import plot_prediction, write_samples_html
    from handflow.viz.sample import plot_item

    s, start = demo_settings(quick, from_scratch)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    t0 = time.time()
    lines = []

    def say(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    model = load_hand_model("openhand")
    plot_hand_gallery(model, out / "hand_model.png", seed=seed)
    say(hand_model_summary(model).rstrip())
    say(f"[1/4] hand model figure: {out / 'hand_model.png'}")

    suffix = "_quick" if quick else ""
    data = out / f"data{suffix}"
    stats = generate(data, SynthConfig(frames=s.frames, cameras=s.cameras, image_size=s.image_size * 2, seed=seed), progress=True)
    say(f"[2/4] synthetic dataset: {data} ({stats.get('images', '?')} images)")
    test = InterHandDataset(data, "test", s.image_size)
    plot_item(InterHandDataset(data, "test", 256)[0], out / "dataset_sample.png")

    # one run folder per starting point: a run is never resumed with other settings
    run = out / f"run{suffix}{'_scratch' if s is FULL_SCRATCH else ''}"
    cfg = load_config("cpu", [
        f"data.root={data}", f"train.out_dir={run}", f"data.image_size={s.image_size}", f"data.batch_size={s.batch_size}",
        f"train.max_steps={s.max_steps}", f"train.max_minutes={s.train_minutes}", f"model.flow_hidden={s.flow_hidden}",
        f"train.seed={seed}", "train.val_every=100000", f"train.ckpt_every={max(s.max_steps // 4, 1)}",
        f"data.num_workers={0 if quick else 1}", f"train.lr={s.lr}",
        *([f"model.init_from={s.init_from}"] if s.init_from else []),
    ])
    n_eval = min(len(test), 8 if quick else 200)
    step = max(len(test) // n_eval, 1)
    indices = list(range(0, len(test), step))
    say(f"model: {start}")
    if s.init_from:
        before = _z0_rr(load_checkpoint(shipped_path(s.init_from))[0], test, indices, s.image_size)
        say(f"shipped model before fine-tuning, MPJPE (RR, mm) of the z=0 estimate: {sum(before) / len(before):.1f}")
    last = train(cfg, resume=True)
    module, cfg = load_checkpoint(last)
    metrics_csv = sorted((run / "logs").glob("version_*/metrics.csv"))[-1]
    _plot_curves(metrics_csv, out / "training_curves.png")
    say(f"[3/4] trained HandFlowNet ({cfg.model.backbone}, {s.image_size} px): {last}")

    pred_dir = out / "predictions"
    g = torch.Generator().manual_seed(seed)
    errs_z0, errs_best, spreads = [], [], []
    with torch.no_grad():
        for k, i in enumerate(indices):
            it = test[i]
            res = module.model.predict(it["image"][None], s.samples, g)
            K = it["K"][None]
            z0 = decode_joints(res["z0"], K, s.image_size, module.hand_model)[0]
            smp = decode_joints(res["samples"], K, s.image_size, module.hand_model)[0]
            gt, valid = it["joints_cam"], it["joint_valid"]
            errs_z0.append(float(mpjpe(z0, gt, "rr", mask=valid)))
            errs_best.append(float(mpjpe(smp, gt[None], "rr", mask=valid[None]).min()))
            spreads.append(float(sample_spread(smp[None])[0]))
            if k < s.test_images:
                stem = f"test_{it['meta']['image_id']}"
                plot_prediction(it["image"], it["K"], z0, smp, pred_dir / f"{stem}.png", gt=gt,
                                title=f"image {it['meta']['image_id']}: RR MPJPE z=0 {errs_z0[-1]:.1f} mm, "
                                      f"best of {s.samples} {errs_best[-1]:.1f} mm")
                if k == 0:
                    write_samples_html(z0, smp, pred_dir / f"{stem}.html")
    mean = lambda v: sum(v) / max(len(v), 1)  # noqa: E731
    say(f"[4/4] predictions: {pred_dir}")
    say(f"test images evaluated: {len(errs_z0)}")
    say(f"MPJPE (RR, mm): z=0 estimate {mean(errs_z0):.1f}; best of {s.samples} samples {mean(errs_best):.1f} (oracle)")
    say(f"mean sample spread: {mean(spreads):.1f} mm")
    say(f"total time: {time.time() - t0:.0f} s")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
