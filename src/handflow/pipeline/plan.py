"""The benchmark's settings (:class:`ReportPlan`, saved as ``WORK/plan.json``) and the command
that reproduces them (:func:`plan_command`).

A work folder holds one benchmark: a rerun with other settings that change its outputs is
refused (:func:`save_plan`); the options that only change how it runs (``--parallel``,
``--workers``, shards) may differ between invocations.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from handflow.atomic import write_json
from handflow.errors import InputError
from handflow.fingerprint import refuse_if_different
from handflow.pipeline.experiments import DEFAULT_EXPERIMENT, Experiment, load_experiment

__all__ = ["ReportPlan", "PROTOCOLS", "load_plan", "save_plan", "check_plan", "plan_command", "OPTIONS"]

#: ``end2end``: every run trains its own backbone from images; ``shared``: one backbone, cached
#: features, every run trains its head on them; ``keypoints``: every run conditioned on the 2D
#: keypoint evidence of its image instead of the image (docs/evaluation.md)
PROTOCOLS = ("end2end", "shared", "keypoints")
#: settings that define a work folder's outputs (a rerun must keep them)
DEFINING = ("preset", "frames", "test_frames", "cameras", "image_size", "steps", "samples", "mh_test_num", "mh_train_num",
            "data_seed", "protocol", "backbone_kind", "backbone_steps", "keypoint_noise_px", "experiment", "backbone_from",
            "feature_copies")
#: ``handflow report`` option -> plan field, in the order :func:`plan_command` writes them
OPTIONS = (("--preset", "preset"), ("--frames", "frames"), ("--test-frames", "test_frames"), ("--cameras", "cameras"),
           ("--image-size", "image_size"), ("--steps", "steps"), ("--samples", "samples"), ("--device", "device"),
           ("--parallel", "parallel"), ("--workers", "workers"), ("--mh-shards", "mh_shards"),
           ("--mh-train-num", "mh_train_num"), ("--train-minutes", "train_minutes"), ("--protocol", "protocol"),
           ("--backbone-steps", "backbone_steps"), ("--backbone-minutes", "backbone_minutes"),
           ("--backbone-kind", "backbone_kind"), ("--keypoint-noise-px", "keypoint_noise_px"),
           ("--data-shards", "data_shards"), ("--experiment", "experiment"), ("--backbone-from", "backbone_from"),
           ("--feature-copies", "feature_copies"))


@dataclass
class ReportPlan:
    """Everything the benchmark depends on (saved as ``WORK/plan.json``).

    ``frames`` × ``cameras`` images, split 80/10/10 by frame (``test_frames``: the test split
    gets that many frames instead, train and val unchanged); synthetic images are rendered at
    ``2 × image_size`` and cropped to ``image_size``. ``steps`` training steps per run at the
    preset's batch size, stopped early at ``train_minutes`` of wall time if set. ``parallel``
    runs side by side, each with ``workers`` loader processes; ``data_shards`` and ``mh_shards``
    split ``handflow synth`` and ``handflow multihands`` into that many ``--shard i/n`` commands.
    ``protocol="shared"``: ``backbone_kind`` is trained once for ``backbone_steps`` (capped at
    ``backbone_minutes``), or taken from ``backbone_from`` (a shipped model's name or a
    checkpoint/weights path: nothing is trained; the name is kept here, :attr:`backbone_ckpt`
    resolves it), its features are cached (``feature_copies`` augmented copies of every
    training image), and ``steps`` is then the number of head-training steps of every run.
    ``protocol="keypoints"``: every run is trained with ``model.backbone=keypoints`` and
    ``data.keypoint_noise_px=keypoint_noise_px`` (σ in px at 128 px). ``runs`` are names of
    ``experiment`` (``configs/experiments/<name>.yaml``; empty: all of them).
    """

    work: str
    preset: str = "cpu"
    frames: int = 2500
    test_frames: int | None = None
    cameras: int = 12
    image_size: int = 128
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 12000  # heads and end-to-end runs alike; the cpu preset reaches ~1660 steps in 28 min (docs/training.md)
    samples: int = 100
    runs: tuple[str, ...] = ()
    mh_test_num: int = 100
    mh_train_num: int = 16
    mh_train_rounds: int = 3
    mh_train_proposals: int = 32
    device: str = "cpu"
    parallel: int = 1
    workers: int = 1
    mh_shards: int = 1
    data_seed: int = 0
    train_minutes: float | None = None
    extra_overrides: tuple[str, ...] = ()
    protocol: str = "end2end"
    backbone_kind: str = "deterministic"
    backbone_steps: int = 4000
    backbone_minutes: float | None = None
    keypoint_noise_px: float = 2.0
    experiment: str = DEFAULT_EXPERIMENT
    data_shards: int = 1
    backbone_from: str | None = None
    feature_copies: int = 1

    def __post_init__(self) -> None:
        self.seeds, self.runs = tuple(self.seeds), tuple(self.runs) or tuple(self.experiment_table.runs)
        self.extra_overrides = tuple(self.extra_overrides)

    @property
    def experiment_table(self) -> Experiment:
        return load_experiment(self.experiment)

    @property
    def root(self) -> Path:
        return Path(self.work)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def mh(self) -> Path:
        return self.root / "multihands"

    @property
    def backbone_ckpt(self) -> Path:
        """The checkpoint whose backbone the features and heads use: the file of ``backbone_from``
        (a shipped model's file or the path as given), else the one trained in ``WORK/runs/backbone``."""
        if self.backbone_from is not None:
            from handflow.models.shipped import resolve_weights  # lazy: torch only when a shipped backbone is asked for

            return resolve_weights(self.backbone_from)
        return self.root / "runs" / "backbone" / "checkpoints" / "last.ckpt"

    @property
    def features(self) -> Path:
        return self.root / "features"

    def run_dir(self, name: str, seed: int) -> Path:
        return self.root / "runs" / f"{name}-s{seed}"

    def eval_dir(self, name: str, seed: int) -> Path:
        return self.root / "eval" / f"{name}-s{seed}"


def load_plan(work: str | Path) -> ReportPlan:
    """The plan saved in ``WORK/plan.json`` (its ``work`` set to where it now lies; keys an
    older handflow did not write take their defaults)."""
    d = json.loads((Path(work) / "plan.json").read_text())
    known = {f.name for f in fields(ReportPlan)}
    return ReportPlan(**{**{k: v for k, v in d.items() if k in known}, "work": str(work)})


def check_plan(plan: ReportPlan) -> None:
    """Refuse unknown runs, protocols and backbone kinds, no seeds, cuda without a GPU, and a
    ``backbone_from`` or ``feature_copies`` outside the shared protocol, or a ``backbone_from``
    that names no file or whose backbone the runs cannot take."""
    exp = plan.experiment_table
    unknown = [r for r in plan.runs if r not in exp.runs]
    if unknown:
        raise InputError(f"unknown run(s) {unknown}; known: {list(exp.runs)} (experiment {exp.source})")
    if not plan.seeds:
        raise InputError("at least one seed is needed")
    if plan.protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {plan.protocol!r}; choose one of {list(PROTOCOLS)}")
    if plan.protocol != "shared" and (plan.backbone_from is not None or plan.feature_copies != 1):
        raise InputError("--backbone-from and --feature-copies set the shared protocol's backbone and feature cache: "
                         "add --protocol shared")
    if plan.feature_copies < 1:
        raise InputError(f"--feature-copies {plan.feature_copies}: at least one feature per image")
    if plan.backbone_from is not None:
        _check_backbone_from(plan)
    from handflow.models import model_class  # lazy: torch only when a plan is checked, not when plan.json is read

    for what, kind in [("backbone kind", plan.backbone_kind), *((f"model kind of run {r}", exp.runs[r].kind) for r in plan.runs)]:
        try:
            model_class(kind)
        except ValueError as e:
            raise InputError(f"unknown {what}: {e}") from None
    if plan.device.startswith("cuda"):
        import torch  # lazy: a cuda plan only

        if not torch.cuda.is_available():
            raise InputError("--device cuda requested but torch sees no GPU")


def _check_backbone_from(plan: ReportPlan) -> None:
    """``backbone_from`` names a file (a shipped model or a path) holding a handflow image model
    whose backbone, crop size and hand model are those the plan's runs train with."""
    from handflow.config import load_config  # lazy: torch only when a plan is checked
    from handflow.errors import HandflowError
    from handflow.models.checkpoint import read_checkpoint
    from handflow.models.shipped import shipped_names

    path = plan.backbone_ckpt
    if not path.is_file():
        raise InputError(f"--backbone-from {plan.backbone_from}: no such file and no shipped model of that name "
                         f"(shipped: {shipped_names()})")
    try:
        _, saved = read_checkpoint(path, map_location="meta")
    except HandflowError as e:
        raise InputError(f"--backbone-from {plan.backbone_from}: {e}") from None
    want = load_config(plan.preset, [*plan.extra_overrides, f"data.image_size={plan.image_size}"])
    have = (saved.model.backbone, saved.data.image_size, saved.data.hand_model)
    need = (want.model.backbone, want.data.image_size, want.data.hand_model)
    if have != need:
        raise InputError(f"--backbone-from {plan.backbone_from} has backbone, crop size and hand model {have}, the runs "
                         f"of this plan {need}: choose a matching --preset/--image-size or another --backbone-from")


def save_plan(plan: ReportPlan) -> None:
    """Write ``WORK/plan.json``; refuse when the folder holds a benchmark with other settings."""
    plan.root.mkdir(parents=True, exist_ok=True)
    path, new = plan.root / "plan.json", asdict(plan)
    # The shared comparison (handflow.fingerprint), not check_or_record: plan.json is the plan
    # itself (read back by load_plan and by every stage command), not a {settings, fingerprint}
    # record, and only the DEFINING fields must match; a separate record would refuse (or,
    # unrecorded, not check) every work folder written before it.
    if path.exists():
        old = {**asdict(ReportPlan(work=plan.work, experiment=plan.experiment)), **json.loads(path.read_text())}
        refuse_if_different({k: old[k] for k in DEFINING}, {k: new[k] for k in DEFINING}, str(plan.root),
                            "use another --work folder")

    write_json(path, new)


def plan_command(plan: ReportPlan) -> str:
    """The ``handflow report`` command that reproduces ``plan`` (defaults left out)."""
    default, args = ReportPlan(work=plan.work, experiment=plan.experiment), ["handflow", "report", "--work", plan.work]
    for opt, key in OPTIONS:
        if getattr(plan, key) != (DEFAULT_EXPERIMENT if key == "experiment" else getattr(default, key)):
            args += [opt, str(getattr(plan, key))]
    if plan.seeds != default.seeds:
        args += ["--seeds", ",".join(map(str, plan.seeds))]
    if plan.runs != default.runs:
        args += ["--runs", ",".join(plan.runs)]
    return " ".join(shlex.quote(a) for a in args)
