"""Moved to :mod:`handflow.data.multihands_targets` (the training-target dataset is data,
below the generator in the layers); these names stay importable from here."""

from handflow.data.multihands_targets import (
    FRAME_TOLERANCE_MM,
    FRAME_TOLERANCE_ROT,
    BatchedAttach,
    MultiHandsDataset,
    attach_multihands,
)

__all__ = ["attach_multihands", "MultiHandsDataset", "BatchedAttach", "FRAME_TOLERANCE_MM", "FRAME_TOLERANCE_ROT"]
