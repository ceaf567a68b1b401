"""Pure-PyTorch z-buffer rasterizer (reference, fallback and test oracle).

Batched over images: every (triangle, pixel-in-its-bounding-box) pair becomes one
candidate, candidates are tested with edge functions at pixel centres ``(i + 0.5, j + 0.5)``
(both windings accepted), and the nearest candidate per pixel wins through two
``scatter_reduce`` passes over a flat ``B·H·W`` index. Depth is perspective-correct
(interpolated ``1/z``). Per-triangle work runs on (B, F) arrays gathered once per corner
(``index_select`` along the vertex axis); only the triangles that cover a pixel (and, with a
``pixel_mask``, touch a masked pixel) are enumerated further.
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


def _box_hits_mask(mask: Tensor, x0: Tensor, y0: Tensor, x1: Tensor, y1: Tensor) -> Tensor:
    """(B, F) bool, true where the pixel box ``[x0, x1) × [y0, y1)`` of a triangle (each (B, F)
    long, inside ``[0, W] × [0, H]``) holds at least one pixel of ``mask`` (B, H, W).

    Counted in O(1) per triangle with a summed-area table of the mask, so a masked render
    enumerates only the (triangle, pixel) pairs of triangles near the masked pixels. An empty
    box may count non-zero (both sides inverted); callers AND this with a non-empty box test."""
    B, H, W = mask.shape
    sat = torch.zeros(B, H + 1, W + 1, dtype=torch.int32, device=mask.device)
    sat[:, 1:, 1:] = mask.to(torch.int32).cumsum(1).cumsum(2)
    sat = sat.reshape(B, -1)
    r0, r1 = y0 * (W + 1), y1 * (W + 1)
    count = (sat.gather(1, r1 + x1) - sat.gather(1, r0 + x1)) - (sat.gather(1, r1 + x0) - sat.gather(1, r0 + x0))
    return count > 0


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
    B, V = verts.shape[:2]
    K = K.expand(B, 3, 3) if K.dim() == 2 else K
    dev, dt = verts.device, verts.dtype
    F = faces.shape[0]
    if pixel_mask is not None and pixel_mask.shape != (B, height, width):
        raise ValueError(f"rasterize: pixel_mask must be {(B, height, width)}, got {tuple(pixel_mask.shape)}")
    z = verts[..., 2]
    zc = z.clamp_min(near)
    u = verts[..., 0] / zc * K[:, 0, 0, None].to(dt) + K[:, 0, 2, None].to(dt)
    v = verts[..., 1] / zc * K[:, 1, 1, None].to(dt) + K[:, 1, 2, None].to(dt)
    # per face corner k: (B, F) screen u, v and camera z
    ft = faces.to(dev).t()
    cu = [u.index_select(1, ft[k]) for k in range(3)]
    cv = [v.index_select(1, ft[k]) for k in range(3)]
    cz = [z.index_select(1, ft[k]) for k in range(3)]
    x0 = (torch.minimum(torch.minimum(cu[0], cu[1]), cu[2]) - 0.5).ceil_().long().clamp_(0, width)
    y0 = (torch.minimum(torch.minimum(cv[0], cv[1]), cv[2]) - 0.5).ceil_().long().clamp_(0, height)
    x1 = (torch.maximum(torch.maximum(cu[0], cu[1]), cu[2]) - 0.5).floor_().long().clamp_(-1, width - 1)
    y1 = (torch.maximum(torch.maximum(cv[0], cv[1]), cv[2]) - 0.5).floor_().long().clamp_(-1, height - 1)
    bw, bh = (x1 - x0 + 1).clamp_min_(0), (y1 - y0 + 1).clamp_min_(0)
    # a triangle is drawn when its box holds a pixel centre and no corner is nearer than `near`
    live = (bw > 0) & (bh > 0) & (cz[0] > near) & (cz[1] > near) & (cz[2] > near)
    if pixel_mask is not None:
        live &= _box_hits_mask(pixel_mask, x0, y0, x1 + 1, y1 + 1)
    sel = live.view(-1).nonzero().squeeze(1)
    bw, bh, x0, y0 = bw.view(-1)[sel], bh.view(-1)[sel], x0.view(-1)[sel], y0.view(-1)[sel]
    n = bw * bh
    k = torch.repeat_interleave(torch.arange(sel.numel(), device=dev), n)  # candidate -> position in sel
    local = torch.arange(k.numel(), device=dev) - (torch.cumsum(n, 0) - n)[k]
    bwk = bw[k]
    px = x0[k] + local % bwk
    py = y0[k] + torch.div(local, bwk, rounding_mode="floor")
    tri = sel[k]
    img = torch.div(tri, F, rounding_mode="floor")
    if pixel_mask is not None:  # a touching box may still hold unmasked pixels
        keep = pixel_mask.reshape(-1)[(img * height + py) * width + px]
        tri, px, py, img = tri[keep], px[keep], py[keep], img[keep]
    qx, qy = px.to(dt) + 0.5, py.to(dt) + 0.5
    ax, ay, bx, by, cx, cy = (t.view(-1)[tri] for t in (cu[0], cv[0], cu[1], cv[1], cu[2], cv[2]))
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    ok = area.abs() > 1e-12
    safe = torch.where(ok, area, torch.ones_like(area))
    w0 = ((cx - bx) * (qy - by) - (cy - by) * (qx - bx)) / safe
    w1 = ((ax - cx) * (qy - cy) - (ay - cy) * (qx - cx)) / safe
    w2 = ((bx - ax) * (qy - ay) - (by - ay) * (qx - ax)) / safe
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & ok
    tri, px, py, img = tri[inside], px[inside], py[inside], img[inside]
    bary = torch.stack([w0[inside] / cz[0].view(-1)[tri], w1[inside] / cz[1].view(-1)[tri], w2[inside] / cz[2].view(-1)[tri]], -1)
    depth = 1.0 / bary.sum(-1)
    bary = bary * depth[:, None]
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
