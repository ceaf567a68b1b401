"""Cached backbone features: the shared-feature protocol (docs/evaluation.md).

One backbone is trained once; :func:`handflow.pipeline.features.cache_features` (a step of
the benchmark pipeline, above training: ``handflow features``) runs it over every image of a
dataset (no augmentation) and stores the pooled features; this module reads them. Heads (HandFlowNet's flow, the baselines,
the ablations) then train on :class:`FeatureDataset` items: the usual annotation dict without
the image, plus ``feats`` (C,). A head trained this way keeps the frozen backbone in its
checkpoint, so ``predict``/``evaluate`` use it like any other model.

On disk (``OUT/``)::

    features.json     backbone checkpoint, its weight digest, image size, data root, splits
    <split>.pt        {"features": (N, C) float32, "image_id": (N,) int64}

``image_id`` follows the dataset order; loading checks it against the dataset so a cache
from another dataset, or from the same one re-generated, is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from handflow.errors import CorruptFileError, HandflowError
from handflow.safeio import load_torch_file

__all__ = ["FEATURES_META", "FeatureCacheError", "backbone_digest", "load_split_features",
           "read_meta", "FeatureDataset"]

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


def load_split_features(folder: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """``(features (N, C) float32, image_id (N,) int64)`` of one split."""
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
    if F.dim() != 2 or F.shape[0] != ids.shape[0] or not torch.isfinite(F).all():
        raise FeatureCacheError(f"{p} is malformed: features {tuple(F.shape)}, ids {tuple(ids.shape)}")
    return F.float(), ids.long()


class FeatureDataset(Dataset):
    """Items of ``base`` (built with ``load_images=False``) plus ``feats`` (C,) from the cache.

    Args:
        base: an :class:`~handflow.data.InterHandDataset` (optionally wrapped, e.g. by
            :class:`~handflow.data.multihands_targets.MultiHandsDataset`) over the cached split.
        features: (N, C) cached features in dataset order.
        image_ids: (N,) their image ids, checked against the dataset's.
    """

    def __init__(self, base: Dataset, features: Tensor, image_ids: Tensor) -> None:
        inner = base
        while hasattr(inner, "base"):
            inner = inner.base
        n = len(base)  # type: ignore[arg-type]
        if features.shape[0] != n:
            raise FeatureCacheError(f"the feature cache has {features.shape[0]} items, the dataset {n}: "
                                    "it was made from another dataset; run `handflow features` again")
        own = getattr(getattr(inner, "index", None), "a", None)
        if own is not None:
            ds_ids = torch.tensor(list(map(int, own["img_id"][:n])), dtype=torch.long)
            if not torch.equal(ds_ids, image_ids):
                raise FeatureCacheError("the feature cache's image ids differ from the dataset's: it was made from "
                                        "another dataset; run `handflow features` again")
        self.base, self.features = base, features

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        item["feats"] = self.features[i]
        return item
