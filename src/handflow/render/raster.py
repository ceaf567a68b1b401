"""Pure-PyTorch z-buffer rasterizer (reference, fallback and test oracle).

Batched over images: every (triangle, pixel-in-its-bounding-box) pair becomes one
candidate, candidates are tested with edge functions at pixel centres ``(i + 0.5, j + 0.5)``
(both windings accepted), and the nearest candidate per pixel wins through two
``scatter_reduce`` passes over a flat ``B·H·W`` index. Depth is perspective-correct
(interpolated ``1/z``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Fragments", "rasterize"]


@dataclass
class Fragments:
    """Rasterizer output for B images of H×W pixels.

    Attributes:
        face_id: (B, H, W) long, index into the image's faces, -1 = background.
        depth: (B, H, W) camera z in the vertices' unit (mm), 0 = background.
        bary: (B, H, W, 3) perspective-correct barycentric coordinates (0 on background).
    """

    face_id: Tensor
    depth: Tensor
    bary: Tensor


def _touches_mask(mask: Tensor, lo: Tensor, hi: Tensor, F: int) -> Tensor:
    """(B·F,) long, 1 where the pixel box ``[lo, hi]`` (inclusive, (B·F, 2) as x, y; empty when
    hi < lo) of a triangle holds at least one pixel of ``mask`` (B, H, W), else 0.

    Counted in O(1) per triangle with a summed-area table of the mask, so a masked render
    enumerates only the (triangle, pixel) pairs of triangles near the masked pixels."""
    B, H, W = mask.shape
    sat = torch.zeros(B, H + 1, W + 1, dtype=torch.int32, device=mask.device)
    sat[:, 1:, 1:] = mask.to(torch.int32).cumsum(1).cumsum(2)
    sat = sat.reshape(B, -1)
    img = torch.arange(B, device=mask.device).repeat_interleave(F)
    x0, y0 = lo[:, 0].clamp(0, W), lo[:, 1].clamp(0, H)
    x1, y1 = (hi[:, 0] + 1).clamp(0, W), (hi[:, 1] + 1).clamp(0, H)
    x1, y1 = torch.maximum(x1, x0), torch.maximum(y1, y0)

    def at(y: Tensor, x: Tensor) -> Tensor:
        return sat[img, y * (W + 1) + x]

    count = at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)
    return (count > 0).to(lo.dtype)


def rasterize(verts: Tensor, faces: Tensor, K: Tensor, height: int, width: int, near: float = 1.0,
              pixel_mask: Tensor | None = None) -> Fragments:
    """Rasterize meshes into z-buffers.

    Args:
        verts: (B, V, 3) camera-frame vertices (OpenCV: x right, y down, z forward), or (V, 3).
        faces: (F, 3) long, shared by the batch.
        K: (B, 3, 3) or (3, 3) intrinsics.
        height, width: image size in pixels.
        near: triangles with any vertex closer than this (same unit as verts) are skipped.
        pixel_mask: optional (B, H, W) bool: only these pixels are resolved (the others come
            out as background). Each pixel's result does not depend on other pixels, so masked
            pixels equal a full render; visibility queries that read a few windows use this to
            skip the edge tests and depth resolution of every other pixel.

    Returns:
        :class:`Fragments` (batch axis present even for a single (V, 3) input).
    """
    if verts.dim() == 2:
        verts = verts[None]
    B = verts.shape[0]
    K = K.expand(B, 3, 3) if K.dim() == 2 else K
    dev, dt = verts.device, verts.dtype
    F = faces.shape[0]
    z = verts[..., 2]
    f = torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None]
    c = torch.stack([K[:, 0, 2], K[:, 1, 2]], -1)[:, None]
    uv = verts[..., :2] / z.clamp_min(near)[..., None] * f.to(dt) + c.to(dt)  # (B, V, 2)
    tuv = uv[:, faces]  # (B, F, 3, 2)
    tz = z[:, faces]  # (B, F, 3)
    tuv = tuv.reshape(B * F, 3, 2)
    tz = tz.reshape(B * F, 3)
    lo = (tuv.amin(1) - 0.5).ceil().long()
    hi = (tuv.amax(1) - 0.5).floor().long()
    lo[:, 0].clamp_(0, width)
    lo[:, 1].clamp_(0, height)
    hi[:, 0].clamp_(-1, width - 1)
    hi[:, 1].clamp_(-1, height - 1)
    bw = (hi[:, 0] - lo[:, 0] + 1).clamp_min(0)
    bh = (hi[:, 1] - lo[:, 1] + 1).clamp_min(0)
    n = torch.where((tz > near).all(1), bw * bh, torch.zeros_like(bw))
    if pixel_mask is not None:
        if pixel_mask.shape != (B, height, width):
            raise ValueError(f"rasterize: pixel_mask must be {(B, height, width)}, got {tuple(pixel_mask.shape)}")
        n = n * _touches_mask(pixel_mask, lo, hi, F)  # cull triangles whose box holds no masked pixel
    tri = torch.repeat_interleave(torch.arange(B * F, device=dev), n)
    local = torch.arange(tri.numel(), device=dev) - (torch.cumsum(n, 0) - n)[tri]
    px = lo[tri, 0] + local % bw[tri]
    py = lo[tri, 1] + local // bw[tri]
    if pixel_mask is not None:
        keep = pixel_mask.reshape(-1)[((tri // F) * height + py) * width + px]
        tri, px, py = tri[keep], px[keep], py[keep]
    p = torch.stack([px, py], -1).to(dt) + 0.5
    a, b, cc = tuv[tri, 0], tuv[tri, 1], tuv[tri, 2]

    def edge(p0: Tensor, p1: Tensor, q: Tensor) -> Tensor:
        return (p1[:, 0] - p0[:, 0]) * (q[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (q[:, 0] - p0[:, 0])

    area = edge(a, b, cc)
    safe = torch.where(area.abs() > 1e-12, area, torch.ones_like(area))
    w0, w1, w2 = edge(b, cc, p) / safe, edge(cc, a, p) / safe, edge(a, b, p) / safe
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (area.abs() > 1e-12)
    tri, px, py = tri[inside], px[inside], py[inside]
    bary = torch.stack([w0, w1, w2], -1)[inside] / tz[tri]
    depth = 1.0 / bary.sum(-1)
    bary = bary * depth[:, None]
    img = tri // F
    pix = (img * height + py) * width + px
    N = B * height * width
    zbuf = torch.full((N,), float("inf"), dtype=dt, device=dev).scatter_reduce_(0, pix, depth, reduce="amin")
    win = depth <= zbuf[pix]
    cand = torch.full((N,), -1, dtype=torch.long, device=dev).scatter_reduce_(
        0, pix[win], torch.nonzero(win).squeeze(1), reduce="amax"
    )
    hit = cand >= 0
    face_id = torch.full((N,), -1, dtype=torch.long, device=dev)
    face_id[hit] = tri[cand[hit]] % F
    bary_img = torch.zeros(N, 3, dtype=dt, device=dev)
    bary_img[hit] = bary[cand[hit]]
    zbuf = torch.where(hit, zbuf, torch.zeros_like(zbuf))
    return Fragments(face_id.view(B, height, width), zbuf.view(B, height, width), bary_img.view(B, height, width, 3))
