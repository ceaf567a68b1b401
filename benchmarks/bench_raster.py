"""The PyTorch z-buffer rasterizer, now vs before its per-triangle rewrite, side by side.

Scenes: two posed ``openhand`` hands (10,304 triangles per scene), 32 scenes per call at
128 px, rendered in full and with MultiHands' visibility mask (the 3×3 windows of the 42
joints, :func:`handflow.render.visibility._window_mask`). ``before`` is the rasterizer as it
was until commit da4ee13, kept here as the reference: it gathered each triangle's corners
as a (B, F, 3, 2) tensor, reduced them with ``amin``/``amax`` over the corner axis, culled with
2-D advanced indexing and enumerated every triangle. Both must give identical fragments.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_raster.py [--repeats 7]

Timings are the median of ``--repeats`` calls after one warm-up, the two rasterizers called in
turn (1 CPU thread).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from handflow.geometry import axis_angle_to_matrix
from handflow.hand import load_hand_model
from handflow.render.raster import Fragments, rasterize
from handflow.render.visibility import _window_mask


def rasterize_before(verts: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, height: int, width: int,
                     near: float = 1.0, pixel_mask: torch.Tensor | None = None) -> Fragments:
    """The rasterizer before commit da4ee13 (reference for the ratio)."""
    B, F = verts.shape[0], faces.shape[0]
    dt = verts.dtype
    z = verts[..., 2]
    f = torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None]
    c = torch.stack([K[:, 0, 2], K[:, 1, 2]], -1)[:, None]
    uv = verts[..., :2] / z.clamp_min(near)[..., None] * f.to(dt) + c.to(dt)
    tuv, tz = uv[:, faces].reshape(B * F, 3, 2), z[:, faces].reshape(B * F, 3)
    lo, hi = (tuv.amin(1) - 0.5).ceil().long(), (tuv.amax(1) - 0.5).floor().long()
    lo[:, 0].clamp_(0, width)
    lo[:, 1].clamp_(0, height)
    hi[:, 0].clamp_(-1, width - 1)
    hi[:, 1].clamp_(-1, height - 1)
    bw, bh = (hi[:, 0] - lo[:, 0] + 1).clamp_min(0), (hi[:, 1] - lo[:, 1] + 1).clamp_min(0)
    n = torch.where((tz > near).all(1), bw * bh, torch.zeros_like(bw))
    if pixel_mask is not None:
        sat = torch.zeros(B, height + 1, width + 1, dtype=torch.int32)
        sat[:, 1:, 1:] = pixel_mask.to(torch.int32).cumsum(1).cumsum(2)
        sat = sat.reshape(B, -1)
        img = torch.arange(B).repeat_interleave(F)
        x0, y0 = lo[:, 0].clamp(0, width), lo[:, 1].clamp(0, height)
        x1, y1 = (hi[:, 0] + 1).clamp(0, width), (hi[:, 1] + 1).clamp(0, height)
        x1, y1 = torch.maximum(x1, x0), torch.maximum(y1, y0)

        def at(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return sat[img, y * (width + 1) + x]

        n = n * ((at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)) > 0).to(n.dtype)
    tri = torch.repeat_interleave(torch.arange(B * F), n)
    local = torch.arange(tri.numel()) - (torch.cumsum(n, 0) - n)[tri]
    px, py = lo[tri, 0] + local % bw[tri], lo[tri, 1] + local // bw[tri]
    if pixel_mask is not None:
        keep = pixel_mask.reshape(-1)[((tri // F) * height + py) * width + px]
        tri, px, py = tri[keep], px[keep], py[keep]
    p = torch.stack([px, py], -1).to(dt) + 0.5
    a, b, cc = tuv[tri, 0], tuv[tri, 1], tuv[tri, 2]

    def edge(p0: torch.Tensor, p1: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return (p1[:, 0] - p0[:, 0]) * (q[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (q[:, 0] - p0[:, 0])

    area = edge(a, b, cc)
    safe = torch.where(area.abs() > 1e-12, area, torch.ones_like(area))
    w0, w1, w2 = edge(b, cc, p) / safe, edge(cc, a, p) / safe, edge(a, b, p) / safe
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (area.abs() > 1e-12)
    tri, px, py = tri[inside], px[inside], py[inside]
    bary = torch.stack([w0, w1, w2], -1)[inside] / tz[tri]
    depth = 1.0 / bary.sum(-1)
    bary = bary * depth[:, None]
    pix = ((tri // F) * height + py) * width + px
    N = B * height * width
    zbuf = torch.full((N,), float("inf"), dtype=dt).scatter_reduce_(0, pix, depth, reduce="amin")
    win = depth <= zbuf[pix]
    cand = torch.full((N,), -1, dtype=torch.long).scatter_reduce_(0, pix[win], torch.nonzero(win).squeeze(1), reduce="amax")
    hit = cand >= 0
    face_id = torch.full((N,), -1, dtype=torch.long)
    face_id[hit] = tri[cand[hit]] % F
    bary_img = torch.zeros(N, 3, dtype=dt)
    bary_img[hit] = bary[cand[hit]]
    zbuf = torch.where(hit, zbuf, torch.zeros_like(zbuf))
    return Fragments(face_id.view(B, height, width), zbuf.view(B, height, width), bary_img.view(B, height, width, 3))


def two_hand_scenes(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` scenes of two prior-posed hands side by side 450 mm away: vertices (n, 2V, 3),
    faces (2F, 3), joints (n, 42, 3), intrinsics (n, 3, 3) for a ``size`` px crop."""
    model = load_hand_model("openhand")
    g = torch.Generator().manual_seed(seed)
    out_v, out_j, faces = [], [], []
    for h, (side, dx) in enumerate((("right", -40.0), ("left", 40.0))):
        R = torch.eye(3).expand(n, 16, 3, 3).clone()
        R[:, 0] = axis_angle_to_matrix(torch.randn(n, 3, generator=g))
        R[:, 1:] = model.pose_prior.sample(n, side, g)
        with torch.no_grad():
            o = model(R, torch.zeros(n, 10), side)
        off = torch.tensor([dx, 0.0, 450.0])
        out_v.append(o.vertices + off)
        out_j.append(o.joints + off)
        faces.append(model.faces_for(side) + h * o.vertices.shape[1])
    K = torch.tensor([[2.2 * size, 0, size / 2], [0, 2.2 * size, size / 2], [0, 0, 1]]).expand(n, 3, 3)
    return torch.cat(out_v, 1), torch.cat(faces), torch.cat(out_j, 1), K


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each function, the functions called in turn (one warm-up
    call each), so that a change of machine load affects them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--scenes", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(1)
    V, F, J, K = two_hand_scenes(args.scenes, args.size)
    mask = _window_mask(J, torch.ones(J.shape[:2], dtype=torch.bool), K, args.size, args.size)
    print(f"{args.scenes} scenes x {len(F)} triangles at {args.size} px; mask: {mask.float().mean():.1%} of the pixels")
    print(f"{'render':<10}{'now (ms)':>10}{'before (ms)':>13}{'ratio':>8}")
    S = args.size
    for name, m in (("masked", mask), ("full", None)):
        now, before = rasterize(V, F, K, S, S, pixel_mask=m), rasterize_before(V, F, K, S, S, pixel_mask=m)
        if not all(torch.equal(getattr(now, a), getattr(before, a)) for a in ("face_id", "depth", "bary")):
            raise SystemExit(f"{name}: the two rasterizers disagree")
        t = interleaved_ms({"now": partial(rasterize, V, F, K, S, S, pixel_mask=m),
                            "before": partial(rasterize_before, V, F, K, S, S, pixel_mask=m)}, args.repeats)
        print(f"{name:<10}{t['now']:>10.1f}{t['before']:>13.1f}{t['before'] / t['now']:>7.2f}x")


if __name__ == "__main__":
    main()
