"""``handflow evaluate``: every metric of the paper for one checkpoint on one split.

Per image: the z = 0 estimate and ``S`` samples (:meth:`HandPoseModel.predict`, backbone
once), decoded to camera-frame joints (mm) in one batched call (joints only, no meshes), then
(``per_image.py``)

- single-annotation MPJPE of the z = 0 estimate against the ground truth (RR, RRR, Global,
  and RR* on the joints occluded in the image) and of the best of the ``S`` samples;
- the sample spread (mean per-joint RMS deviation of the samples, mm);
- with MultiHands annotations: min / max MPJPE of the z = 0 estimate over the plausible
  annotations (the ground truth counted as one of them: it is plausible by definition) and
  the MMD between the samples and those annotations, per alignment.

The split is processed in chunks of ``chunk_images`` images, each written atomically under
``out/chunks/``; a rerun skips finished chunks. Chunk ``c`` draws its samples from its own CPU
generator seeded ``seed * SEED_STRIDE + c``, so the results do not depend on where a run was
resumed (they do depend on ``batch_size``, which splits the chunk's random stream).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import handflow
from handflow.atomic import save_npz
from handflow.data import InterHandDataset
from handflow.errors import HandflowError
from handflow.evaluation.per_image import ALIGNS, COLUMNS, MH_COLUMNS, gather_annotations, image_metrics
from handflow.evaluation.summary import atomic_text, column_stats, summary_markdown, write_summary
from handflow.fingerprint import mismatch_message, settings_diff
from handflow.metrics import DEFAULT_BANDWIDTHS
from handflow.models import decode_joints
from handflow.multihands import load as load_multihands

__all__ = ["evaluate", "RunMismatch", "checkpoint_identity", "SEED_STRIDE", "META", "COLUMNS", "ALIGNS",
           "image_metrics", "summary_markdown"]

log = logging.getLogger(__name__)

#: image-identifying columns of per_image.npz
META = ("image_id", "capture", "seq", "camera", "frame")
#: generator seed of chunk c: seed * SEED_STRIDE + c
SEED_STRIDE = 1_000_003
#: run.json keys that must match to resume (the others only warn)
RUN_KEYS = ("checkpoint_identity", "data", "split", "multihands", "samples", "seed", "images", "chunk_images")
#: run.json keys that may change on resume, with a warning once chunks exist
SOFT_KEYS = ("batch_size", "device")


class RunMismatch(HandflowError, ValueError):
    """``out`` holds an evaluation made with other settings."""


def checkpoint_identity(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a checkpoint file (independent of its path and mtime)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


def _check_inputs(checkpoint: Path, data: Path, multihands: Path | None, samples: int, batch_size: int,
                  chunk_images: int, limit: int | None, device: str) -> None:
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples} (pass --samples N with N >= 1; the paper uses 100)")
    for name, v in (("batch_size", batch_size), ("chunk_images", chunk_images)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint} (pass --checkpoint RUN/checkpoints/last.ckpt)")
    if not data.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {data} (pass --data DIR holding images/ and annotations/)")
    if multihands is not None and not multihands.is_dir():
        raise FileNotFoundError(f"MultiHands folder not found: {multihands} (generate it with `handflow multihands "
                                f"--data {data} --split SPLIT --out {multihands}`, or leave out --multihands)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no GPU (pass --device cpu)")


def _open_dataset(data: Path, split: str, cfg: Any, load_images: bool = True) -> Any:
    try:
        return InterHandDataset(data, split, cfg.data.image_size, hand_model=cfg.data.hand_model,
                                mano_path=cfg.data.mano_path, augment=False, load_images=load_images)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"split {split!r} not found in {data} ({e}); pass --split with a split the "
                                "dataset has (train, val, test)") from None


def _with_features(ds: Any, folder: Path, split: str, module: Any) -> Any:
    """``ds`` (opened without images) with each item's cached feature of ``split`` from ``folder``,
    refused in one line unless the cache was made by ``module``'s backbone from this dataset."""
    from handflow.data.features import FeatureDataset, check_backbone, load_split_features

    check_backbone(folder, module.model.backbone, "this checkpoint's",
                   "evaluate without --features, or run `handflow features` with this checkpoint")
    feats, ids = load_split_features(folder, split)
    return FeatureDataset(ds, feats, ids)


def _open_multihands(multihands: Path, split: str, image_ids: np.ndarray) -> Any:
    """MultiHands records of ``split``; raises when they share no image with the data, warns
    with counts when only some images have annotations."""
    try:
        records = load_multihands(multihands, split)
    except FileNotFoundError as e:
        have = sorted(p.name for p in multihands.iterdir() if p.is_dir())
        raise FileNotFoundError(f"no MultiHands annotations for split {split!r} in {multihands} (it holds {have}): "
                                f"{e}") from None
    n = sum(int(i) in records for i in image_ids)
    if n == 0:
        raise ValueError(f"the MultiHands annotations in {multihands}/{split} ({len(records)} images) share no image id "
                         f"with the {len(image_ids)} images evaluated: annotations of another dataset or split? "
                         "Pass the --multihands folder generated from this --data")
    if n < len(image_ids):
        msg = (f"only {n} of the {len(image_ids)} images evaluated have MultiHands annotations in {multihands}/{split}: "
               "min/max MPJPE and MMD are over those (NaN for the others)")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
    return records


def _prepare_out(out: Path, run: dict[str, Any], overwrite: bool) -> Path:
    """Check ``out/run.json`` against ``run``, clear it on ``overwrite``; returns ``out/chunks``."""
    out.mkdir(parents=True, exist_ok=True)
    chunks = out / "chunks"
    path = out / "run.json"
    if overwrite:
        if chunks.exists():
            for p in chunks.glob("*.npz"):
                p.unlink()
        for name in ("per_image.npz", "summary.json", "summary.csv", "summary.md"):
            (out / name).unlink(missing_ok=True)
    elif path.exists():
        old = json.loads(path.read_text())
        # the shared comparison (handflow.fingerprint); the policy is evaluation's own: RUN_KEYS
        # must match, SOFT_KEYS only warn (and only once chunks exist), the rest may change
        diff = settings_diff({k: old.get(k) for k in RUN_KEYS}, {k: run[k] for k in RUN_KEYS})
        if diff:
            raise RunMismatch(mismatch_message(f"{out} (an evaluation)", diff, "use a fresh --out, or --overwrite to discard it"))
        soft = settings_diff({k: old.get(k) for k in SOFT_KEYS}, {k: run[k] for k in SOFT_KEYS})
        if soft and any(chunks.glob("chunk-*.npz")):
            warnings.warn(f"resuming with other settings: {mismatch_message(str(out), soft, 'the remaining chunks')} "
                          "draw other samples / round differently than an uninterrupted run would", stacklevel=3)
    elif chunks.exists() and any(chunks.glob("chunk-*.npz")):
        raise RunMismatch(f"{out}/chunks holds results but no run.json: use a fresh --out, or --overwrite")
    chunks.mkdir(exist_ok=True)
    atomic_text(path, json.dumps(run, indent=1))
    return chunks


def _chunk_batches(pending: list[int], M: int, chunk_images: int, batch_size: int) -> Iterator[list[int]]:
    for c in pending:
        lo, hi = c * chunk_images, min(M, (c + 1) * chunk_images)
        for a in range(lo, hi, batch_size):
            yield list(range(a, min(hi, a + batch_size)))


def _batch_columns(module: Any, batch: dict[str, Any], samples: int, g: torch.Generator, size: int, device: str,
                   records: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-image columns of one collated batch (B images); ``seed`` also fixes the keypoint
    evidence's noise (``model.backbone=keypoints``)."""
    with torch.no_grad():
        # images -> backbone, or (model.backbone=keypoints) the 2D evidence with the noise fixed per (image id, seed)
        pred = module.model.predict_features(module.batch_features(batch, noise_seed=seed), samples, g)
        K = batch["K"].to(device, torch.float32)
        y = torch.cat([pred["z0"][:, None], pred["samples"]], 1)  # (B, 1+S, 218)
        J = decode_joints(y, K, size, module.hand_model)  # (B, 1+S, 42, 3)
    return joint_columns(J, batch, device, records)


def joint_columns(J: torch.Tensor, batch: dict[str, Any], device: str, records: Any) -> dict[str, np.ndarray]:
    """Per-image columns of one collated batch from its decoded predictions ``J``
    (B, 1+S, 42, 3) mm: the z = 0 estimate first, then the S samples. ``records``: the
    MultiHands records of the split, or None."""
    ids = [int(i) for i in batch["meta"]["image_id"]]
    gt, valid = batch["joints_cam"].to(device, torch.float64), batch["joint_valid"].to(device).bool()
    ann = ok = None
    has = torch.zeros(len(ids), dtype=torch.bool)
    if records is not None:
        ann, ok, has = gather_annotations(records, ids, gt, valid)
        ann, ok = ann.to(device), ok.to(device)
    m = image_metrics(J[:, 0], J[:, 1:], gt, valid, batch["visible"].to(device).bool(), ann, ok)
    hasn = has.numpy()
    cols = {k: m[k].cpu().numpy() for k in COLUMNS}
    for k in MH_COLUMNS:
        cols[k] = np.where(hasn, cols[k], np.nan)
    cols["has_multihands"] = hasn
    cols["num_annotations"] = np.where(hasn, ok.sum(1).cpu().numpy() - 1, 0).astype(np.int64) if ok is not None \
        else np.zeros(len(ids), np.int64)
    for k in META:
        v = batch["meta"][k]
        cols[k] = np.asarray([str(x) for x in v]) if k in ("seq", "camera") else np.asarray([int(x) for x in v], np.int64)
    return cols


def evaluate(checkpoint: str | Path, data: str | Path, out: str | Path, split: str = "test",
             multihands: str | Path | None = None, samples: int = 100, batch_size: int = 32, device: str = "cpu",
             seed: int = 0, limit: int | None = None, num_workers: int = 0, chunk_images: int = 512,
             progress: bool = True, overwrite: bool = False, features: str | Path | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (any model kind) on ``data/split``.

    Writes into ``out``: ``per_image.npz`` (M images in dataset order; columns in
    ``docs/evaluation.md``), ``summary.json``, ``summary.csv``, ``summary.md``, plus ``run.json``
    and ``chunks/`` for resuming. A rerun with the same settings continues where it stopped.

    Args:
        checkpoint: a ``handflow train`` checkpoint.
        data: dataset root (InterHand2.6M layout, real or synthetic).
        out: output folder.
        split: split to evaluate.
        multihands: ``handflow multihands`` output root; without it the min/max MPJPE and
            MMD columns are NaN.
        samples: S samples per image.
        batch_size: images per forward pass.
        device: ``"cpu"`` or ``"cuda[:i]"`` (network in float32, metrics in float64).
        seed: sampling seed.
        limit: evaluate only the first ``limit`` images.
        num_workers: data-loader processes.
        chunk_images: images per resumable chunk.
        progress: show a progress bar.
        overwrite: discard an earlier evaluation in ``out`` made with other settings.
        features: a ``handflow features`` cache made by this checkpoint's (frozen) backbone: the
            split's cached features replace decoding the images and running the backbone (the
            shared-feature protocol, where they are the same numbers; checked by the backbone's
            weight digest and the image ids).

    Returns:
        The ``summary.json`` dict: settings, counts and ``metrics[column] = {mean, std, sem,
        count}`` over the images where the column is defined.

    Raises:
        FileNotFoundError: missing checkpoint, dataset, split or MultiHands folder / split.
        RunMismatch: ``out`` holds an evaluation with other settings (fresh ``out`` or ``overwrite``).
        ValueError: ``samples < 1``, no GPU for ``cuda``, or MultiHands annotations of other data.
    """
    # lazy: handflow.training needs Lightning (the [train] extra); handflow.evaluation imports without it
    from handflow.training import load_checkpoint

    checkpoint, data, out = Path(checkpoint), Path(data), Path(out)
    mh = None if multihands is None else Path(multihands)
    _check_inputs(checkpoint, data, mh, samples, batch_size, chunk_images, limit, device)
    module, cfg = load_checkpoint(checkpoint)
    module = module.to(device).eval()
    # keypoints, or cached features: no image decoded
    ds = _open_dataset(data, split, cfg, load_images=not module.model.uses_keypoints and features is None)
    M = len(ds) if limit is None else min(limit, len(ds))
    if M == 0:
        raise ValueError(f"split {split!r} of {data} has no image")
    records = None if mh is None else _open_multihands(mh, split, np.asarray(ds.index.a["img_id"][:M]))
    if features is not None:
        ds = _with_features(ds, Path(features), split, module)
    run = {"checkpoint": str(checkpoint.resolve()), "checkpoint_identity": checkpoint_identity(checkpoint),
           "data": str(data.resolve()), "split": split, "multihands": None if mh is None else str(mh.resolve()),
           "samples": samples, "seed": seed, "images": M, "chunk_images": chunk_images, "batch_size": batch_size,
           "device": device, **({} if features is None else {"features": str(Path(features).resolve())})}
    chunks = _prepare_out(out, run, overwrite)
    n_chunks = math.ceil(M / chunk_images)
    path = [chunks / f"chunk-{c:05d}.npz" for c in range(n_chunks)]
    pending = [c for c in range(n_chunks) if not path[c].exists()]
    bar = tqdm(total=M, desc=f"evaluate {split}", unit="img", disable=not progress, dynamic_ncols=True)
    bar.update(M - sum(min(M, (c + 1) * chunk_images) - c * chunk_images for c in pending))
    loader = torch.utils.data.DataLoader(ds, batch_sampler=list(_chunk_batches(pending, M, chunk_images, batch_size)),
                                         num_workers=num_workers, pin_memory=device.startswith("cuda"))
    it = iter(loader)
    for c in pending:
        g = torch.Generator().manual_seed(seed * SEED_STRIDE + c)
        n = min(M, (c + 1) * chunk_images) - c * chunk_images
        parts: list[dict[str, np.ndarray]] = []
        while sum(len(p["image_id"]) for p in parts) < n:
            parts.append(_batch_columns(module, next(it), samples, g, cfg.data.image_size, device, records, seed))
            bar.update(len(parts[-1]["image_id"]))
        save_npz(path[c], {k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    bar.close()
    return _finish(out, run, path, cfg, device)


def _finish(out: Path, run: dict[str, Any], paths: list[Path], cfg: Any, device: str) -> dict[str, Any]:
    parts = []
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            parts.append({k: z[k] for k in z.files})
    per = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    save_npz(out / "per_image.npz", per)
    dev_name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    summary = {"model_kind": cfg.model.kind,
               **{k: run[k] for k in ("checkpoint", "data", "split", "multihands", "samples", "seed")},
               "num_images": int(len(per["image_id"])), "num_images_multihands": int(per["has_multihands"].sum()),
               "device": dev_name, "hand_model": cfg.data.hand_model, "image_size": cfg.data.image_size,
               "ground_truth_in_annotations": True, "mmd_bandwidths_mm": [float(b) for b in DEFAULT_BANDWIDTHS],
               "handflow_version": handflow.__version__,
               "metrics": {k: column_stats(per[k]) for k in COLUMNS}}
    write_summary(out, summary)
    return summary
