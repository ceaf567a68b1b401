"""Feature caching, a step of the benchmark pipeline (the shared-feature protocol,
docs/evaluation.md; ``handflow features``): run a trained backbone over every image of a
dataset and store the pooled features that :mod:`handflow.data.features` reads.

It sits above training (it loads a trained checkpoint and the data module's worker set-up);
the reading side stays in ``data`` so that training on cached features needs none of this.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from handflow.atomic import atomic_path, write_json
from handflow.data.augment import AugmentConfig
from handflow.data.datamodule import worker_init
from handflow.data.features import FEATURES_META, FeatureCacheError, backbone_digest, cache_copies
from handflow.data.interhand import InterHandDataset
from handflow.models.checkpoint import load_model
from handflow.models.shipped import resolve_weights
from handflow.safeio import load_torch_file

__all__ = ["cache_features"]

log = logging.getLogger(__name__)


@torch.no_grad()
def cache_features(checkpoint: str | Path, data: str | Path, out: str | Path, splits: tuple[str, ...] = ("train", "val", "test"),
                   batch_size: int = 64, num_workers: int = 1, device: str = "cpu", progress: bool = True,
                   copies: int = 1, seed: int = 0, augment: AugmentConfig | None = None) -> dict[str, Any]:
    """Run the backbone of ``checkpoint`` (a checkpoint, a weights file, float16 weights widened
    to float32, or a shipped model's name) over ``splits`` of ``data`` and store the features.

    ``copies`` > 1: the train split gets that many features per image, copy ``k`` of the image
    under the training augmentation of epoch ``k`` (``augment``, default the training ranges
    :class:`~handflow.data.augment.AugmentConfig`, drawn from ``seed``); val and test one
    un-augmented feature (:mod:`handflow.data.features`). ``copies=1`` writes what it always has.

    Resumable per split (and per copy of the train split): a split whose file exists for the
    same backbone digest is kept. Returns the metadata written to ``features.json``.

    Raises:
        FeatureCacheError: ``out`` holds features of another backbone or another number of
            copies or augmentation; non-finite features.
    """
    if copies < 1:
        raise FeatureCacheError(f"copies={copies}: at least one feature per image")
    path = resolve_weights(checkpoint)
    model, cfg = load_model(path)
    backbone = model.backbone.to(device).eval()
    digest = backbone_digest(backbone)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / FEATURES_META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta and meta.get("backbone_digest") != digest:
        raise FeatureCacheError(f"{out} holds features of another backbone ({meta.get('checkpoint')}); "
                                "use another --out folder or delete it")
    aug = (augment or AugmentConfig()) if copies > 1 else None
    drawn = {"copies": copies, "augment": asdict(aug), "augment_seed": int(seed)} if aug is not None else {}
    if meta and (cache_copies(meta), meta.get("augment"), meta.get("augment_seed")) != \
            (copies, drawn.get("augment"), drawn.get("augment_seed")):
        raise FeatureCacheError(f"{out} holds features with {cache_copies(meta)} copies per training image (augmentation "
                                f"{meta.get('augment')}, seed {meta.get('augment_seed')}), not {copies} (augmentation "
                                f"{drawn.get('augment')}, seed {drawn.get('augment_seed')}); use another --out folder "
                                "or delete it")
    meta.update({"checkpoint": str(path.resolve()), "backbone": cfg.model.backbone, "backbone_digest": digest,
                 "image_size": cfg.data.image_size, "data": str(Path(data).resolve()), "hand_model": cfg.data.hand_model,
                 "dim": backbone.dim, **drawn})
    meta.setdefault("splits", {})
    if drawn:  # before the first copy is written: a part left by a stopped run is then known to be of this backbone
        write_json(meta_path, meta)
    for split in splits:
        target = out / f"{split}.pt"
        if target.is_file() and split in meta["splits"]:
            continue
        k_split = copies if split == "train" else 1

        def dataset(k: int, split: str = split, k_split: int = k_split) -> InterHandDataset:
            ds = InterHandDataset(data, split, cfg.data.image_size, hand_model=cfg.data.hand_model,
                                  mano_path=cfg.data.mano_path, augment=aug if k_split > 1 else False, seed=seed)
            ds.set_epoch(k)  # copy k: the training augmentation of epoch k
            return ds

        if k_split == 1:
            F, ids = _run(backbone, dataset(0), batch_size, num_workers, device, progress, f"features {split}")
        else:
            parts = []
            for k in range(k_split):
                part = out / f"{split}.copy{k}.pt"
                if part.is_file():
                    d = load_torch_file(part, what="feature cache part")
                    parts.append((d["features"], d["image_id"]))
                    continue
                parts.append(_run(backbone, dataset(k), batch_size, num_workers, device, progress,
                                  f"features {split} copy {k + 1}/{k_split}"))
                with atomic_path(part) as tmp:
                    torch.save({"features": parts[-1][0], "image_id": parts[-1][1]}, tmp)
            F, ids = torch.stack([p[0] for p in parts]), parts[0][1]
        with atomic_path(target) as tmp:
            torch.save({"features": F, "image_id": ids}, tmp)
        meta["splits"][split] = int(F.shape[-2])
        write_json(meta_path, meta)
        for k in range(k_split if k_split > 1 else 0):
            (out / f"{split}.copy{k}.pt").unlink(missing_ok=True)
        log.info("features %s: %d images%s -> %s", split, F.shape[-2], f" x {k_split} copies" if k_split > 1 else "", target)
    return meta


def _run(backbone: nn.Module, ds: InterHandDataset, batch_size: int, num_workers: int, device: str, progress: bool,
         desc: str) -> tuple[Tensor, Tensor]:
    """``(features (N, C) float32, image_id (N,) int64)`` of every item of ``ds``, in order."""
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, worker_init_fn=worker_init)
    feats, ids = [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, unit="batch"):
        f = backbone(batch["image"].to(device)).float().cpu()
        if not torch.isfinite(f).all():
            raise FeatureCacheError(f"non-finite backbone features for images {batch['meta']['image_id'].tolist()[:8]}")
        feats.append(f)
        ids.append(batch["meta"]["image_id"].long())
    F = torch.cat(feats) if feats else torch.zeros(0, backbone.dim)
    return F, torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
