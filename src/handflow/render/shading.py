"""Shading and its domain randomization: skin tones, lights, vertex normals."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from handflow.render.types import Light

__all__ = ["vertex_normals", "shade", "random_light", "random_skin_tone", "SKIN_TONES"]

#: anchor skin tones (linear-ish sRGB in [0,1]) from very light to very dark; random tones
#: interpolate between neighbours and jitter hue/brightness slightly
SKIN_TONES: tuple[tuple[float, float, float], ...] = (
    (0.96, 0.80, 0.69),
    (0.92, 0.72, 0.58),
    (0.85, 0.64, 0.50),
    (0.76, 0.54, 0.40),
    (0.62, 0.42, 0.30),
    (0.47, 0.31, 0.21),
    (0.34, 0.22, 0.15),
)


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted smooth normals: verts (V,3), faces (F,3) -> (V,3) unit."""
    tri = verts[faces]
    fn = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    vn = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), fn.repeat_interleave(3, 0))
    return vn / vn.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def shade(normal: Tensor, position: Tensor, albedo: Tensor, light: Light) -> Tensor:
    """Blinn-Phong with two-sided Lambert, camera at the origin.

    Args:
        normal: (..., 3) unit normals (camera frame).
        position: (..., 3) camera-frame points (for the view direction).
        albedo: (..., 3) RGB in [0, 1].
        light: :class:`Light`.

    Returns:
        (..., 3) RGB in [0, 1].
    """
    ldir = torch.tensor(light.direction, dtype=normal.dtype, device=normal.device)
    ldir = ldir / ldir.norm()
    view = -position / position.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    n = torch.where((normal * view).sum(-1, keepdim=True) < 0, -normal, normal)  # face the camera
    lam = (n * ldir).sum(-1, keepdim=True).clamp_min(0.0)
    h = ldir + view
    h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    spec = (n * h).sum(-1, keepdim=True).clamp_min(0.0) ** light.shininess
    lc = torch.tensor(light.color, dtype=normal.dtype, device=normal.device)
    rgb = albedo * lc * (light.ambient + light.diffuse * lam) + light.specular * spec * lc
    return rgb.clamp(0.0, 1.0)


def random_light(generator: torch.Generator | None = None) -> Light:
    """A random light from the camera's hemisphere, warm-to-cool tint and varied contrast."""
    u = torch.rand(8, generator=generator).tolist()
    theta = math.acos(1 - 0.9 * u[0])  # mostly frontal
    phi = 2 * math.pi * u[1]
    d = (math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), -math.cos(theta))
    warm = u[2] * 0.3 - 0.15
    color = (1.0 + warm, 1.0, 1.0 - warm)
    return Light(direction=d, color=color, ambient=0.2 + 0.3 * u[3], diffuse=0.5 + 0.4 * u[4],
                 specular=0.02 + 0.2 * u[5], shininess=8 + 40 * u[6])


def random_skin_tone(generator: torch.Generator | None = None) -> tuple[float, float, float]:
    """A skin tone interpolated between neighbouring :data:`SKIN_TONES` anchors, jittered."""
    u = torch.rand(5, generator=generator).tolist()
    x = u[0] * (len(SKIN_TONES) - 1)
    i = min(int(x), len(SKIN_TONES) - 2)
    t = x - i
    base = [a * (1 - t) + b * t for a, b in zip(SKIN_TONES[i], SKIN_TONES[i + 1])]
    bright = 0.9 + 0.2 * u[1]
    jit = [(v - 0.5) * 0.06 for v in u[2:5]]
    return tuple(min(max(c * bright + j, 0.0), 1.0) for c, j in zip(base, jit))  # type: ignore[return-value]
