"""Data: the InterHand2.6M reader (real and synthetic) and the synthetic generator."""

from handflow.data.augment import AugmentConfig
from handflow.data.interhand import BBOX_SCALE, InterHandDataset

__all__ = ["AugmentConfig", "BBOX_SCALE", "InterHandDataset", "InterHandDataModule"]


def __getattr__(name: str) -> type:
    if name == "InterHandDataModule":
        # lazy: the data module needs Lightning (the [train] extra); the readers do not
        from handflow.data.datamodule import InterHandDataModule

        return InterHandDataModule
    raise AttributeError(name)
