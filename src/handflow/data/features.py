"""Cached backbone features: the shared-feature protocol (docs/evaluation.md).

One backbone is trained once (or taken from a shipped model); :func:`handflow.pipeline.features.cache_features`
(a step of the benchmark pipeline, above training: ``handflow features``) runs it over every image of a
dataset and stores the pooled features; this module reads them. Heads (HandFlowNet's flow, the baselines,
the ablations) then train on :class:`FeatureDataset` items: the usual annotation dict without
the image, plus ``feats`` (C,). A head trained this way keeps the frozen backbone in its
checkpoint, so ``predict``/``evaluate`` use it like any other model.

On disk (``OUT/``)::

    features.json     backbone checkpoint, its weight digest, image size, data root, splits;
                      with K > 1 copies also "copies": K, "augment" (the AugmentConfig ranges)
                      and "augment_seed"
    <split>.pt        {"features": (N, C) float32, "image_id": (N,) int64}
    train.pt (K > 1)  {"features": (K, N, C) float32, "image_id": (N,) int64}

Without copies (``handflow features``' default, K = 1) every image is cached once, without
augmentation. With ``--copies K`` the train split holds K features per image: copy ``k`` is
the backbone's feature of the image under the training augmentation of epoch ``k``
(:func:`~handflow.data.augment.sample_augment` with the cache's ``augment_seed``, index ``i``,
epoch ``k``), so a head trained for several epochs does not see one fixed feature per image;
val and test keep one un-augmented copy. A cache without ``"copies"`` (made before they
existed) reads as K = 1. A run states the K it expects (``data.feature_copies``): another K, or
copies augmented with other ranges than the run's, is refused (:func:`feature_augmentation`).

``image_id`` follows the dataset order; loading checks it against the dataset so a cache
from another dataset, or from the same one re-generated, is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from handflow.data.augment import AugmentConfig
from handflow.errors import CorruptFileError, HandflowError
from handflow.safeio import load_torch_file

__all__ = ["FEATURES_META", "FeatureCacheError", "backbone_digest", "check_backbone", "load_split_features",
           "read_meta", "cache_copies", "feature_augmentation", "FeatureDataset"]

FEATURES_META = "features.json"


class FeatureCacheError(HandflowError, ValueError):
    """A feature cache is missing, incomplete, or does not belong to the data or backbone."""


def backbone_digest(backbone: nn.Module) -> str:
    """SHA-256 (16 hex digits) of a backbone's weights and buffers, in state-dict order."""
    h = hashlib.sha256()
    for k, v in backbone.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float64 if v.is_floating_point() else torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The cache's ``features.json``; :class:`FeatureCacheError` when absent or corrupt."""
    p = Path(folder) / FEATURES_META
    if not p.is_file():
        raise FeatureCacheError(f"no feature cache in {folder} ({FEATURES_META} missing): run "
                                f"`handflow features --checkpoint BACKBONE.ckpt --data DATA --out {folder}`")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise FeatureCacheError(f"{p} is corrupt ({e}); delete the folder and run `handflow features` again") from e


def check_backbone(folder: str | Path, backbone: nn.Module, whose: str, fix: str) -> dict[str, Any]:
    """The cache's metadata, refused in one line (``FeatureCacheError``: "... made by another
    backbone ... than ``whose``; ``fix``") unless ``backbone`` has the weight digest it was made with."""
    meta = read_meta(folder)
    if meta.get("backbone_digest") != backbone_digest(backbone):
        raise FeatureCacheError(f"{folder} was made by another backbone ({meta.get('checkpoint')}) than {whose}; {fix}")
    return meta


def cache_copies(meta: dict[str, Any], split: str = "train") -> int:
    """Features per image of ``split`` in a cache with metadata ``meta``: its ``copies`` for the
    train split (1 when absent: a cache made before copies existed), 1 for the others."""
    return int(meta.get("copies", 1)) if split == "train" else 1


def feature_augmentation(folder: str | Path, copies: int, augment: AugmentConfig | None) -> tuple[AugmentConfig, int] | None:
    """Check that the cache in ``folder`` holds the ``copies`` (``data.feature_copies``) features
    per training image a run expects, augmented with the run's ranges ``augment`` (``None``: the
    run does not augment); return the augmentation ``(ranges, seed)`` its copies were drawn with
    (build the training split's annotations with them), ``None`` for a cache of one copy.

    Raises:
        FeatureCacheError: another number of copies, or copies augmented otherwise (one line,
            naming the fix).
    """
    meta = read_meta(folder)
    have = cache_copies(meta)
    if have != copies:
        raise FeatureCacheError(f"{folder} holds {have} feature copies per training image (handflow features --copies "
                                f"{have}), this run expects data.feature_copies={copies}: set data.feature_copies={have} or "
                                f"run `handflow features --copies {copies}` into another --out folder")
    if have == 1:
        return None
    stored, seed = meta.get("augment"), meta.get("augment_seed")
    if augment is None or not isinstance(stored, dict) or stored != asdict(augment) or not isinstance(seed, int):
        own = "none (data.augment=false)" if augment is None else asdict(augment)
        raise FeatureCacheError(f"{folder}'s feature copies were augmented with {stored} (seed {seed}), this run's "
                                f"augmentation is {own}: run `handflow features --copies {copies}` with the run's "
                                "augmentation into another --out folder")
    return AugmentConfig(**stored), seed


def load_split_features(folder: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """``(features, image_id (N,) int64)`` of one split: features (N, C) float32, or (K, N, C)
    for the train split of a cache of K > 1 copies (:func:`cache_copies`)."""
    meta = read_meta(folder)
    p = Path(folder) / f"{split}.pt"
    if split not in meta.get("splits", {}) or not p.is_file():
        raise FeatureCacheError(f"{folder} has no features for split {split!r} (has {sorted(meta.get('splits', {}))}): "
                                f"run `handflow features ... --out {folder} --splits {split}`")
    try:
        d = load_torch_file(p, what="feature cache")  # weights_only=True: a planted file raises UnsafeFileError
    except CorruptFileError as e:
        raise FeatureCacheError(f"{e}; delete it and run `handflow features` again") from e
    try:
        F, ids = d["features"], d["image_id"]
    except (KeyError, TypeError, IndexError) as e:
        raise FeatureCacheError(f"{p} is not a feature cache (no 'features' and 'image_id' entries); delete it and run "
                                "`handflow features` again") from e
    k = cache_copies(meta, split)
    shape_ok = F.dim() == 2 if k == 1 else F.dim() == 3 and F.shape[0] == k
    if not shape_ok or F.shape[-2] != ids.shape[0] or not torch.isfinite(F).all():
        raise FeatureCacheError(f"{p} is malformed: features {tuple(F.shape)}, ids {tuple(ids.shape)}, {k} copies in "
                                f"{FEATURES_META}; delete the folder and run `handflow features` again")
    return F.float(), ids.long()


class FeatureDataset(Dataset):
    """Items of ``base`` (built with ``load_images=False``) plus ``feats`` (C,) from the cache.

    With K > 1 copies (features (K, N, C)), item ``i`` in training epoch ``e`` (:meth:`set_epoch`,
    called by the sampler) serves copy ``k = (e + o_i) % K``, where the offsets ``o_i`` are drawn
    once, uniformly in 0..K-1, from ``seed`` (``train.seed``): K consecutive epochs serve every
    copy of an image once, and the images are not all on the same copy in an epoch
    (:meth:`copy_of`). The annotations are those of that copy's image: the innermost dataset
    (an :class:`~handflow.data.InterHandDataset` augmenting with the cache's ranges and seed,
    :func:`feature_augmentation`) is set to augmentation epoch ``k`` before item ``i`` is read,
    so ``K``, ``y``, ``joints_2d``, ``visible`` and, through a wrapper such as
    :class:`~handflow.data.multihands_targets.MultiHandsDataset`, the MultiHands targets are
    those of the augmented image the feature was computed from.

    Args:
        base: an :class:`~handflow.data.InterHandDataset` (optionally wrapped, e.g. by
            :class:`~handflow.data.multihands_targets.MultiHandsDataset`) over the cached split.
        features: (N, C) cached features in dataset order, or (K, N, C) copies.
        image_ids: (N,) their image ids, checked against the dataset's.
        seed: seed of the copy offsets.
    """

    def __init__(self, base: Dataset, features: Tensor, image_ids: Tensor, seed: int = 0) -> None:
        inner = base
        while hasattr(inner, "base"):
            inner = inner.base
        n = len(base)  # type: ignore[arg-type]
        if features.shape[-2] != n:
            raise FeatureCacheError(f"the feature cache has {features.shape[-2]} items, the dataset {n}: "
                                    "it was made from another dataset; run `handflow features` again")
        own = getattr(getattr(inner, "index", None), "a", None)
        if own is not None:
            ds_ids = torch.tensor(list(map(int, own["img_id"][:n])), dtype=torch.long)
            if not torch.equal(ds_ids, image_ids):
                raise FeatureCacheError("the feature cache's image ids differ from the dataset's: it was made from "
                                        "another dataset; run `handflow features` again")
        self.copies = 1 if features.dim() == 2 else int(features.shape[0])
        if self.copies > 1 and not (getattr(inner, "augment", None) and hasattr(inner, "set_epoch")):
            raise FeatureCacheError(f"{self.copies} augmented feature copies need a base dataset that augments with the "
                                    "cache's settings (handflow.data.features.feature_augmentation)")
        self.base, self.features, self.inner, self.epoch = base, features, inner, 0
        self.offset = torch.randint(self.copies, (n,), generator=torch.Generator().manual_seed(int(seed)))

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """The training epoch (called by the sampler each epoch): it picks each item's copy."""
        self.epoch = int(epoch)

    def copy_of(self, i: int) -> int:
        """The copy item ``i`` serves in the current epoch: ``(epoch + o_i) % K``."""
        return (self.epoch + int(self.offset[i])) % self.copies

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.copies == 1:
            item = self.base[i]
            item["feats"] = self.features[i]
            return item
        k = self.copy_of(i)
        self.inner.set_epoch(k)  # the annotations of the augmented image of copy k
        item = self.base[i]
        item["feats"] = self.features[k, i]
        return item
