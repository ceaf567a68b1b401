"""Per-joint visibility on constructed scenes whose answer is known."""

from __future__ import annotations

import torch
from test_render import _box

from handflow.geometry import intrinsics
from handflow.render import Mesh, Renderer
from handflow.render.visibility import joint_visibility, joint_visibility_batch

K = intrinsics(200.0, 200.0, 48.0, 48.0)
SIZE = (96, 96)


def _finger(center, length=60.0, radius=8.0):
    """A box 'finger' along x with joints on its axis (inside the surface by ``radius``)."""
    v, f = _box(center, (length, 2 * radius, 2 * radius))
    c = torch.tensor(center)
    joints = torch.stack([c + torch.tensor([t, 0.0, 0.0]) for t in (-20.0, 0.0, 20.0)])
    return v, f, joints


def test_object_behind_another_is_hidden() -> None:
    vf, ff, jf = _finger((0.0, 0.0, 400.0))
    vb, fb, jb = _finger((0.0, 0.0, 500.0))
    meshes = [Mesh(vertices=vf, faces=ff, hand_id=0), Mesh(vertices=vb, faces=fb, hand_id=1)]
    vis_f, vis_b = joint_visibility(meshes, [jf, jb], K, SIZE)
    assert vis_f.all() and not vis_b.any()
    # swap depths: the answer swaps
    vb2, fb2, jb2 = _finger((0.0, 0.0, 300.0))
    vis_f, vis_b = joint_visibility([meshes[0], Mesh(vertices=vb2, faces=fb2, hand_id=1)], [jf, jb2], K, SIZE)
    assert not vis_f.any() and vis_b.all()


def test_finger_folded_behind_the_palm_is_self_occluded() -> None:
    palm_v, palm_f = _box((0.0, 0.0, 400.0), (80.0, 80.0, 20.0))  # front face at z = 390
    fv, ff = _box((0.0, 0.0, 430.0), (60.0, 16.0, 16.0))  # finger 30 mm behind the palm
    v = torch.cat([palm_v, fv])
    f = torch.cat([palm_f, ff + len(palm_v)])
    joints = torch.tensor([[0.0, 0.0, 400.0], [0.0, 0.0, 430.0], [20.0, 0.0, 430.0]])  # palm centre, finger joints
    (vis,) = joint_visibility([Mesh(vertices=v, faces=f)], [joints], K, SIZE)
    assert vis.tolist() == [True, False, False]


def test_joint_outside_image_or_behind_camera_is_invisible() -> None:
    v, f, j = _finger((0.0, 0.0, 400.0))
    outside = torch.tensor([[500.0, 0.0, 400.0], [0.0, 0.0, -50.0]])
    (vis,) = joint_visibility([Mesh(vertices=v, faces=f)], [torch.cat([j, outside])], K, SIZE)
    assert vis.tolist() == [True, True, True, False, False]


def test_batch_equals_single_scene_and_reuses_render() -> None:
    g = torch.Generator().manual_seed(0)
    B = 5
    vs, js, singles = [], [], []
    for b in range(B):
        off = torch.randn(2, 3, generator=g) * torch.tensor([30.0, 30.0, 60.0])
        v0, f0, j0 = _finger((0.0, 0.0, 420.0))
        v1, f1, j1 = _finger((10.0, 5.0, 440.0))
        v0, j0, v1, j1 = v0 + off[0], j0 + off[0], v1 + off[1], j1 + off[1]
        vs.append((v0, v1))
        js.append((j0, j1))
        meshes = [Mesh(vertices=v0, faces=f0, hand_id=0), Mesh(vertices=v1, faces=f1, hand_id=1)]
        single = joint_visibility(meshes, [j0, j1], K, SIZE)
        rendered = Renderer(SIZE[1], SIZE[0], "torch").render(meshes, K)
        assert all(torch.equal(a, b) for a, b in zip(single, joint_visibility(meshes, [j0, j1], K, SIZE, render=rendered)))
        singles.append(torch.stack(single))
    V = torch.stack([torch.stack(v) for v in vs])  # (B, 2, 8, 3)
    J = torch.stack([torch.stack(j) for j in js])
    batch = joint_visibility_batch(V, [f0, f1], J, K.expand(B, 3, 3), SIZE)
    assert torch.equal(batch, torch.stack(singles))
    as_lists = joint_visibility_batch([V[:, 0], V[:, 1]], [f0, f1], [J[:, 0], J[:, 1]], K.expand(B, 3, 3), SIZE)
    assert torch.equal(as_lists, batch)


def test_query_windows_give_the_full_answer_on_queried_joints() -> None:
    """With ``query``, only the queried joints' 3x3 windows are rasterized: their answers equal
    the full render's, and the masked z-buffer equals the full one inside the windows."""
    from handflow.render.raster import rasterize
    from handflow.render.visibility import _window_mask

    g = torch.Generator().manual_seed(1)
    B = 6
    V, J = [], []
    for _ in range(B):
        off = torch.randn(2, 3, generator=g) * torch.tensor([25.0, 25.0, 40.0])
        v0, f0, j0 = _finger((0.0, 0.0, 420.0))
        v1, f1, j1 = _finger((8.0, 4.0, 445.0))
        V.append(torch.stack([v0 + off[0], v1 + off[1]]))
        J.append(torch.stack([j0 + off[0], j1 + off[1]]))
    V, J = torch.stack(V), torch.stack(J)
    Kb = K.expand(B, 3, 3)
    full = joint_visibility_batch(V, [f0, f1], J, Kb, SIZE)
    assert full.any() and not full.all()  # both answers occur, so the comparison can fail
    query = torch.rand(full.shape, generator=g) < 0.5
    part = joint_visibility_batch(V, [f0, f1], J, Kb, SIZE, query=query)
    assert torch.equal(part[query], full[query])
    mask = _window_mask(J.flatten(1, 2), query.flatten(1), Kb, *SIZE)
    F = torch.cat([f0, f1 + V.shape[2]])
    a = rasterize(V.flatten(1, 2), F, Kb, *SIZE)
    m = rasterize(V.flatten(1, 2), F, Kb, *SIZE, pixel_mask=mask)
    assert torch.equal(m.face_id[mask], a.face_id[mask]) and torch.equal(m.depth[mask], a.depth[mask])
    assert (m.face_id[~mask] == -1).all() and mask.sum() < mask.numel()


def test_masked_render_culls_without_changing_masked_pixels() -> None:
    """The summed-area-table cull of a masked render (triangles whose pixel box holds no masked
    pixel are never enumerated) keeps every masked pixel equal to the full render, for sparse
    random masks, masks on the image border and an empty mask."""
    from handflow.render.raster import rasterize

    g = torch.Generator().manual_seed(3)
    B, H, W, Fn = 3, 24, 20, 60
    V = torch.rand(B, 3 * Fn, 3, generator=g) * torch.tensor([40.0, 40.0, 50.0]) + torch.tensor([-20.0, -20.0, 100.0])
    F = torch.arange(3 * Fn).reshape(Fn, 3)
    K = torch.tensor([[60.0, 0, W / 2], [0, 60.0, H / 2], [0, 0, 1]]).expand(B, 3, 3)
    full = rasterize(V, F, K, H, W)
    for density in (0.0, 0.03, 0.3):
        mask = torch.rand(B, H, W, generator=g) < density
        mask[0, 0, :] = True  # a border row
        m = rasterize(V, F, K, H, W, pixel_mask=mask)
        assert torch.equal(m.face_id[mask], full.face_id[mask])
        assert torch.allclose(m.depth[mask], full.depth[mask])
        assert (m.face_id[~mask] == -1).all()
