"""Pinhole cameras in the InterHand2.6M / OpenCV convention.

* Camera frame: x right, y down, z forward; millimetres.
* World -> camera: ``X_cam = R (X_world − c)`` with ``R = camrot`` and ``c = campos``.
* Pixels are continuous coordinates in which pixel ``(i, j)`` (column, row) covers
  ``[i, i+1) × [j, j+1)``; its centre is at ``(i + 0.5, j + 0.5)``. ``u = fx X/Z + cx``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "intrinsics",
    "project",
    "unproject",
    "world_to_camera",
    "camera_to_world",
    "crop_intrinsics",
    "crop_points",
    "square_bbox",
]


def intrinsics(fx: Tensor | float, fy: Tensor | float, cx: Tensor | float, cy: Tensor | float) -> Tensor:
    """Build K (*, 3, 3) from broadcastable focal lengths and principal point (pixels)."""
    dtype = torch.get_default_dtype()
    fx, fy, cx, cy = (v if isinstance(v, Tensor) else torch.as_tensor(v, dtype=dtype) for v in (fx, fy, cx, cy))
    fx, fy, cx, cy = torch.broadcast_tensors(fx, fy, cx, cy)
    o, one = torch.zeros_like(fx), torch.ones_like(fx)
    return torch.stack([fx, o, cx, o, fy, cy, o, o, one], -1).reshape(*fx.shape, 3, 3)


def project(X: Tensor, K: Tensor, eps: float = 1e-8) -> Tensor:
    """Perspective projection.

    Args:
        X: (*, N, 3) camera-frame points (z > 0 in front).
        K: (*, 3, 3) intrinsics, broadcast against the leading dims of ``X``.
        eps: added to z (as InterHand2.6M does) to avoid division by zero.

    Returns:
        (*, N, 2) pixel coordinates.
    """
    if X.shape[-1] != 3:
        raise ValueError(f"project: X must be (*, N, 3), got {tuple(X.shape)}")
    z = X[..., 2:3] + eps
    xy = X[..., :2] / z
    f = torch.stack([K[..., 0, 0], K[..., 1, 1]], -1)[..., None, :]
    c = torch.stack([K[..., 0, 2], K[..., 1, 2]], -1)[..., None, :]
    return xy * f + c


def unproject(uv: Tensor, depth: Tensor, K: Tensor) -> Tensor:
    """Inverse of :func:`project` for known depth.

    Args:
        uv: (*, N, 2) pixels.
        depth: (*, N) camera z (mm).
        K: (*, 3, 3).

    Returns:
        (*, N, 3) camera-frame points.
    """
    fx, fy = K[..., 0, 0][..., None], K[..., 1, 1][..., None]
    cx, cy = K[..., 0, 2][..., None], K[..., 1, 2][..., None]
    x = (uv[..., 0] - cx) / fx * depth
    y = (uv[..., 1] - cy) / fy * depth
    return torch.stack([x, y, depth], -1)


def world_to_camera(X: Tensor, R: Tensor, c: Tensor) -> Tensor:
    """``X_cam = R (X − c)``. X (*, N, 3) world mm; R (*, 3, 3) camrot; c (*, 3) campos."""
    return (X - c[..., None, :]) @ R.transpose(-1, -2)


def camera_to_world(X: Tensor, R: Tensor, c: Tensor) -> Tensor:
    """Inverse of :func:`world_to_camera`: ``X = Rᵀ X_cam + c``."""
    return X @ R + c[..., None, :]


def crop_intrinsics(K: Tensor, bbox: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Intrinsics of a crop of box ``bbox`` resized to ``size``.

    The crop maps continuous pixel coordinates affinely:
    ``u' = (u − x0) · W'/w``, ``v' = (v − y0) · H'/h``.

    Args:
        K: (*, 3, 3) intrinsics of the full image.
        bbox: (*, 4) ``[x0, y0, w, h]`` in full-image pixels.
        size: output side ``S`` or ``(H', W')``.

    Returns:
        (*, 3, 3) crop intrinsics.
    """
    Hs, Ws = (size, size) if isinstance(size, int) else size
    x0, y0, w, h = bbox.unbind(-1)
    sx, sy = Ws / w, Hs / h
    A = torch.zeros(*bbox.shape[:-1], 3, 3, dtype=K.dtype, device=K.device)
    A[..., 0, 0] = sx
    A[..., 0, 2] = -x0 * sx
    A[..., 1, 1] = sy
    A[..., 1, 2] = -y0 * sy
    A[..., 2, 2] = 1
    return A @ K


def crop_points(uv: Tensor, bbox: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Map full-image pixels (*, N, 2) into a crop of ``bbox`` (*, 4) resized to ``size``."""
    Hs, Ws = (size, size) if isinstance(size, int) else size
    x0, y0, w, h = (b[..., None] for b in bbox.unbind(-1))
    return torch.stack([(uv[..., 0] - x0) * Ws / w, (uv[..., 1] - y0) * Hs / h], -1)


def square_bbox(uv: Tensor, valid: Tensor | None = None, scale: float = 1.2) -> Tensor:
    """Square box around points, enlarged by ``scale`` about its centre.

    Args:
        uv: (*, N, 2) pixels.
        valid: (*, N) bool mask; invalid points are ignored (at least one must be valid).
        scale: enlargement of the longer side of the tight box.

    Returns:
        (*, 4) ``[x0, y0, side, side]``.
    """
    if valid is None:
        valid = torch.ones(uv.shape[:-1], dtype=torch.bool, device=uv.device)
    if not bool(valid.any(-1).all()):
        raise ValueError("square_bbox: every item needs at least one valid point")
    big = torch.finfo(uv.dtype).max
    lo = torch.where(valid[..., None], uv, torch.full_like(uv, big)).amin(-2)
    hi = torch.where(valid[..., None], uv, torch.full_like(uv, -big)).amax(-2)
    centre = (lo + hi) / 2
    side = (hi - lo).amax(-1).clamp_min(1.0) * scale
    return torch.cat([centre - side[..., None] / 2, side[..., None], side[..., None]], -1)
