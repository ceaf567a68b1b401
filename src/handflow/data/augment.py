"""Training augmentation, deterministic for (seed, index, epoch).

Geometry is changed by moving the *virtual crop camera*, never by warping labels:
scale (crop side), translation jitter (crop centre) and in-plane rotation (the virtual
camera turns about the real optical axis, so joints, the global hand orientation, the wrist
and hence ``y`` are rotated consistently and ``project(joints_cam, K) == joints_2d`` still
holds). Colour jitter changes brightness, contrast and saturation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AugmentConfig", "AugmentParams", "sample_augment", "color_jitter"]


@dataclass
class AugmentConfig:
    """Ranges (documented defaults)."""

    scale: float = 0.25  # crop side × exp(U(-s, s))
    rotation_deg: float = 30.0  # U(-r, r)
    translation: float = 0.08  # centre shift, fraction of the crop side
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25


@dataclass
class AugmentParams:
    scale: float = 1.0
    angle: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0


def sample_augment(cfg: AugmentConfig, seed: int, index: int, epoch: int) -> AugmentParams:
    """Draw augmentation parameters from a generator seeded by (seed, index, epoch)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + index) * 1_009 + epoch)
    u = (torch.rand(7, generator=g, dtype=torch.float64) * 2 - 1).tolist()
    return AugmentParams(
        scale=math.exp(cfg.scale * u[0]),
        angle=math.radians(cfg.rotation_deg) * u[1],
        shift=(cfg.translation * u[2], cfg.translation * u[3]),
        brightness=1 + cfg.brightness * u[4],
        contrast=1 + cfg.contrast * u[5],
        saturation=1 + cfg.saturation * u[6],
    )


def color_jitter(image: Tensor, p: AugmentParams) -> Tensor:
    """(3, S, S) in [0, 1] -> jittered (3, S, S)."""
    img = image * p.brightness
    mean = img.mean()
    img = (img - mean) * p.contrast + mean
    grey = img.mean(0, keepdim=True)
    img = (img - grey) * p.saturation + grey
    return img.clamp(0, 1)
