"""Root parameterization ``(u, v, log_s)`` <-> 3D wrist position (SPEC section 2).

With a square crop of side ``S`` pixels and crop intrinsics ``K``:

* ``root_uv = 2 · (u, v) / S − 1`` is the projected wrist in normalized crop units
  (``[-1, 1]`` spans the crop's outer pixel edges);
* ``f_n = 2 · fx / S`` is the focal length in the same units;
* ``s = f_n / Z_root`` and ``log_s = log s``;
* the wrist is ``Z_root · K⁻¹ [u, v, 1]ᵀ`` with ``Z_root = f_n / exp(log_s)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handflow.geometry.camera import project, unproject

__all__ = ["root_to_uvs", "uvs_to_root"]


def root_to_uvs(root: Tensor, K: Tensor, size: int) -> Tensor:
    """Camera-frame wrist (*, 3) mm -> ``(u_n, v_n, log_s)`` (*, 3) for a crop of side ``size``.

    Args:
        root: (*, 3) wrist in the camera frame, z > 0.
        K: (*, 3, 3) crop intrinsics.
        size: crop side ``S`` in pixels.
    """
    if bool((root[..., 2] <= 0).any()):
        raise ValueError("root_to_uvs: wrist must be in front of the camera (z > 0)")
    uv = project(root[..., None, :], K, eps=0.0)[..., 0, :]
    uv_n = 2 * uv / size - 1
    f_n = 2 * K[..., 0, 0] / size
    log_s = torch.log(f_n / root[..., 2])
    return torch.cat([uv_n, log_s[..., None]], -1)


def uvs_to_root(uvs: Tensor, K: Tensor, size: int) -> Tensor:
    """Inverse of :func:`root_to_uvs`: (*, 3) -> camera-frame wrist (*, 3) mm."""
    uv = (uvs[..., :2] + 1) * size / 2
    f_n = 2 * K[..., 0, 0] / size
    z = f_n / torch.exp(uvs[..., 2])
    return unproject(uv[..., None, :], z[..., None], K)[..., 0, :]
