"""Rotation conversions: 6D (Zhou et al. 2019) and axis-angle <-> rotation matrix.

All functions are batched over any leading shape ``*`` and differentiable.

**6D layout** (``docs/conventions.md``): the first two *columns* of the rotation matrix,
``d6 = [R[:, 0], R[:, 1]] = (R00, R10, R20, R01, R11, R21)``. Zhou et al., "On the
Continuity of Rotation Representations in Neural Networks", CVPR 2019.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "rot6d_to_matrix",
    "matrix_to_rot6d",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "rot6d_orthonormality_residual",
    "skew",
]


def _check_last(x: Tensor, shape: tuple[int, ...], name: str) -> None:
    if x.shape[x.dim() - len(shape) :] != shape:
        raise ValueError(f"{name}: expected shape (*, {', '.join(map(str, shape))}), got {tuple(x.shape)}")


def rot6d_to_matrix(d6: Tensor, eps: float = 1e-8) -> Tensor:
    """Gram-Schmidt map from 6D to a rotation matrix.

    Args:
        d6: (*, 6) two 3-vectors ``a1 = d6[..., :3]``, ``a2 = d6[..., 3:]`` (the first two
            columns, possibly not orthonormal).
        eps: floor on vector norms.

    Returns:
        (*, 3, 3) rotation matrix with columns ``b1, b2, b1 x b2``.
    """
    _check_last(d6, (6,), "rot6d_to_matrix")
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(eps)
    a2p = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2p / a2p.norm(dim=-1, keepdim=True).clamp_min(eps)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(R: Tensor) -> Tensor:
    """Rotation matrix (*, 3, 3) -> 6D (*, 6): its first two columns, concatenated."""
    _check_last(R, (3, 3), "matrix_to_rot6d")
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def rot6d_orthonormality_residual(d6: Tensor) -> Tensor:
    """``AᵀA − I₂`` for ``A = [a1 a2]`` (3×2), the quantity penalized by ``L_R``.

    Args:
        d6: (*, 6) raw 6D output.

    Returns:
        (*, 2, 2) residual; zero iff the two columns are orthonormal.
    """
    _check_last(d6, (6,), "rot6d_orthonormality_residual")
    A = torch.stack([d6[..., :3], d6[..., 3:]], dim=-1)  # (*, 3, 2)
    eye = torch.eye(2, dtype=d6.dtype, device=d6.device)
    return A.transpose(-1, -2) @ A - eye


def skew(v: Tensor) -> Tensor:
    """Cross-product matrix: (*, 3) -> (*, 3, 3) with ``skew(v) @ w == v × w``."""
    _check_last(v, (3,), "skew")
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape, 3)


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rodrigues' formula, stable at zero angle (Taylor series below 1e-4 rad).

    Args:
        aa: (*, 3) axis * angle (radians).

    Returns:
        (*, 3, 3) rotation matrix.
    """
    _check_last(aa, (3,), "axis_angle_to_matrix")
    theta2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # (*, 1, 1)
    theta = theta2.clamp_min(1e-24).sqrt()
    small = theta2 < 1e-8
    # sin(t)/t and (1 - cos t)/t^2 with series near 0
    sinc = torch.where(small, 1 - theta2 / 6 + theta2 * theta2 / 120, torch.sin(theta) / theta)
    cosc = torch.where(small, 0.5 - theta2 / 24 + theta2 * theta2 / 720, (1 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    K = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + sinc * K + cosc * (K @ K)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """Rotation matrix -> axis-angle with angle in [0, π], stable near 0 and near π.

    Near 0 the axis comes from the skew part; near π (where the skew part vanishes) the
    axis comes from the largest column of ``(R + I) / 2 = u uᵀ`` with its sign fixed by
    the skew part.

    Args:
        R: (*, 3, 3) rotation matrix.

    Returns:
        (*, 3) axis * angle.
    """
    _check_last(R, (3, 3), "matrix_to_axis_angle")
    trace = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    cos = ((trace - 1) / 2).clamp(-1.0, 1.0)
    w = torch.stack(
        [R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1
    )  # 2 sin(theta) * axis
    sin = 0.5 * w.norm(dim=-1)
    theta = torch.atan2(sin, cos)
    # regular branch: axis * theta = w * theta / (2 sin theta)
    small = theta < 1e-4
    factor = torch.where(small, 0.5 + theta**2 / 12, theta / (2 * sin.clamp_min(1e-30)))
    aa_regular = w * factor[..., None]
    # near-pi branch: (R + Rᵀ)/2 − cos(t) I = (1 − cos t) u uᵀ, exact for any angle
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    B = (R + R.transpose(-1, -2)) / 2 - cos[..., None, None] * eye
    diag = torch.diagonal(B, dim1=-2, dim2=-1)
    k = diag.argmax(-1)
    col = torch.gather(B, -1, k[..., None, None].expand(*B.shape[:-1], 1)).squeeze(-1)
    u = col / col.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    sign = torch.where((u * w).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(R.dtype)
    aa_pi = u * sign * theta[..., None]
    near_pi = (cos < -0.9)[..., None]
    return torch.where(near_pi, aa_pi, aa_regular)
