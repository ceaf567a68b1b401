"""Sharded, resumable, deterministic generation of the synthetic two-hand dataset.

Determinism: every random stream is a ``torch.Generator`` seeded from a hash of
``(seed, split, what, index)`` (:func:`handflow.seeding.stream`): the plan, each capture's cameras, each
subject's shape and skin tones, each sequence's motion, each image's light and background.
No stream depends on another shard's work, so ``--shard i/n`` runs in any order on any
machine and the merged files are byte-identical to an unsharded run.

Plan (:func:`make_plan`): the ``frames`` requested are split over the splits (default
80/10/10 %, every requested split gets at least one frame; ``test_frames`` gives the test
split that many frames instead of its share, leaving the plan of train and val unchanged, so
a bigger test set can be drawn for the same training data), each split is cut into
sequences of 5–20 frames, sequences are grouped into captures of at most
``CAPTURE_MAX_FRAMES`` frames, and each capture is one subject (so splits have disjoint
captures *and* subjects). Sequence ``k`` belongs to shard ``k mod n``. Each capture of a
split is seen by ``cameras_for(split)`` cameras (``--train-cameras`` etc., default ``cameras``):
few views per training frame give many more distinct poses for the same number of images.

Reruns (:mod:`handflow.data.synth.rerun`): the settings are recorded in the output before
any image; the same settings resume, other settings are refused unless ``overwrite``.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from handflow.data.synth import frames
from handflow.data.synth.cameras import dome_cameras
from handflow.data.synth.ih_writer import (
    atomic_write_json,
    merge_shards,
    read_json,
    shard_done,
    split_files,
    write_shard,
    write_skeleton,
)
from handflow.data.synth.plan_types import Backends, SeqPlan  # re-exported
from handflow.data.synth.rerun import SUMMARY_FILE, check_settings, prepare_output, shard_counts
from handflow.data.synth.scenes import TEMPLATES
from handflow.data.synth.settings import SPLIT_FRACTIONS, SynthConfig  # the schema (re-exported)
from handflow.fingerprint import stored_settings
from handflow.hand.collision import collide
from handflow.hand.neuralannot import camera_to_neuralannot
from handflow.hand.registry import load_hand_model
from handflow.render import Mesh, Renderer
from handflow.render.backgrounds import random_background
from handflow.render.shading import random_light, random_skin_tone
from handflow.render.visibility import joint_visibility
from handflow.seeding import stream  # the synthetic data's streams (re-exported: data.synth.stream)

__all__ = [
    "SynthConfig",
    "SeqPlan",
    "Backends",
    "stream",
    "make_plan",
    "default_backends",
    "generate",
    "merge",
    "SPLIT_FRACTIONS",
]

SEQ_LENGTH_RANGE = (5, 20)
CAPTURE_MAX_FRAMES = 60
HIST_BINS = 10


def _split_frames(frames: int, splits: tuple[str, ...], test_frames: int | None = None) -> dict[str, int]:
    """Frames per split: ``frames`` shared by ``SPLIT_FRACTIONS``, then the test split set to
    ``test_frames`` if given (the other splits keep their counts)."""
    for s in splits:
        if s not in SPLIT_FRACTIONS:
            raise ValueError(f"unknown split {s!r}: expected a subset of {list(SPLIT_FRACTIONS)}")
    if frames < len(splits):
        raise ValueError(f"--frames {frames} is fewer than the {len(splits)} requested splits")
    tot = sum(SPLIT_FRACTIONS[s] for s in splits)
    n = {s: max(1, int(math.floor(frames * SPLIT_FRACTIONS[s] / tot))) for s in splits}
    n[splits[0]] += frames - sum(n.values())
    if n[splits[0]] < 1:
        raise ValueError(f"cannot split {frames} frames over {splits}")
    if test_frames is not None:
        if "test" not in splits:
            raise ValueError(f"--test-frames {test_frames} given but the splits {list(splits)} have no test split")
        if test_frames < 1:
            raise ValueError(f"--test-frames must be at least 1, got {test_frames}")
        n["test"] = int(test_frames)
    return n


def make_plan(config: SynthConfig) -> list[SeqPlan]:
    """The deterministic list of sequences (see the module docstring)."""
    g = stream(config.seed, "plan")
    names = sorted(TEMPLATES)
    plan: list[SeqPlan] = []
    subject = 0
    gframe = 0
    for split, n in _split_frames(config.frames, config.splits, config.test_frames).items():
        capture, cap_frames, seq_in_cap = 0, 0, 0
        left = n
        while left > 0:
            L = min(left, int(torch.randint(SEQ_LENGTH_RANGE[0], SEQ_LENGTH_RANGE[1] + 1, (1,), generator=g)))
            if cap_frames + L > CAPTURE_MAX_FRAMES and cap_frames > 0:
                capture, cap_frames, seq_in_cap = capture + 1, 0, 0
                subject += 1
            template = names[int(torch.randint(len(names), (1,), generator=g))]
            idx = len(plan)
            plan.append(SeqPlan(idx, split, capture, subject, f"{seq_in_cap:04d}_{template}", template, L,
                                cap_frames, gframe))
            cap_frames += L
            gframe += L
            seq_in_cap += 1
            left -= L
        subject += 1
    return plan


def default_backends(hand_model: str = "openhand", mano_path: str | None = None) -> Backends:
    """The real handflow modules: the hand model ``hand_model``, collision, the renderer,
    visibility, lights and backgrounds."""
    def make_mesh(vertices: Any, faces: Any, color: Any, part_labels: Any, hand_id: Any) -> Mesh:
        return Mesh(vertices=vertices, faces=faces, color=color, part_labels=part_labels, hand_id=hand_id)

    model = load_hand_model(hand_model, path=mano_path)
    return Backends(model, collide, lambda w, h: Renderer(w, h), make_mesh, joint_visibility,
                    camera_to_neuralannot, random_light, random_skin_tone, random_background)


# ----------------------------------------------------------------------------- running
_WORKER: dict[str, Any] = {}


def _empty_part(config: SynthConfig, shard: tuple[int, int]) -> dict[str, Any]:
    """A shard's partial results of one split, before any sequence: the settings, their
    fingerprint and the shard ``[i, n]`` (resume checks), then the empty lists and maps."""
    return {**stored_settings(config.to_json()), "shard": list(shard), "images": [], "annotations": [],
            "camera": {}, "joint_3d": {}, "mano": {}, "visibility": {}, "stats": {}}


def _add(part: dict[str, Any], res: Any) -> None:
    part["images"] += res.images
    part["annotations"] += res.annotations
    cap = str(res.capture)
    part["joint_3d"].setdefault(cap, {}).update(res.joint_3d)
    part["mano"].setdefault(cap, {}).update(res.mano)
    part["visibility"].update(res.visibility)
    for k, v in res.stats.items():
        if isinstance(v, list):
            part["stats"].setdefault(k, []).extend(v)
        else:
            part["stats"][k] = part["stats"].get(k, 0) + v


def _init_worker(config: SynthConfig, mano_path: str | None, root: str) -> None:
    torch.set_num_threads(1)
    _WORKER.update(config=config, mano_path=mano_path, root=root)


def _worker_run(plan: SeqPlan) -> tuple[Any, dict[str, float]]:
    cfg = _WORKER["config"]
    if "backends" not in _WORKER:  # lazily, once per worker process
        _WORKER["backends"] = default_backends(cfg.hand_model, _WORKER["mano_path"])
        _WORKER["renderer"] = _WORKER["backends"].make_renderer(cfg.image_size, cfg.image_size)
    timers: dict[str, float] = {}
    res = frames.process_sequence(plan, cfg, _WORKER["backends"], Path(_WORKER["root"]), _WORKER["renderer"], timers)
    res.capture = plan.capture  # type: ignore[attr-defined]
    return res, timers


def generate(
    out: Path,
    config: SynthConfig,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    backends: Backends | None = None,
    mano_path: str | None = None,
    progress: bool = True,
    merge_when_done: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate shard ``shard = (i, n)`` of the dataset into ``out``; merge when every shard
    is present. The settings are recorded in ``out`` before any image
    (:mod:`handflow.data.synth.rerun`); rerunning with the same settings skips a finished
    shard and resumes an unfinished one. ``workers``, ``progress`` and ``backends`` do not
    change the bytes and may differ between runs.

    Args:
        overwrite: delete the dataset already in ``out`` (only the files synth wrote), then
            generate afresh; only with ``n == 1``.

    Returns:
        ``{"skipped": bool, "timers": {stage: seconds}, "images": int, "summary": dict | None,
        "cleared": files of an earlier dataset deleted by overwrite}``.

    Raises:
        SettingsMismatch: ``out`` holds a dataset of other settings (or another shard count),
            or synth's files without a settings record; nothing is written.
        InputError: ``overwrite`` with ``n > 1``.
    """
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"invalid shard {i}/{n}: need 0 <= i < n")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    cleared = prepare_output(root, config, n, overwrite)
    cfg = config.to_json()
    timers: dict[str, float] = {}
    n_images = 0
    skipped = shard_done(root, list(config.splits), i, n, cfg)
    if not skipped:
        plan = [p for p in make_plan(config) if p.index % n == i]
        parts = {s: _empty_part(config, shard) for s in config.splits}
        total = sum(p.length * config.cameras_for(p.split) for p in plan)
        bar = _progress(total, f"synth {i}/{n}", progress)
        if workers > 1 and backends is None:
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, _init_worker, (config, mano_path, str(root))) as pool:
                results = pool.imap(_worker_run, plan)
                for p, (res, tm) in zip(plan, results):
                    _add(parts[p.split], res)
                    _merge_timers(timers, tm)
                    bar.update(p.length * config.cameras_for(p.split))
        else:
            torch.set_num_threads(1)
            bk = backends if backends is not None else default_backends(config.hand_model, mano_path)
            renderer = bk.make_renderer(config.image_size, config.image_size)
            for p in plan:
                res = frames.process_sequence(p, config, bk, root, renderer, timers)
                res.capture = p.capture  # type: ignore[attr-defined]
                _add(parts[p.split], res)
                bar.update(p.length * config.cameras_for(p.split))
        bar.close()
        for p in plan:  # cameras of every capture this shard touched
            cams = dome_cameras(config.cameras_for(p.split), config.image_size,
                                stream(config.seed, p.split, "capture", p.capture))
            parts[p.split]["camera"][str(p.capture)] = frames.camera_json(cams)
        for s in config.splits:
            n_images += len(parts[s]["images"])
            write_shard(root, s, i, n, parts[s])
    summary = None
    if merge_when_done and all(shard_done(root, list(config.splits), j, n, cfg) for j in range(n)):
        summary = merge(root, n, config)
    return {"skipped": skipped, "timers": timers, "images": n_images, "summary": summary, "cleared": cleared}


def _merge_timers(acc: dict[str, float], t: dict[str, float]) -> None:
    for k, v in t.items():
        acc[k] = acc.get(k, 0.0) + v


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="img")


def _histogram(values: list[float]) -> dict[str, list]:
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def merge(root: Path, n: int, config: SynthConfig) -> dict[str, Any]:
    """Join the ``n`` shards of every split into the real files, write ``skeleton.txt`` and
    ``synth_summary.json`` (deterministic: no timings). Returns the summary.

    Raises:
        SettingsMismatch: ``root`` records other settings than ``config``, or its parts another ``n``.
    """
    root = Path(root)
    check_settings(root, config, n, record=False)
    cfg = config.to_json()
    write_skeleton(root)
    per_split: dict[str, Any] = {}
    tot: dict[str, Any] = {}
    for s in config.splits:
        st = merge_shards(root, s, n, cfg)
        data = read_json(split_files(root, s)["data"])
        per_split[s] = {"frames": int(st.get("frames", 0)), "images": len(data["images"]),
                        "sequences": int(st.get("sequences", 0)),
                        "captures": len({im["capture"] for im in data["images"]}),
                        "subjects": len({im["subject"] for im in data["images"]})}
        for k, v in st.items():
            tot[k] = tot.get(k, [] if isinstance(v, list) else 0) + v
    occ = tot.get("occluded_fraction", [])
    images = sum(p["images"] for p in per_split.values())
    summary = {
        "frames": sum(p["frames"] for p in per_split.values()),
        "images": images,
        "cameras": config.cameras,
        **({"cameras_per_split": {s: config.cameras_for(s) for s in config.splits}}
           if any(getattr(config, f"{s}_cameras") is not None for s in SPLIT_FRACTIONS) else {}),
        "image_size": config.image_size,
        "seed": config.seed,
        "hand_model": config.hand_model,
        "splits": per_split,
        **{k: int(tot.get(k, 0)) for k in ("collision_rejections", "distance_rejections", "sequence_rejections",
                                           "static_fallbacks", "dropped_views")},
        "occluded_joint_fraction": {"mean": float(np.mean(occ)) if occ else 0.0, "histogram": _histogram(occ)},
        "hand_occludes_other_fraction": float(tot.get("hand_occlusion_images", 0)) / max(images, 1),
    }
    atomic_write_json(root / SUMMARY_FILE, summary)
    return summary


def find_shard_count(root: Path, splits: tuple[str, ...]) -> int:
    """The shard count ``n`` used in ``root`` (from the ``.shards`` file names)."""
    counts = shard_counts(root, splits)
    if not counts:
        raise FileNotFoundError(f"no shard files under {root}/annotations/<split>/.shards: run `handflow synth` first")
    if len(counts) > 1:
        raise ValueError(f"{root} holds shards of several counts {sorted(counts)}: delete the stale .shards files")
    return counts.pop()
