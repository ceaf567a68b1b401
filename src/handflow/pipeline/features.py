"""Feature caching, a step of the benchmark pipeline (the shared-feature protocol,
docs/evaluation.md; ``handflow features``): run a trained backbone over every image of a
dataset and store the pooled features that :mod:`handflow.data.features` reads.

It sits above training (it loads a trained checkpoint and the data module's worker set-up);
the reading side stays in ``data`` so that training on cached features needs none of this.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from handflow.atomic import atomic_path, write_json
from handflow.data.datamodule import worker_init
from handflow.data.features import FEATURES_META, FeatureCacheError, backbone_digest
from handflow.data.interhand import InterHandDataset
from handflow.models.checkpoint import load_model

__all__ = ["cache_features"]

log = logging.getLogger(__name__)


@torch.no_grad()
def cache_features(checkpoint: str | Path, data: str | Path, out: str | Path, splits: tuple[str, ...] = ("train", "val", "test"),
                   batch_size: int = 64, num_workers: int = 1, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Run the backbone of ``checkpoint`` over ``splits`` of ``data`` and store the features.

    Resumable per split: a split whose file exists for the same backbone digest is kept.
    Returns the metadata written to ``features.json``.
    """
    model, cfg = load_model(checkpoint)
    backbone = model.backbone.to(device).eval()
    digest = backbone_digest(backbone)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / FEATURES_META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta and meta.get("backbone_digest") != digest:
        raise FeatureCacheError(f"{out} holds features of another backbone ({meta.get('checkpoint')}); "
                                "use another --out folder or delete it")
    meta.update({"checkpoint": str(Path(checkpoint).resolve()), "backbone": cfg.model.backbone, "backbone_digest": digest,
                 "image_size": cfg.data.image_size, "data": str(Path(data).resolve()), "hand_model": cfg.data.hand_model,
                 "dim": backbone.dim})
    meta.setdefault("splits", {})
    for split in splits:
        target = out / f"{split}.pt"
        if target.is_file() and split in meta["splits"]:
            continue
        ds = InterHandDataset(data, split, cfg.data.image_size, hand_model=cfg.data.hand_model, mano_path=cfg.data.mano_path)
        loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, worker_init_fn=worker_init)
        feats, ids = [], []
        for batch in tqdm(loader, desc=f"features {split}", disable=not progress, unit="batch"):
            f = backbone(batch["image"].to(device)).float().cpu()
            if not torch.isfinite(f).all():
                raise FeatureCacheError(f"non-finite backbone features for images {batch['meta']['image_id'].tolist()[:8]}")
            feats.append(f)
            ids.append(batch["meta"]["image_id"].long())
        F = torch.cat(feats) if feats else torch.zeros(0, backbone.dim)
        with atomic_path(target) as tmp:
            torch.save({"features": F, "image_id": torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)}, tmp)
        meta["splits"][split] = int(F.shape[0])
        write_json(meta_path, meta)
        log.info("features %s: %d images -> %s", split, F.shape[0], target)
    return meta
