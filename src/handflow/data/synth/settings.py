"""The settings of ``handflow synth``: :class:`SynthConfig`, the schema of the synthetic dataset.

Loaded like every step's settings (:mod:`handflow.config.settings`): defaults, a YAML file
(``--config``), the command's options, then ``key=value`` overrides (``--set``). What a
dataset records (``.synth_settings.json``, every shard part) is :meth:`SynthConfig.to_json`
and its fingerprint (:mod:`handflow.data.synth.rerun`). This module imports no torch, so the
command line can read the schema cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["SynthConfig", "SPLIT_FRACTIONS", "FORMAT_VERSION", "MIN_IMAGE_SIZE"]

SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
FORMAT_VERSION = 1
#: smallest image side synth renders (``--image-size``)
MIN_IMAGE_SIZE = 16


@dataclass(frozen=True)
class SynthConfig:
    """Settings that define the dataset (stored in every shard; shards must agree).

    Attributes:
        frames: frames (3D scenes) over all splits (80/10/10 %).
        cameras: cameras per capture on the dome.
        image_size: square image side (real InterHand2.6M images are 334x512).
        seed: random seed: same seed, same bytes.
        hand_model: ``openhand`` (embedded) or ``mano``.
        splits: the splits to write, a subset of ``train, val, test``.
        format_version: the on-disk format (not a choice: recorded to refuse other formats).
        test_frames: frames of the test split instead of its 10 % share (train and val stay
            the same: a bigger test set for the same training data).
        train_cameras, val_cameras, test_cameras: cameras per capture of one split instead
            of ``cameras`` (``None``, or equal to ``cameras``: the same dataset).
    """

    frames: int = 200
    cameras: int = 16
    image_size: int = 256
    seed: int = 0
    hand_model: str = "openhand"
    splits: tuple[str, ...] = ("train", "val", "test")
    format_version: int = FORMAT_VERSION
    test_frames: int | None = None
    train_cameras: int | None = None
    val_cameras: int | None = None
    test_cameras: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "splits", tuple(self.splits))  # a list from YAML or OmegaConf
        for s in self.splits:
            if s not in SPLIT_FRACTIONS:
                raise ValueError(f"unknown split {s!r}: expected a subset of {list(SPLIT_FRACTIONS)}")
        for k, low in (("frames", 1), ("cameras", 1), ("image_size", MIN_IMAGE_SIZE)):
            if int(getattr(self, k)) < low:
                raise ValueError(f"--{k.replace('_', '-')} must be at least {low}, got {getattr(self, k)}")
        for s in SPLIT_FRACTIONS:
            c = getattr(self, f"{s}_cameras")
            if c is not None and c < 1:
                raise ValueError(f"--{s}-cameras must be at least 1, got {c}")
            if c == self.cameras:  # the default spelled out: same settings, same bytes
                object.__setattr__(self, f"{s}_cameras", None)

    def cameras_for(self, split: str) -> int:
        """Cameras per capture of ``split`` (its ``<split>_cameras``, else ``cameras``)."""
        c = getattr(self, f"{split}_cameras", None)
        return self.cameras if c is None else int(c)

    @property
    def id_stride(self) -> int:
        """``image_id = global_frame · id_stride + camera_index``: the largest camera count, so
        ids stay unique (``cameras`` when no split has its own count)."""
        return max(self.cameras_for(s) for s in SPLIT_FRACTIONS)

    def to_json(self) -> dict[str, Any]:
        """The record stored with the dataset (and fingerprinted)."""
        d = asdict(self)
        d["splits"] = list(self.splits)
        for k in ("test_frames", *(f"{s}_cameras" for s in SPLIT_FRACTIONS)):
            if d[k] is None:  # datasets written before the option have no such key
                del d[k]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SynthConfig:
        """Inverse of :meth:`to_json` (``TypeError`` for unknown keys or a record without the
        dataset's defining settings)."""
        missing = [k for k in ("frames", "cameras", "image_size", "seed") if k not in d]
        if missing:
            raise TypeError(f"SynthConfig record lacks {missing}")
        return cls(**{**d, "splits": tuple(d["splits"])}) if "splits" in d else cls(**d)
