"""Image-model designs side by side: accuracy per CPU-hour from short runs (issue #17 part 1).

    python benchmarks/design_study.py --data DATA --store STORE --out OUT --minutes 20 \
        [--designs pooled,keypoints2d] [--backbone-from synthetic] [--eval-data EVAL] [--limit 320]

Every design is a ``handflow train --config cpu`` run with its own overrides (:data:`DESIGNS`) on
the same data, packed store, seed and wall-clock budget (``train.max_minutes``), all started at
once, one thread each (so run at most as many designs as there are cores). Each run keeps a
snapshot every ``--ckpt-every`` steps; afterwards every snapshot is scored as
``benchmarks/cpu_budget.py`` does (z = 0 RR / RRR / Global MPJPE and the visible joints' 2D
error on ``--limit`` evenly spaced images of ``--split`` of ``--eval-data``), so designs are
compared at equal CPU time and at equal images presented. ``--backbone-from`` starts every
design's ResNet from a trained model's (``model.backbone_checkpoint``; a shipped name or a
path), the heads fresh. Rows go to ``OUT/design_study.json``; ``--plot`` draws the curves.

``train.max_steps=-1``: the learning rate is constant (the cosine schedule needs a step count),
the same for every design. ``--set KEY=VALUE`` adds overrides to every design. A design whose
runs already exist in ``OUT`` is resumed (``--resume auto``) up to its budget, not restarted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

#: design name -> ``handflow train`` overrides on top of the ``cpu`` preset
DESIGNS: dict[str, list[str]] = {
    "pooled": [],  # the paper's context: the pooled ResNet-18 feature (today's cpu preset)
    "keypoints2d": ["model.context=keypoints2d"],  # pooled ⊕ soft-argmax 2D joints ⊕ confidence
    "resnet34": ["model.backbone=resnet34"],
    "flow512": ["model.flow_hidden=512"],
}


def _cpu_budget():  # the scoring of benchmarks/cpu_budget.py (a script, not a module of the package)
    spec = importlib.util.spec_from_file_location("cpu_budget", Path(__file__).with_name("cpu_budget.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def train_commands(a: argparse.Namespace, names: list[str]) -> dict[str, list[str]]:
    """The ``handflow train`` command of every design."""
    out = {}
    for name in names:
        over = [f"data.packed={a.store}", f"train.max_minutes={a.minutes}", "train.max_steps=-1", "train.threads=1",
                "data.num_workers=0", f"train.ckpt_every={a.ckpt_every}", "train.val_every=1000000", f"train.seed={a.seed}"]
        if a.backbone_from:
            over.append(f"model.backbone_checkpoint={a.backbone_from}")
        out[name] = [sys.executable, "-m", "handflow", "train", "--config", "cpu", "--data", str(a.data),
                     "--out", str(a.out / name), "--resume", "auto", *over, *a.set, *DESIGNS[name]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="training data (the store's dataset)")
    ap.add_argument("--store", type=Path, required=True, help="packed training store (handflow pack)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget of every run")
    ap.add_argument("--designs", default="pooled,keypoints2d", help=f"comma-separated, of {list(DESIGNS)}")
    ap.add_argument("--backbone-from", default=None, help="start every ResNet from this model's (name or path)")
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-data", type=Path, default=None, help="dataset to score on (default: --data)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=320)
    ap.add_argument("--plot", type=Path, default=None, help="learning curves of every design (PNG)")
    ap.add_argument("--skip-training", action="store_true", help="only score the runs already in --out")
    ap.add_argument("--set", nargs="*", default=[], help="KEY=VALUE overrides for every design")
    a = ap.parse_args()
    names = a.designs.split(",")
    unknown = [n for n in names if n not in DESIGNS]
    if unknown:
        ap.error(f"unknown design(s) {unknown}; known: {list(DESIGNS)}")
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.skip_training:
        procs = {}
        for name, cmd in train_commands(a, names).items():
            log = (a.out / f"{name}.log").open("a")
            print("$", " ".join(cmd[2:]), flush=True)
            procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        bad = {n: p.wait() for n, p in procs.items()}
        if any(bad.values()):
            raise SystemExit(f"training failed: {bad} (logs in {a.out})")
    cb = _cpu_budget()
    cb.torch.set_num_threads(2)
    from handflow.training.select import step_checkpoints

    curves: dict[str, list[dict]] = {}
    batches = None
    for name in names:
        run = a.out / name
        ckpts = step_checkpoints(run)
        if not ckpts:
            raise SystemExit(f"{name}: no snapshot in {run / 'checkpoints'}")
        # the same images for every design (all designs crop at the preset's size)
        batches = batches or cb.load_batches(next(iter(ckpts.values())), a.eval_data or a.data, a.split, a.limit)
        rows = []
        for step, path in ckpts.items():
            model, ref = cb.z0_errors(path, batches)
            rows.append({"checkpoint": f"step {step}", "step": step, "images": cb.images_seen(path)[1], "model": model,
                         "reference": ref})
        curves[name] = rows
    cols = (*cb.ALIGNMENTS, cb.COL_2D)
    print(f"\n{'design':<12} {'steps':>6} {'images':>8} " + " ".join(f"{c:>8}" for c in cols) + "   (last snapshot, "
          f"{a.minutes:g} min on one core each; {a.split} {a.limit} images)")
    for name, rows in curves.items():
        r = rows[-1]
        print(f"{name:<12} {r['step']:>6} {r['images']:>8} " + " ".join(f"{r['model'][c]:8.1f}" for c in cols))
    ref = next(iter(curves.values()))[-1]["reference"]
    print(f"{'mean pose':<12} {'':>6} {'':>8} " + " ".join(f"{ref[c]:8.1f}" for c in cols))
    (a.out / "design_study.json").write_text(json.dumps({"minutes": a.minutes, "backbone_from": a.backbone_from,
                                                         "split": a.split, "limit": a.limit, "curves": curves}, indent=1))
    if a.plot:
        cb.plot_curves(curves, a.plot)


if __name__ == "__main__":
    main()
