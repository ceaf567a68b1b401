"""Lightning data module over :class:`~handflow.data.InterHandDataset` splits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from handflow.data.augment import AugmentConfig
from handflow.data.features import FeatureDataset, feature_augmentation, load_split_features
from handflow.data.interhand import InterHandDataset
from handflow.data.multihands_targets import MultiHandsDataset
from handflow.data.targets import TargetsDataset, collate_batched

__all__ = ["InterHandDataModule", "EpochShuffleSampler", "worker_init"]


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """Shuffles with ``randperm(n, seed + epoch)``: the order of every epoch is a pure function
    of (seed, epoch), so a run resumed from a checkpoint sees exactly the batches an
    uninterrupted run would. Lightning calls :meth:`set_epoch` each epoch; it also forwards
    the epoch to the dataset, or the first dataset down its ``base`` chain that has ``set_epoch``
    (the augmentation stream, or the copy a cached-feature item serves)."""

    def __init__(self, dataset: Any, seed: int = 0) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        ds = self.dataset
        while not hasattr(ds, "set_epoch") and hasattr(ds, "base"):
            ds = ds.base
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(len(self.dataset), generator=g).tolist())


def worker_init(worker_id: int) -> None:
    """One thread per data worker (2-core machines), distinct seeds per worker."""
    torch.set_num_threads(1)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        torch.manual_seed(info.seed % 2**31)


class InterHandDataModule(pl.LightningDataModule):
    """Train/val/test loaders; augmentation on the train split only; ``multihands`` (a
    folder of ``handflow multihands`` output) attaches ``multi_y``/``multi_valid`` (train split
    required, other splits where annotated; see :meth:`wants_multihands`).
    ``mano_path`` (MANO model files for ``hand_model="mano"``) and ``cache_dir`` (index
    location for a read-only root) are passed to every :class:`InterHandDataset`.
    ``features`` (a ``handflow features`` folder) replaces images by the cached backbone
    features (:class:`~handflow.data.features.FeatureDataset`); ``feature_copies``: the augmented
    copies per training image the cache must hold (``handflow features --copies``; 1: one
    un-augmented feature per image); the training items then carry the annotations of the copy
    they serve, augmented with the cache's ranges and seed.
    ``keypoints`` (the keypoint-evidence protocol, ``model.backbone=keypoints``): items without
    the image, never decoded; the crop augmentation (rotation, scale, shift) still moves the
    2D evidence and the targets; the items are held in memory and augmented a batch at a time
    (:class:`~handflow.data.targets.TargetsDataset`)."""

    def __init__(
        self,
        root: str | Path,
        image_size: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        hand_model: Any = None,
        augment: bool = True,
        seed: int = 0,
        multihands: str | Path | None = None,
        multihands_max: int = 8,
        mano_path: str | Path | None = None,
        cache_dir: str | Path | None = None,
        features: str | Path | None = None,
        keypoints: bool = False,
        feature_copies: int = 1,
    ) -> None:
        super().__init__()
        self.root, self.size, self.batch_size, self.num_workers = Path(root), image_size, batch_size, num_workers
        self.hand_model, self.augment, self.seed = hand_model, augment, seed
        self.multihands, self.multihands_max = multihands, multihands_max
        self.mano_path, self.cache_dir = mano_path, cache_dir
        self.features, self.keypoints, self.feature_copies = features, bool(keypoints), int(feature_copies)
        self._ds: dict[str, Any] = {}

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> InterHandDataModule:
        """The data module a :class:`~handflow.config.Config` describes (``cfg.data``, seed
        ``cfg.train.seed``); ``overrides`` replace constructor arguments, e.g.
        ``augment=False, num_workers=0``."""
        d = cfg.data
        if getattr(d, "packed", None) and cls is InterHandDataModule:  # a `handflow pack` store (issue #17)
            # cycle: data.packed subclasses InterHandDataModule
            from handflow.data.packed import PackedDataModule

            return PackedDataModule.from_config(cfg, **overrides)
        kw = dict(root=d.root, image_size=d.image_size, batch_size=d.batch_size, num_workers=d.num_workers,
                  hand_model=d.hand_model, augment=d.augment, seed=cfg.train.seed, multihands=d.multihands,
                  multihands_max=d.multihands_max, mano_path=d.mano_path, features=d.features,
                  keypoints=cfg.model.backbone == "keypoints", feature_copies=d.feature_copies)
        return cls(**(kw | overrides))

    def wants_multihands(self, split: str) -> bool:
        """MultiHands targets are required for the train split (the loss uses them) and
        attached to another split only where annotations for it exist (validation scores the
        ground truth, so it runs without them)."""
        if self.multihands is None:
            return False
        return split == "train" or (Path(self.multihands) / split).is_dir()

    def dataset(self, split: str) -> Any:
        if split not in self._ds:
            cached = self.features is not None
            augment: bool | AugmentConfig = self.augment and split == "train" and not cached
            seed = self.seed
            if cached:
                feats = load_split_features(self.features, split)
                if split == "train":  # copies: the annotations of the augmented image each one was computed from
                    drawn = feature_augmentation(self.features, self.feature_copies, AugmentConfig() if self.augment else None)
                    if drawn is not None:
                        augment, seed = drawn
            ds = InterHandDataset(self.root, split, self.size, hand_model=self.hand_model, mano_path=self.mano_path,
                                  augment=augment, seed=seed, cache_dir=self.cache_dir,
                                  load_images=not (cached or self.keypoints))
            if self.keypoints and not cached:  # no image: every item's targets in memory, batches augmented at once
                ds = TargetsDataset(ds, augment=self.augment and split == "train", seed=self.seed)
            if self.wants_multihands(split):
                ds = MultiHandsDataset(ds, self.multihands, split, self.multihands_max, image_size=self.size)
            if cached:
                ds = FeatureDataset(ds, *feats, seed=self.seed)
            self._ds[split] = ds
        return self._ds[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        sampler = EpochShuffleSampler(ds, self.seed) if shuffle else None
        extra = {}
        if getattr(ds, "batched", False):  # __getitems__ returns the collated batch
            extra["collate_fn"] = collate_batched
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          worker_init_fn=worker_init, drop_last=shuffle, persistent_workers=False, **extra)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
