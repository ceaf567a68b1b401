"""Crops as virtual cameras: exact image resampling consistent with the crop intrinsics.

A crop is a virtual pinhole camera with intrinsics ``K_crop`` and a rotation ``Rz`` about the
real camera's optical axis (identity unless augmented). An output pixel centre ``p`` of the
crop sees the ray ``Rzᵀ K_crop⁻¹ p`` of the real camera, i.e. the source pixel
``K · Rzᵀ · K_crop⁻¹ · p`` (a homography). Sampling it with ``grid_sample
(align_corners=False)``, whose ``[-1, 1]`` spans outer pixel edges, honours the pixel-centre
convention, so ``project(X, K_crop)`` of rotated camera-frame points lands exactly where the
image shows them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as Fn
from torch import Tensor

__all__ = ["warp_to_crop", "rot_z", "FILL_VALUE"]

#: value of crop pixels outside the source image (mid grey after ImageNet normalization ~0)
FILL_VALUE = 0.5


def rot_z(angle: float | Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """(3, 3) rotation by ``angle`` radians about the optical axis (z)."""
    a = torch.as_tensor(angle, dtype=dtype)
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o]).reshape(3, 3)


def warp_to_crop(image: Tensor, K: Tensor, K_crop: Tensor, size: int, Rz: Tensor | None = None,
                 fill: float = FILL_VALUE) -> Tensor:
    """Resample the source image into the virtual crop camera.

    Args:
        image: (3, H, W) float in [0, 1].
        K: (3, 3) source intrinsics.
        K_crop: (3, 3) crop intrinsics.
        size: crop side S.
        Rz: optional (3, 3) rotation of the virtual camera (camera-frame points ``X' = Rz X``).
        fill: value outside the source image.

    Returns:
        (3, S, S) float.
    """
    _, H, W = image.shape
    Rz = torch.eye(3, dtype=torch.float64) if Rz is None else Rz.double()
    Hm = K.double() @ Rz.T @ torch.linalg.inv(K_crop.double())
    c = torch.arange(size, dtype=torch.float64) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    p = torch.stack([xx, yy, torch.ones_like(xx)], -1) @ Hm.T
    uv = p[..., :2] / p[..., 2:]
    grid = torch.stack([2 * uv[..., 0] / W - 1, 2 * uv[..., 1] / H - 1], -1).to(image.dtype)
    out = Fn.grid_sample(image[None] - fill, grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return out + fill
