"""Renderer: GL vs PyTorch agreement on an asymmetric scene, known answers, orientation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handflow.geometry import intrinsics
from handflow.render import Mesh, Renderer
from handflow.render.backgrounds import random_background
from handflow.render.gl import egl_available
from handflow.render.shading import random_light, random_skin_tone

needs_gl = pytest.mark.skipif(not egl_available(), reason="no headless EGL context on this machine (torch backend still tested)")


def _quad(x0: float, y0: float, x1: float, y1: float, z: float) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
    return v, torch.tensor([[0, 1, 2], [0, 2, 3]])


def _box(center, size) -> tuple[torch.Tensor, torch.Tensor]:
    c, s = torch.tensor(center, dtype=torch.float32), torch.tensor(size, dtype=torch.float32) / 2
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float32)
    f = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return c + corners * s, f


def _hand_scene():
    from handflow.geometry import axis_angle_to_matrix
    from handflow.hand import load_hand_model

    m = load_hand_model("openhand")
    R = torch.eye(3).expand(2, 16, 3, 3).clone()
    R[:, 0] = axis_angle_to_matrix(torch.tensor([[1.3, 0.2, 0.4], [1.1, -0.3, 2.0]]))
    R[1, 2] = axis_angle_to_matrix(torch.tensor([0.0, 0.0, 1.2]))
    o_r = m(R[:1], torch.zeros(1, 10), "right")
    o_l = m(R[1:], torch.randn(1, 10), "left")
    vr = o_r.vertices[0] + torch.tensor([-20.0, 10.0, 420.0])
    vl = o_l.vertices[0] + torch.tensor([40.0, -30.0, 470.0])
    return [
        Mesh(vertices=vr, faces=m.faces_for("right"), color=(0.9, 0.7, 0.6), part_labels=m.part_labels, hand_id=0),
        Mesh(vertices=vl, faces=m.faces_for("left"), color=(0.5, 0.35, 0.25), part_labels=m.part_labels, hand_id=1),
    ]


@needs_gl
def test_gl_and_torch_agree_on_asymmetric_scene() -> None:
    meshes = _hand_scene()
    K = intrinsics(310.0, 290.0, 70.0, 58.0)  # off-centre, fx != fy
    W, H = 144, 120  # non-square
    a = Renderer(W, H, "gl").render(meshes, K)
    b = Renderer(W, H, "torch").render(meshes, K)
    assert a.backend == "gl" and b.backend == "torch"
    ma, mb = a.face_id >= 0, b.face_id >= 0
    assert mb.sum() > 1000
    assert (ma == mb).float().mean() >= 0.995
    both = ma & mb
    assert (a.depth - b.depth)[both].abs().max() < 0.5
    assert (a.hand_id == b.hand_id).float().mean() >= 0.995
    assert set(torch.unique(b.hand_id).tolist()) == {-1, 0, 1}
    # colours agree closely where both see the same face
    same = both & (a.face_id == b.face_id)
    assert (a.rgb.float() - b.rgb.float())[same].abs().mean() < 3.0


@pytest.mark.parametrize("backend", ["torch", pytest.param("gl", marks=needs_gl)])
def test_known_pixel_set_and_depth(backend: str) -> None:
    # f = 100, c = 0: the square x, y in [10, 30] mm at z = 100 covers u, v in [10, 30) px;
    # pixel centres i + 0.5 with 10 <= i + 0.5 <= 30 -> i = 10..29
    K = intrinsics(100.0, 100.0, 0.0, 0.0)
    v, f = _quad(10.0, 10.0, 30.0, 30.0, 100.0)
    out = Renderer(40, 40, backend).render([Mesh(vertices=v, faces=f, hand_id=3)], K)
    expected = torch.zeros(40, 40, dtype=torch.bool)
    expected[10:30, 10:30] = True
    assert torch.equal(out.face_id >= 0, expected)
    assert torch.allclose(out.depth[expected], torch.full((400,), 100.0), atol=1e-3)
    assert torch.all(out.hand_id[expected] == 3) and torch.all(out.hand_id[~expected] == -1)
    assert torch.all(out.depth[~expected] == 0)


@pytest.mark.parametrize("backend", ["torch", pytest.param("gl", marks=needs_gl)])
def test_occlusion_order_both_ways(backend: str) -> None:
    K = intrinsics(100.0, 100.0, 20.0, 20.0)
    near, fn = _quad(-5.0, -5.0, 5.0, 5.0, 100.0)
    far, ff = _quad(-20.0, -20.0, 20.0, 20.0, 200.0)
    r = Renderer(40, 40, backend)
    for order in ([0, 1], [1, 0]):
        meshes = [Mesh(vertices=near, faces=fn, hand_id=0), Mesh(vertices=far, faces=ff, hand_id=1)]
        out = r.render([meshes[i] for i in order], K)
        assert out.hand_id[20, 20] == 0 and abs(out.depth[20, 20] - 100) < 1e-3
        assert out.hand_id[20, 27] == 1 and abs(out.depth[20, 27] - 200) < 1e-2


@pytest.mark.parametrize("backend", ["torch", pytest.param("gl", marks=needs_gl)])
def test_orientation_top_left(backend: str) -> None:
    K = intrinsics(100.0, 100.0, 32.0, 32.0)
    v, f = _box((-15.0, -15.0, 100.0), (6.0, 6.0, 6.0))  # up-left in camera space (y down)
    out = Renderer(64, 64, backend).render([Mesh(vertices=v, faces=f)], K)
    ys, xs = torch.nonzero(out.face_id >= 0, as_tuple=True)
    assert xs.float().mean() < 32 and ys.float().mean() < 32


def test_background_light_and_skin_are_seeded() -> None:
    a = random_background(48, 64, torch.Generator().manual_seed(4))
    b = random_background(48, 64, torch.Generator().manual_seed(4))
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    kinds = {random_background(16, 16, torch.Generator().manual_seed(s)).std() > 0 for s in range(20)}
    assert True in kinds
    assert random_light(torch.Generator().manual_seed(1)) == random_light(torch.Generator().manual_seed(1))
    tone = random_skin_tone(torch.Generator().manual_seed(2))
    assert all(0 <= c <= 1 for c in tone) and tone[0] >= tone[2]  # skin: red >= blue


def test_background_compositing_and_bad_input() -> None:
    K = intrinsics(100.0, 100.0, 0.0, 0.0)
    v, f = _quad(10.0, 10.0, 30.0, 30.0, 100.0)
    bg = np.full((40, 40, 3), 77, np.uint8)
    out = Renderer(40, 40, "torch").render([Mesh(vertices=v, faces=f)], K, background=bg)
    assert (out.rgb[0, 0] == 77).all() and not (out.rgb[20, 20] == 77).all()
    with pytest.raises(ValueError, match="background"):
        Renderer(40, 40, "torch").render([Mesh(vertices=v, faces=f)], K, background=bg[:10])
    with pytest.raises(ValueError, match="out of range"):
        Renderer(40, 40, "torch").render([Mesh(vertices=v, faces=f + 10)], K)
    with pytest.raises(ValueError, match="unknown render backend"):
        Renderer(40, 40, "vulkan")


@needs_gl
def test_torchvision_import_after_egl_context_does_not_crash() -> None:
    import subprocess
    import sys

    code = "from handflow.render import Renderer\nRenderer(32, 32, 'gl')\nimport torchvision.ops\nprint('alive')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "alive" in res.stdout, (res.returncode, res.stderr[-500:])


def _slow_zbuffer(V: torch.Tensor, F: torch.Tensor, K: torch.Tensor, H: int, W: int, near: float):
    """Per pixel and per triangle in Python loops: the nearest triangle covering each pixel
    centre (either winding, every corner beyond ``near``) and its perspective-correct depth."""
    uv = V[:, :2] / V[:, 2:] * K.diagonal()[:2] + K[:2, 2]
    face = torch.full((H, W), -1, dtype=torch.long)
    depth = torch.zeros(H, W, dtype=V.dtype)
    for y in range(H):
        for x in range(W):
            q, best = torch.tensor([x + 0.5, y + 0.5], dtype=V.dtype), float("inf")
            for f, (i, j, k) in enumerate(F.tolist()):
                if min(V[i, 2], V[j, 2], V[k, 2]) <= near:
                    continue
                a, b, c = uv[i], uv[j], uv[k]
                area = float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
                if abs(area) <= 1e-12:
                    continue
                w = [float((p1[0] - p0[0]) * (q[1] - p0[1]) - (p1[1] - p0[1]) * (q[0] - p0[0])) / area
                     for p0, p1 in ((b, c), (c, a), (a, b))]
                if min(w) < 0:
                    continue
                d = 1.0 / (w[0] / float(V[i, 2]) + w[1] / float(V[j, 2]) + w[2] / float(V[k, 2]))
                if d < best:
                    best, face[y, x], depth[y, x] = d, f, d
    return face, depth


def test_torch_rasterizer_matches_a_per_pixel_loop_with_near_plane_and_borders() -> None:
    """Random triangles (some crossing the image border, one with a corner nearer than
    ``near``, one seen edge-on) against the loop reference: same triangle and depth per pixel,
    and the near-plane triangle is never drawn."""
    from handflow.render.raster import rasterize

    g = torch.Generator().manual_seed(7)
    H, W, n = 14, 17, 12
    V = (torch.rand(3 * n, 3, generator=g, dtype=torch.float64) * torch.tensor([60.0, 60.0, 40.0], dtype=torch.float64)
         + torch.tensor([-30.0, -30.0, 80.0], dtype=torch.float64))
    V[0, 2] = 0.5  # triangle 0 crosses the near plane (near = 1)
    V[3:6, 0] = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)  # triangle 1 edge-on (x = 0 plane through the eye)
    F = torch.arange(3 * n).reshape(n, 3)
    K = torch.tensor([[25.0, 0, W / 2], [0, 25.0, H / 2], [0, 0, 1]], dtype=torch.float64)
    ref_face, ref_depth = _slow_zbuffer(V, F, K, H, W, near=1.0)
    out = rasterize(V, F, K, H, W, near=1.0)
    assert (ref_face >= 0).sum() > H * W // 4 and not (ref_face == 0).any()  # a real scene; the near triangle is culled
    assert torch.equal(out.face_id[0], ref_face)
    assert torch.allclose(out.depth[0], ref_depth)
    hit = ref_face >= 0
    assert torch.allclose(out.bary[0][hit].sum(-1), torch.ones(int(hit.sum()), dtype=torch.float64))


def test_raster_benchmark_reference_agrees_with_the_rasterizer(monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/bench_raster.py times the rasterizer against its earlier version; the ratio
    means something only while both give identical fragments (masked and full)."""
    import sys
    from pathlib import Path

    from handflow.render.raster import rasterize
    from handflow.render.visibility import _window_mask

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    bench = __import__("bench_raster")
    try:
        V, F, J, K = bench.two_hand_scenes(2, 48)
        mask = _window_mask(J, torch.ones(J.shape[:2], dtype=torch.bool), K, 48, 48)
        for m in (mask, None):
            now, before = rasterize(V, F, K, 48, 48, pixel_mask=m), bench.rasterize_before(V, F, K, 48, 48, pixel_mask=m)
            assert (now.face_id >= 0).sum() > 50
            for a in ("face_id", "depth", "bary"):
                assert torch.equal(getattr(now, a), getattr(before, a))
    finally:
        sys.modules.pop("bench_raster", None)
