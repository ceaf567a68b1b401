"""Procedural random backgrounds for domain randomization (deterministic for a generator)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as Fn

__all__ = ["random_background", "BACKGROUND_KINDS"]

BACKGROUND_KINDS = ("noise", "stripes", "checker", "gradient", "flat", "blobs")


def _value_noise(h: int, w: int, g: torch.Generator, octaves: int = 4) -> torch.Tensor:
    """(3, H, W) multi-octave value noise in [0, 1]."""
    out = torch.zeros(3, h, w)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 2 ** (o + 1)
        grid = torch.rand(1, 3, cells + 1, cells + 1, generator=g)
        out += amp * Fn.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)[0]
        total += amp
        amp *= 0.5
    out = out / total
    return (out - out.amin()) / (out.amax() - out.amin()).clamp_min(1e-6)


def _palette(g: torch.Generator, n: int) -> torch.Tensor:
    return torch.rand(n, 3, 1, 1, generator=g)


def random_background(h: int, w: int, generator: torch.Generator | None = None) -> np.ndarray:
    """A random (H, W, 3) uint8 background: value noise, stripes, checker, gradient, flat
    colour or blurred blobs, chosen at random."""
    g = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(2**31, (1,))))
    kind = BACKGROUND_KINDS[int(torch.randint(len(BACKGROUND_KINDS), (1,), generator=g))]
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    c = _palette(g, 2)
    if kind == "noise":
        img = _value_noise(h, w, g) * (c[0] - c[1]).abs() * 2 + torch.minimum(c[0], c[1])
    elif kind in ("stripes", "checker"):
        ang = float(torch.rand(1, generator=g)) * np.pi
        freq = 3 + 20 * float(torch.rand(1, generator=g))
        s = torch.sin((xx * np.cos(ang) + yy * np.sin(ang)) * freq * np.pi)
        if kind == "checker":
            s = s * torch.sin((-xx * np.sin(ang) + yy * np.cos(ang)) * freq * np.pi)
        t = (s > 0).float()[None]
        img = c[0] * t + c[1] * (1 - t)
    elif kind == "gradient":
        ang = float(torch.rand(1, generator=g)) * 2 * np.pi
        t = ((xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang) + 0.7) / 1.4
        img = c[0] * t[None] + c[1] * (1 - t[None])
    elif kind == "flat":
        img = c[0].expand(3, h, w).clone()
    else:  # blobs
        img = c[0].expand(3, h, w).clone()
        for _ in range(int(torch.randint(3, 9, (1,), generator=g))):
            cx, cy, r = torch.rand(3, generator=g).tolist()
            m = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.05 + 0.25 * r) ** 2))[None]
            img = img * (1 - m) + _palette(g, 1)[0] * m
    img = img + 0.03 * torch.randn(3, h, w, generator=g)  # sensor-like noise
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
