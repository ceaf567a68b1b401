"""Driver of ``handflow multihands``: targets from a dataset split, parts, shards, resume.

The split's images with hand-model parameters are sorted by image id and cut into *parts* of
``part_size`` images; shard ``i/n`` processes parts ``c`` with ``c % n == i``. Every part is
generated from its own seed (``SeedSequence([seed, part, batch])``), so its content does not
depend on the sharding, and written atomically (:func:`handflow.multihands.io.write_part`): a
rerun skips finished parts, a killed run leaves no half-written part visible.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from handflow.config.settings import fingerprint, parse_shard, to_dict  # parse_shard: re-exported
from handflow.constants import NUM_HAND_JOINTS, NUM_JOINTS, PARAM_DIM, SIDES
from handflow.data import InterHandDataset
from handflow.fingerprint import check_stored, matches_stored, stored_settings
from handflow.geometry.camera import project
from handflow.hand.registry import load_hand_model
from handflow.multihands.checks import default_pixel_threshold, prior_threshold
from handflow.multihands.diagnostics import summarize
from handflow.multihands.engine import (
    CriterionStats,
    EngineConfig,
    Targets,
    VisibilityFn,
    joints_two_hands,
    run_batch,
    state_from_params,
)
from handflow.multihands.io import load, part_name, read_part_meta, write_json_atomic, write_part
from handflow.multihands.perturb import PerturbConfig
from handflow.render.visibility import joint_visibility_batch

__all__ = [
    "GenerateConfig",
    "targets_from_items",
    "dataset_targets",
    "default_visibility",
    "generate",
    "parse_shard",
    "PART_FIX",
]

#: the fix named when a finished part was made with other settings
PART_FIX = "use another --out or delete it"


@dataclass
class GenerateConfig:
    """Settings of one MultiHands run (defaults and reasoning: docs/multihands.md).

    Attributes:
        num: N, annotations kept per image (the ground truth is stored apart, not counted).
        rounds: perturb-check rounds.
        proposals_per_image: proposals per image and round.
        pixel_threshold: ``T`` in crop pixels; None = 2 % of ``image_size``.
        prior_quantile: criterion 3 rejects articulations less likely than this quantile of
            the prior's own samples.
        seed: random seed.
        image_size: crop side ``S`` of the targets (pixels).
        hand_model: ``"openhand"`` or ``"mano"``.
        batch_images: images checked together in one vectorized batch.
        part_size: images per part folder.
        perturb: perturbation scales.
    """

    num: int = EngineConfig.num  # the search's own defaults, written once (engine.EngineConfig)
    rounds: int = EngineConfig.rounds
    proposals_per_image: int = EngineConfig.proposals_per_image
    pixel_threshold: float | None = None
    prior_quantile: float = 0.01
    seed: int = 0
    image_size: int = 128
    hand_model: str = "openhand"
    batch_images: int = 32
    part_size: int = 256
    perturb: PerturbConfig = field(default_factory=PerturbConfig)

    def __post_init__(self) -> None:
        for k in ("num", "rounds", "proposals_per_image", "image_size", "batch_images", "part_size"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"GenerateConfig.{k} must be >= 1, got {getattr(self, k)}")
        if not 0.0 <= self.prior_quantile < 1.0:
            raise ValueError(f"prior_quantile must be in [0, 1), got {self.prior_quantile}")
        if self.pixel_threshold is not None and not self.pixel_threshold > 0:
            raise ValueError(f"pixel_threshold must be > 0 pixels, got {self.pixel_threshold}")

    @property
    def threshold_px(self) -> float:
        return default_pixel_threshold(self.image_size) if self.pixel_threshold is None else float(self.pixel_threshold)

    def to_json(self) -> dict[str, Any]:
        """The record stored in every part's meta (and fingerprinted)."""
        return to_dict(self)

    def fingerprint(self) -> str:
        """Hash of every setting that changes the output (a resumed run must match it)."""
        return fingerprint(self)


# ----------------------------------------------------------------------------- targets
def targets_from_items(items: Iterable[dict[str, Any]], image_size: int) -> Targets:
    """Ground truth of the items that have hand-model parameters, sorted by image id.

    Args:
        items: dicts with the keys of a ``handflow.data.InterHandDataset`` item (the image is
            not needed): ``y`` (218,), ``K`` (3,3), ``joints_2d`` (42,2), ``joint_valid`` (42,),
            ``visible`` (42,), ``has_params``, ``meta["image_id"]``.
        image_size: crop side S the items were made for.
    """
    rows = []
    for it in items:
        missing = [k for k in ("y", "K", "joints_2d", "joint_valid", "visible", "has_params", "meta") if k not in it]
        if missing:
            raise KeyError(f"dataset item lacks {missing}: MultiHands needs the InterHandDataset item keys")
        if not bool(it["has_params"]):
            continue
        y = torch.as_tensor(it["y"], dtype=torch.float64)
        if y.shape != (PARAM_DIM,) or not bool(torch.isfinite(y).all()):
            raise ValueError(f"image {it['meta'].get('image_id')}: y must be a finite ({PARAM_DIM},) vector")
        rows.append(it)
    rows.sort(key=lambda it: int(it["meta"]["image_id"]))
    if not rows:
        return Targets(torch.zeros(0, dtype=torch.long), torch.zeros(0, PARAM_DIM), torch.zeros(0, 3, 3), image_size,
                       torch.zeros(0, NUM_JOINTS, 2), torch.zeros(0, NUM_JOINTS, dtype=torch.bool),
                       torch.zeros(0, NUM_JOINTS, dtype=torch.bool))

    def stack(k: str, dt: torch.dtype) -> Tensor:
        return torch.stack([torch.as_tensor(np.asarray(it[k])).to(dt) for it in rows])

    valid, vis = stack("joint_valid", torch.bool), stack("visible", torch.bool)
    return Targets(
        image_ids=torch.tensor([int(it["meta"]["image_id"]) for it in rows], dtype=torch.long),
        params=stack("y", torch.float32),
        K=stack("K", torch.float32),
        size=image_size,
        gt_2d=stack("joints_2d", torch.float32),
        gt_visible=valid & vis,
        gt_occluded=valid & ~vis,
    )


def _annotation_items(dataset: Any) -> Iterable[dict[str, Any]]:
    """Items without decoding images when the dataset offers it (``annotation(i)``)."""
    getter = getattr(dataset, "annotation", None)
    for i in range(len(dataset)):
        yield getter(i) if callable(getter) else dataset[i]


def dataset_targets(data: str | Path, split: str, image_size: int, hand_model: str = "openhand") -> Targets:
    """Targets of a dataset split on disk (real or synthetic InterHand2.6M layout)."""
    ds = InterHandDataset(data, split, image_size, hand_model=hand_model, augment=False)
    return targets_from_items(_annotation_items(ds), image_size)


# ----------------------------------------------------------------------------- visibility
#: scenes per visibility call: the PyTorch rasterizer's buffers stay cache-sized (128 px, one
#: CPU thread: 13.7 ms per scene in batches of 512, ~4-5 ms in batches of 8-128)
VIS_CHUNK = 32


def default_visibility() -> VisibilityFn:
    """Adapter from :func:`handflow.render.visibility.joint_visibility_batch` to the engine's
    :data:`~handflow.multihands.engine.VisibilityFn`."""
    try:
        takes_query = "query" in inspect.signature(joint_visibility_batch).parameters
    except (TypeError, ValueError):
        takes_query = False

    def vis(verts: Tensor, faces: list[Tensor], joints: Tensor, K: Tensor, hw: tuple[int, int],
            query: Tensor | None = None) -> Tensor:
        parts = []
        for a in range(0, verts.shape[0], VIS_CHUNK):
            b = a + VIS_CHUNK
            extra = {"query": [query[a:b, 0], query[a:b, 1]]} if takes_query and query is not None else {}
            Kc, hwc = K[a:b], hw
            if query is not None:  # the common window first, then (if supported) only the joints' own windows
                Kc, hwc = query_crop(joints[a:b], query[a:b], K[a:b], hw)
            out = joint_visibility_batch([verts[a:b, 0], verts[a:b, 1]], faces, [joints[a:b, 0], joints[a:b, 1]],
                                         Kc, hwc, **extra)
            if isinstance(out, (list, tuple)):
                out = torch.stack(list(out), 1)
            parts.append(out.reshape(-1, 2, NUM_HAND_JOINTS))
        if not parts:
            return torch.zeros(0, 2, NUM_HAND_JOINTS, dtype=torch.bool, device=joints.device)
        return torch.cat(parts)

    return vis


def query_crop(joints: Tensor, query: Tensor, K: Tensor, hw: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
    """Smallest common window (inside the image) holding the 3×3 pixel neighbourhoods of every
    queried joint, as shifted intrinsics and a size.

    The visibility rule (``handflow.render.visibility``) reads, per joint, only the z-buffer in
    the 3×3 window around its pixel (clamped to the image) and tests ``0 ≤ u < W``; a z-buffer
    pixel does not depend on other pixels. Rasterizing just this window therefore gives the
    same answer for every queried joint (tested), at a fraction of the cost. Answers for the
    other joints are meaningless.

    Args:
        joints: (P, 2, 21, 3) camera frame; query: (P, 2, 21) bool; K: (P, 3, 3); hw: (H, W).

    Returns:
        shifted K (P, 3, 3) and the window size (h, w).
    """
    H, W = hw
    uv = joints[..., :2] / joints[..., 2:].clamp_min(1e-6) * K[:, None, None, [0, 1], [0, 1]] + K[:, None, None, [0, 1], 2]
    pix = uv.floor().clamp(-2, max(H, W) + 1)
    lim = torch.tensor([W - 1, H - 1], dtype=pix.dtype, device=pix.device)
    lo = torch.minimum((pix - 1).clamp_min(0), lim)  # window corners clamped like the rule
    hi = torch.minimum((pix + 1).clamp_min(0), lim)
    q = query[..., None].expand_as(lo)
    big = float(max(H, W))
    lo = torch.where(q, lo, big).flatten(1, 2).amin(1)  # (P, 2)
    hi = torch.where(q, hi, -1.0).flatten(1, 2).amax(1)
    has = query.flatten(1).any(1)
    lo = torch.where(has[:, None], lo, torch.zeros_like(lo))
    hi = torch.where(has[:, None], hi, torch.zeros_like(hi))
    size = (hi - lo + 1).amax(0)  # common (w, h)
    w, h = int(size[0]), int(size[1])
    x0 = torch.minimum(lo[:, 0], torch.tensor(float(W - w), device=lo.device))
    y0 = torch.minimum(lo[:, 1], torch.tensor(float(H - h), device=lo.device))
    Kc = K.clone()
    Kc[:, 0, 2] -= x0.to(K.dtype)
    Kc[:, 1, 2] -= y0.to(K.dtype)
    return Kc, (h, w)


# ----------------------------------------------------------------------------- driver
def _batch_seed(seed: int, part: int, batch: int) -> int:
    # shifted as a Python int: NumPy 1.x refuses uint64 >> int (same value as NumPy 2's uint64 shift)
    return int(np.random.SeedSequence([seed, part, batch]).generate_state(1, dtype=np.uint64)[0]) >> 1


def _run_part(model: Any, targets: Targets, cfg: GenerateConfig, ecfg: EngineConfig, vis: VisibilityFn,
              part: int, device: torch.device,
              on_images: Callable[[int], None]) -> tuple[dict[str, np.ndarray], CriterionStats, dict[str, float]]:
    M, N = len(targets), cfg.num
    params = np.full((M, N, PARAM_DIM), np.nan, np.float32)
    joints = np.full((M, N, NUM_JOINTS, 3), np.nan, np.float32)
    count = np.zeros(M, np.int32)
    stats = CriterionStats()
    for b, s in enumerate(range(0, M, cfg.batch_images)):
        sub = targets.index(slice(s, s + cfg.batch_images)).to(device)
        g = torch.Generator().manual_seed(_batch_seed(cfg.seed, part, b))
        res, st = run_batch(model, sub, ecfg, vis, g)
        stats.add(st)
        for k, r in enumerate(res):
            n = len(r.params)
            count[s + k] = n
            params[s + k, :n] = r.params.numpy()
            joints[s + k, :n] = r.joints.numpy()
        on_images(len(sub))
    with torch.no_grad():
        t = targets.to(device)
        gt_joints = joints_two_hands(model, state_from_params(t.params, t.K, t.size))
        fit_px = (project(gt_joints, t.K) - t.gt_2d).norm(dim=-1)[t.gt_visible].float().cpu()
    arrays = dict(image_ids=targets.image_ids.numpy().astype(np.int64), count=count, params=params, joints=joints,
                  gt_params=targets.params.numpy().astype(np.float32),
                  gt_joints=gt_joints.float().cpu().numpy(), gt_visible=targets.gt_visible.numpy(),
                  K=targets.K.numpy().astype(np.float32))
    # how far the ground-truth parameters' projection is from the annotated 2D joints (visible)
    stats_fit = {"mean": float(fit_px.mean()) if fit_px.numel() else 0.0,
                 "max": float(fit_px.max()) if fit_px.numel() else 0.0}
    return arrays, stats, stats_fit


def generate(
    out: str | Path,
    split: str,
    cfg: GenerateConfig,
    targets: Targets,
    shard: tuple[int, int] = (0, 1),
    device: str = "cpu",
    model: Any = None,
    visibility: VisibilityFn | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the MultiHands annotations of one split (this shard's parts).

    Args:
        out: output root; parts go to ``out/<split>/``.
        split: split name (folder name).
        cfg: settings.
        targets: ground truth of the split (:func:`dataset_targets` or :func:`targets_from_items`).
        shard: ``(i, n)``: this process writes parts ``c`` with ``c % n == i``.
        device: ``"cpu"`` or ``"cuda"``.
        model: hand model (default: ``load_hand_model(cfg.hand_model)``).
        visibility: batched visibility (default: :func:`default_visibility`).
        progress: show a progress bar.

    Returns:
        ``{"written": [...], "skipped": [...], "complete": bool, "meta": split meta}``.

    Raises:
        SettingsMismatch: a finished part in ``out`` was made with other settings or for another
            number of images (a ``ValueError``): one line naming the part, the settings that differ,
            both fingerprints and :data:`PART_FIX`.
    """
    i_shard, n_shards = shard
    dev = torch.device(device)
    if model is None:
        model = load_hand_model(cfg.hand_model)
    model = model.to(dev)
    vis = default_visibility() if visibility is None else visibility
    if targets.size != cfg.image_size:
        raise ValueError(f"targets were made for {targets.size} px crops but cfg.image_size = {cfg.image_size}")
    thresholds = {s: prior_threshold(model.cpu(), s, cfg.prior_quantile) for s in SIDES}
    model = model.to(dev)
    ecfg = EngineConfig(num=cfg.num, rounds=cfg.rounds, proposals_per_image=cfg.proposals_per_image,
                        pixel_threshold=cfg.threshold_px, prior_thresholds=thresholds, perturb=cfg.perturb)
    folder = Path(out) / split
    folder.mkdir(parents=True, exist_ok=True)
    n_parts = math.ceil(len(targets) / cfg.part_size)
    mine = [c for c in range(n_parts) if c % n_shards == i_shard]
    common = {"split": split, "image_size": cfg.image_size, "hand_model": getattr(model, "name", cfg.hand_model),
              "seed": cfg.seed, **stored_settings(cfg.to_json()),  # {"config", "fingerprint"}: the resume check
              "thresholds": {"pixel": cfg.threshold_px, "pixel_fraction_of_crop": cfg.threshold_px / cfg.image_size,
                             "prior_log_prob": thresholds, "prior_quantile": cfg.prior_quantile,
                             "collision": "handflow.hand.collision.collide (1-sigma Gaussian proxy spheres)",
                             "shape_abs_beta": ecfg.shape_bound, "reference_2d": ecfg.reference_2d},
              "num_parts": n_parts, "num_images": len(targets)}
    todo, skipped = [], []
    for c in mine:  # a finished part of these settings (and this split's size) is skipped, another refused
        done = check_stored(read_part_meta(folder / part_name(c)), common["config"], what=str(folder / part_name(c)),
                            fix=PART_FIX, expected={"num_images": len(targets)})
        (skipped if done else todo).append(c)
    total = sum(min(cfg.part_size, len(targets) - c * cfg.part_size) for c in todo)
    bar = tqdm(total=total, desc=f"multihands {split} shard {i_shard}/{n_shards}", unit="img", disable=not progress)
    written = []
    for c in todo:
        part_t = targets.index(slice(c * cfg.part_size, (c + 1) * cfg.part_size))
        arrays, stats, fit = _run_part(model, part_t, cfg, ecfg, vis, c, dev, bar.update)
        meta = {**common, "part": c, "stats": stats.to_json(), "rates": stats.rates(),
                "gt_params_vs_annotated_2d_px": fit,
                "images_with_fewer_than_num": int((arrays["count"] < cfg.num).sum())}
        write_part(folder / part_name(c), arrays, meta)
        written.append(c)
    bar.close()
    split_meta = _write_split_meta(folder, common)
    summary = None
    if split_meta["parts_done"]:
        summary = {"complete": split_meta["complete"], "rates": split_meta["rates"],
                   **summarize(load(Path(out), split), cfg.num)}
        write_json_atomic(folder / "summary.json", summary)
    return {"written": written, "skipped": skipped, "complete": split_meta["complete"], "meta": split_meta,
            "summary": summary}


def _write_split_meta(folder: Path, common: dict[str, Any]) -> dict[str, Any]:
    """Aggregate the finished parts' statistics into ``<split>/meta.json``."""
    stats = CriterionStats()
    done = []
    for c in range(common["num_parts"]):
        m = read_part_meta(folder / part_name(c))
        if matches_stored(m, common["config"]):  # another shard's part of other settings is not counted
            stats.add(CriterionStats.from_json(m["stats"]))
            done.append(c)
    meta = {**common, "parts_done": len(done), "complete": len(done) == common["num_parts"],
            "stats": stats.to_json(), "rates": stats.rates()}
    write_json_atomic(folder / "meta.json", meta)
    return meta
