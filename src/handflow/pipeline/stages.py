"""The benchmark's stages as commands: synth, multihands, backbone, features, train, evaluate.

:func:`plan_stages` turns a :class:`~handflow.pipeline.plan.ReportPlan` into a list of
:class:`Stage`: one ``python -m handflow ...`` command each, with its inputs, outputs, log,
fingerprint and a ``done`` check. Every command resumes by itself (rerunning it skips finished
work), and ``handflow synth`` / ``handflow multihands`` are split into ``--shard i/n`` commands,
so the list can run here (:mod:`handflow.pipeline.run`) or on a scheduler
(``handflow report --plan-only``: one command per line).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from handflow.evaluation.jobs import Job, handflow_command
from handflow.fingerprint import settings_fingerprint
from handflow.pipeline.plan import ReportPlan
from handflow.safeio import load_torch_file

__all__ = ["Stage", "STAGES", "plan_stages", "plan_text", "training_done", "finished_step", "synth_settings",
           "train_stage", "eval_stage", "backbone_stage", "features_stage", "shard_of"]

#: stage names in order; ``write`` (gather the table, render the page) runs no command
STAGES = ("data", "multihands", "backbone", "features", "train", "evaluate", "write")


@dataclass
class Stage:
    """One command of a stage. ``done()`` is true when its outputs are complete (skip it)."""

    stage: str
    name: str
    argv: list[str]
    inputs: tuple[Path, ...]
    outputs: tuple[Path, ...]
    log: Path
    done: Callable[[], bool]
    threads: int = 1
    shard: tuple[int, int] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def command(self) -> str:
        """The command as typed (``handflow ...``, independent of the interpreter)."""
        return " ".join(shlex.quote(a) for a in ["handflow", *self.argv[3:]])

    @property
    def fingerprint(self) -> str:
        """Hash of the command's arguments: equal fingerprints give the same outputs."""
        return settings_fingerprint({"argv": self.argv[3:]})

    def job(self) -> Job:
        return Job(self.name, self.argv, self.log, threads=self.threads, env=self.env)


# ---------------------------------------------------------------------------- checkpoints
def _saved_state(ckpt: Path) -> dict[str, Any] | None:
    """A run checkpoint's plain entries (``None`` when there is none yet), read with
    ``weights_only=True`` onto the meta device: the step count and the callbacks' state without
    the weights or the optimizer state (the torch of this project's venv, 2.14, skips their bytes
    on the meta device; older ones read and drop them). A planted
    file that would run code raises UnsafeFileError."""
    if not ckpt.exists():
        return None

    c = load_torch_file(ckpt, map_location="meta")
    return c if isinstance(c, dict) else {}


def finished_step(ckpt: Path) -> int:
    """The training step a run's ``last.ckpt`` reached (-1 without one)."""
    c = _saved_state(ckpt)
    return -1 if c is None else int(c.get("global_step", -1))


def training_done(ckpt: Path, steps: int, minutes: float | None) -> bool:
    """True when the run of ``ckpt`` (a full ``last.ckpt``) reached ``steps`` or used up its
    wall-clock cap of ``minutes`` (Lightning's ``Timer`` state): resuming it would add a step
    or two past the cap and change a backbone whose features are already cached."""
    c = _saved_state(ckpt)
    if c is None:
        return False
    if int(c.get("global_step", -1)) >= steps:
        return True
    elapsed = c.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {}).get("train")
    return minutes is not None and elapsed is not None and float(elapsed) >= 60.0 * float(minutes)


# ---------------------------------------------------------------------------- commands
def _command(*args: object) -> list[str]:
    """``python -m handflow ARGS`` (numbers and paths as text)."""
    return handflow_command(*(str(a) for a in args))


def _cores() -> int:
    return max(1, os.cpu_count() or 1)


def _exists(path: Path) -> bool:
    return path.exists()


def _complete(summary: Path) -> bool:
    """A MultiHands split is done when its summary exists and does not say ``complete: false``
    (a stopped generation writes one over the parts it finished; rerunning resumes it)."""
    return summary.exists() and bool(json.loads(summary.read_text()).get("complete", True))


def _log(plan: ReportPlan, name: str) -> Path:
    return plan.root / "logs" / f"{name}.log"


def synth_settings(plan: ReportPlan) -> list[str]:
    """The ``handflow synth`` options that define the benchmark's data."""
    test = [] if plan.test_frames is None else ["--test-frames", str(plan.test_frames)]
    return ["--frames", str(plan.frames), *test, "--cameras", str(plan.cameras), "--image-size", str(2 * plan.image_size),
            "--seed", str(plan.data_seed)]


def synth_stages(plan: ReportPlan) -> list[Stage]:
    """``handflow synth`` of the benchmark's data (all cores; ``data_shards`` > 1: one command per
    shard, the last one to finish merges)."""
    n, done = plan.data_shards, partial(_exists, plan.data / "synth_summary.json")
    out = []
    for i in range(n):
        shard = ["--shard", f"{i}/{n}"] if n > 1 else []
        argv = _command("synth", "--out", plan.data, *synth_settings(plan), *shard, "--workers", _cores(),
                                "--no-progress")
        out.append(Stage("data", "synth" + (f" {i}/{n}" if n > 1 else ""), argv, (), (plan.data,),
                         _log(plan, "synth" + (f"-{i}" if n > 1 else "")), done, shard=(i, n) if n > 1 else None))
    return out


def multihands_stages(plan: ReportPlan) -> list[Stage]:
    """MultiHands for the test split (evaluation, N = ``mh_test_num``) and, when a run trains on
    them, the train split (fewer, cheaper annotations), ``mh_shards`` shards each."""
    settings = {"test": ("--num", plan.mh_test_num),
                "train": ("--num", plan.mh_train_num, "--rounds", plan.mh_train_rounds, "--proposals", plan.mh_train_proposals)}
    exp, out = plan.experiment_table, []
    for split, opts in settings.items():
        if split == "train" and not any(exp.runs[r].multihands for r in plan.runs):
            continue
        done = partial(_complete, plan.mh / split / "summary.json")
        for i in range(plan.mh_shards):
            argv = _command("multihands", "--data", plan.data, "--split", split, "--out", plan.mh, *opts,
                                    "--image-size", plan.image_size, "--seed", plan.data_seed, "--device", plan.device,
                                    "--shard", f"{i}/{plan.mh_shards}", "--batch-images", 128, "--no-progress")
            out.append(Stage("multihands", f"multihands {split} {i}/{plan.mh_shards}", argv, (plan.data,), (plan.mh / split,),
                             _log(plan, f"multihands-{split}-{i}"), done, shard=(i, plan.mh_shards)))
    return out


def _train_overrides(plan: ReportPlan, steps: int, minutes: float | None, workers: int, threads: int,
                     val_every: int | None = None) -> list[str]:
    over = [f"train.max_steps={steps}", f"data.num_workers={workers}", f"data.image_size={plan.image_size}",
            f"train.threads={threads}", f"train.max_minutes={'null' if minutes is None else minutes}",
            f"train.ckpt_every={max(100, steps // 10)}", f"train.val_every={val_every or max(steps, 1)}"]
    if plan.device.startswith("cuda"):
        over.append("train.accelerator=gpu")
    return over


def _features_done(plan: ReportPlan) -> bool:
    from handflow.data.features import FEATURES_META  # lazy: the feature reader loads torch; plans of other protocols need none

    path = plan.features / FEATURES_META
    meta = json.loads(path.read_text()) if path.exists() else {}
    return {"train", "val", "test"} <= set(meta.get("splits", {})) and int(meta.get("copies", 1)) == plan.feature_copies


def backbone_stage(plan: ReportPlan) -> Stage:
    """Shared protocol: the one backbone (a ``backbone_kind`` model trained on the ground truth);
    once its features are cached it is fixed."""
    threads = 1 if plan.device.startswith("cuda") else _cores()
    over = _train_overrides(plan, plan.backbone_steps, plan.backbone_minutes, plan.workers, threads,
                            val_every=min(max(500, plan.backbone_steps // 8), plan.backbone_steps))
    argv = _command("train", "--config", plan.preset, "--model", plan.backbone_kind, "--data", plan.data,
                            "--out", plan.backbone_ckpt.parents[1], "--resume", "auto", *over, *plan.extra_overrides)
    return Stage("backbone", "train backbone", argv, (plan.data,), (plan.backbone_ckpt,), _log(plan, "train-backbone"),
                 lambda: _features_done(plan) or training_done(plan.backbone_ckpt, plan.backbone_steps, plan.backbone_minutes),
                 threads=threads)


def features_stage(plan: ReportPlan) -> Stage:
    """Shared protocol: cache the features of the backbone (trained, or ``backbone_from``'s file),
    ``feature_copies`` augmented copies of every training image."""
    copies = ["--copies", plan.feature_copies] if plan.feature_copies != 1 else []
    argv = _command("features", "--checkpoint", plan.backbone_ckpt, "--data", plan.data, "--out", plan.features,
                            *copies, "--device", plan.device, "--workers", plan.workers, "--no-progress")
    return Stage("features", "features", argv, (plan.backbone_ckpt, plan.data), (plan.features,), _log(plan, "features"),
                 lambda: _features_done(plan), threads=_cores())


def train_stage(plan: ReportPlan, name: str, seed: int) -> Stage:
    """The ``handflow train`` command of one run (also written into the report)."""
    spec, out = plan.experiment_table.runs[name], plan.run_dir(name, seed)
    shared, keypoints = plan.protocol == "shared", plan.protocol == "keypoints"
    # heads on cached features and keypoint runs read no image: no loader processes
    workers = 0 if shared or keypoints else plan.workers
    over = _train_overrides(plan, plan.steps, plan.train_minutes, workers, 1) + [f"train.seed={seed}"]
    inputs: tuple[Path, ...] = (plan.data,)
    if shared:
        over += [f"model.backbone_checkpoint={plan.backbone_ckpt}", "model.freeze_backbone=true",
                 f"data.features={plan.features}"]
        if plan.feature_copies != 1:
            over.append(f"data.feature_copies={plan.feature_copies}")
        inputs += (plan.backbone_ckpt, plan.features)
    if keypoints:
        over += ["model.backbone=keypoints", f"data.keypoint_noise_px={plan.keypoint_noise_px}"]
    if spec.multihands:
        over.append(f"data.multihands={plan.mh}")
        inputs += (plan.mh / "train",)
    over += [*spec.overrides, *plan.extra_overrides]
    argv = _command("train", "--config", plan.preset, "--model", spec.kind, "--data", plan.data, "--out", out,
                            "--resume", "auto", *over)
    ckpt = out / "checkpoints" / "last.ckpt"
    return Stage("train", f"train {name} s{seed}", argv, inputs, (ckpt,), _log(plan, f"train-{name}-s{seed}"),
                 lambda: training_done(ckpt, plan.steps, plan.train_minutes))


def eval_stage(plan: ReportPlan, name: str, seed: int) -> Stage:
    """``handflow evaluate`` of one run on the test split; the ``parallel`` evaluations share the
    cores (two 2-thread evaluations on 2 cores took twice their CPU time)."""
    ckpt, out = plan.run_dir(name, seed) / "checkpoints" / "last.ckpt", plan.eval_dir(name, seed)
    # shared protocol: the frozen backbone's cached test features, not the images again
    cached = ("--features", plan.features) if plan.protocol == "shared" else ()
    argv = _command("evaluate", "--checkpoint", ckpt, "--data", plan.data, "--multihands", plan.mh, "--split", "test",
                            "--samples", plan.samples, "--out", out, "--device", plan.device, "--batch-size", 64, *cached)
    return Stage("evaluate", f"evaluate {name} s{seed}", argv, (ckpt, plan.data, plan.mh / "test", *cached[1:]),
                 (out / "per_image.npz", out / "summary.json"), _log(plan, f"eval-{name}-s{seed}"),
                 partial(_exists, out / "summary.json"), threads=max(1, _cores() // max(1, plan.parallel)))


def plan_stages(plan: ReportPlan) -> list[Stage]:
    """Every command of the benchmark, in stage order (the backbone and features only for
    ``protocol="shared"``; no backbone training with ``backbone_from``)."""
    runs = [(n, s) for n in plan.runs for s in plan.seeds]
    trained = [] if plan.backbone_from is not None else [backbone_stage(plan)]
    shared = [*trained, features_stage(plan)] if plan.protocol == "shared" else []
    return [*synth_stages(plan), *multihands_stages(plan), *shared, *(train_stage(plan, n, s) for n, s in runs),
            *(eval_stage(plan, n, s) for n, s in runs)]


def plan_text(plan: ReportPlan, stages: tuple[str, ...] = STAGES, shard: tuple[int, int] | None = None) -> str:
    """The commands of ``stages``, one per line, each stage headed by a ``#`` comment: the
    commands of one stage are independent (a SLURM array, torchrun or GNU parallel may run them
    side by side); a stage starts when the previous one has finished. Each command is followed
    by a comment with its fingerprint, outputs and whether they are already complete."""
    lines = [f"# handflow report plan: {plan.root} ({plan.protocol}); then: handflow report --work {plan.root} --render"]
    by_stage: dict[str, list[Stage]] = {}
    for st in plan_stages(plan):
        by_stage.setdefault(st.stage, []).append(st)
    for name in stages:
        todo = shard_of(by_stage.get(name, []), shard)
        if todo:
            lines.append(f"# stage {name}: {len(todo)} command(s)")
        for st in todo:
            lines += [st.command, f"#   fingerprint {st.fingerprint}; outputs {', '.join(map(str, st.outputs))}"
                      + ("; done" if st.done() else "")]
    return "\n".join(lines)


def shard_of(stages: list[Stage], shard: tuple[int, int] | None) -> list[Stage]:
    """The ``i``-th of ``n`` interleaved shares of ``stages`` (all of them without a shard)."""
    return stages if shard is None else stages[shard[0]::shard[1]]
