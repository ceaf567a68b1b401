"""Tests of ``handflow synth``: InterHand2.6M layout, keys, types and units; geometric
consistency (projection lands on the rendered hands; NeuralAnnot parameters reproduce the
world joints); determinism; sharding + merge; crash safety; no collisions.

Until the real renderer / collision / NeuralAnnot modules are importable, the tests use
simple stand-ins defined here (a vertex-splat z-buffer, joint-sphere collision, the direct
identity-camera NeuralAnnot conversion of a model with zero mean pose and wrist pivot at
the origin); the real modules are used as soon as they exist.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from handflow.constants import IH42_JOINT_NAMES, IH42_PARENTS, NUM_JOINTS, RIGHT_ROOT, LEFT_ROOT
from handflow.data.synth import cameras as cam_mod
from handflow.data.synth import generate as gen
from handflow.data.synth import ih_writer as W
from handflow.data.synth import scenes
from handflow.geometry import axis_angle_to_matrix, matrix_to_axis_angle, project

SPLITS = ("train", "val", "test")
TINY = dict(frames=6, cameras=3, image_size=64, seed=7)


# ----------------------------------------------------------------------------- stand-ins
def _collide_standin(a, b) -> torch.Tensor:
    """Joint spheres (radius 9 mm) plus bone midpoints: collide when any two overlap."""

    def pts(o):
        j = o.joints
        from handflow.constants import IH_PARENTS

        mids = torch.stack([(j[:, i] + j[:, p]) / 2 for i, p in enumerate(IH_PARENTS) if p >= 0], 1)
        return torch.cat([j, mids], 1)

    d = torch.cdist(pts(a).double(), pts(b).double())
    return (d < 18.0).flatten(1).any(1)


class _SplatRenderer:
    """Vertex-splat z-buffer: every vertex paints a 3x3 pixel block (enough at 64 px)."""

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h

    def render(self, meshes, K, background=None, light=None):
        H, W_ = self.h, self.w
        depth = torch.full((H * W_,), float("inf"))
        hand = torch.full((H * W_,), -1, dtype=torch.long)
        for m in meshes:
            v = m.vertices.float()
            uv = project(v, K.float())
            for du in (-1, 0, 1):
                for dv in (-1, 0, 1):
                    x = torch.floor(uv[:, 0]).long() + du
                    y = torch.floor(uv[:, 1]).long() + dv
                    ok = (x >= 0) & (x < W_) & (y >= 0) & (y < H) & (v[:, 2] > 0)
                    idx = (y * W_ + x)[ok]
                    z = v[ok, 2]
                    cur = depth.clone()
                    depth.scatter_reduce_(0, idx, z, "amin")
                    won = depth[idx] == z
                    hand[idx[won & (z < cur[idx])]] = m.hand_id
        rgb = torch.as_tensor(background).float() / 255.0
        rgb = rgb.reshape(H * W_, 3).clone()
        for m in meshes:
            rgb[hand == m.hand_id] = torch.as_tensor(m.color).float()
        depth[torch.isinf(depth)] = 0.0
        return SimpleNamespace(rgb=rgb.reshape(H, W_, 3), depth=depth.reshape(H, W_), hand_id=hand.reshape(H, W_),
                               part_id=None, face_id=None)


def _visibility_standin(meshes, joints_list, K, hw, render):
    out = []
    for m, j in zip(meshes, joints_list):
        uv = project(j.float(), K.float())
        x = torch.floor(uv[:, 0]).long().clamp(0, hw[1] - 1)
        y = torch.floor(uv[:, 1]).long().clamp(0, hw[0] - 1)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < hw[1]) & (uv[:, 1] >= 0) & (uv[:, 1] < hw[0])
        out.append(inside & (render.hand_id[y, x] == m.hand_id))
    return out


def _neuralannot_standin(rotmats, betas, root, camrot, campos, model, side):
    """Identity camera, zero pose mean, pivot at the origin (true for openhand)."""
    R = camrot @ rotmats[:, 0]
    aa = matrix_to_axis_angle(torch.cat([R[:, None], rotmats[:, 1:]], 1)).flatten(1)
    aa[:, 3:] -= model.pose_mean(side).flatten().to(aa)
    trans = (camrot @ (root - campos)[..., None])[..., 0] / 1000.0
    return aa, betas.clone(), trans


def _standin_backends():
    from handflow.hand.registry import load_hand_model

    model = load_hand_model("openhand").double()

    def tone(g):
        return torch.rand(3, generator=g) * 0.5 + 0.4

    def bg(h, w, g):
        return (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()

    return gen.Backends(model, _collide_standin, _SplatRenderer, lambda v, f, c, p, h: SimpleNamespace(
        vertices=v, faces=f, color=c, part_labels=p, hand_id=h), _visibility_standin, _neuralannot_standin,
        lambda g: None, tone, bg)


def _real_backends_or_standin():
    try:
        return gen.default_backends("openhand")
    except ImportError:
        return _standin_backends()


@pytest.fixture(scope="module")
def backends():
    torch.set_num_threads(1)
    return _real_backends_or_standin()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, backends):
    root = tmp_path_factory.mktemp("synth")
    cfg = gen.SynthConfig(**TINY)
    res = gen.generate(root, cfg, backends=backends, progress=False)
    assert res["summary"] is not None
    return root, cfg, res["summary"]


# ----------------------------------------------------------------------------- cameras
def test_dome_cameras_look_at_target_and_are_rotations():
    g = torch.Generator().manual_seed(0)
    cams = cam_mod.dome_cameras(12, 128, g)
    elev = []
    for c in cams:
        R = c.camrot
        assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
        assert abs(float(torch.det(R)) - 1) < 1e-12
        # the target (origin) lies on the optical axis, in front, at the principal point
        Xc = c.world_to_camera(torch.zeros(1, 3, dtype=torch.float64))
        assert Xc[0, 2] > 0 and torch.allclose(Xc[0, :2], torch.zeros(2, dtype=torch.float64), atol=1e-9)
        r = float(torch.linalg.norm(c.campos))
        assert cam_mod.RADIUS_RANGE_MM[0] - 1e-6 <= r <= cam_mod.RADIUS_RANGE_MM[1] + 1e-6
        elev.append(math.degrees(math.asin(float(c.campos[2]) / r)))
        # world up (+z) points up in the image (−y), apart from the small roll
        up = R @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        assert up[1] < 0
    assert min(elev) < 0 < max(elev)  # upper hemisphere plus some below the horizon
    assert len({c.name for c in cams}) == 12


def test_look_at_rejects_degenerate():
    with pytest.raises(ValueError, match="parallel"):
        cam_mod.look_at(torch.tensor([0.0, 0.0, 5.0]), torch.zeros(3))
    with pytest.raises(ValueError, match="coincides"):
        cam_mod.look_at(torch.zeros(3), torch.zeros(3))


# ----------------------------------------------------------------------------- writer
def test_skeleton_text_matches_real_fixture_lines():
    lines = W.skeleton_text().splitlines()
    assert lines[0] == "# keypoint name, keypoint index, parent index"
    assert len(lines) == 1 + NUM_JOINTS
    assert lines[1] == "r_thumb4 0 1" and lines[4] == "r_thumb1 3 20" and lines[21] == "r_wrist 20 -1"
    assert lines[42] == "l_wrist 41 -1" and lines[22] == "l_thumb4 21 22"
    for j, line in enumerate(lines[1:]):
        name, idx, parent = line.split(" ")
        assert (name, int(idx), int(parent)) == (IH42_JOINT_NAMES[j], j, IH42_PARENTS[j])


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    p = tmp_path / "a" / "x.json"
    W.atomic_write_json(p, {"k": 1})
    assert json.loads(p.read_text()) == {"k": 1}

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(W.os, "replace", boom)
    with pytest.raises(OSError):
        W.atomic_write_json(p, {"k": 2})
    assert json.loads(p.read_text()) == {"k": 1}  # the old content stays visible


def test_bbox_rule():
    from handflow.data.synth.frames import bbox_from_joints

    uv = np.array([[10.0, 20.0], [30.0, 60.0], [500.0, 500.0]])
    x, y, w, h = bbox_from_joints(uv, np.array([1, 1, 0]))
    assert np.allclose([x, y, w, h], [20 - 12, 40 - 24, 24, 48])


def test_plan_splits_disjoint_and_covering():
    cfg = gen.SynthConfig(frames=300, cameras=4, image_size=64, seed=3)
    plan = gen.make_plan(cfg)
    assert sum(p.length for p in plan) == 300
    per = {s: sum(p.length for p in plan if p.split == s) for s in SPLITS}
    assert per == {"train": 240, "val": 30, "test": 30}
    subj = {s: {p.subject for p in plan if p.split == s} for s in SPLITS}
    assert not (subj["train"] & subj["val"]) and not (subj["train"] & subj["test"]) and not (subj["val"] & subj["test"])
    assert all(1 <= p.length <= 20 for p in plan)
    assert plan == gen.make_plan(cfg)
    with pytest.raises(ValueError, match="split"):
        gen.make_plan(gen.SynthConfig(frames=10, cameras=1, image_size=64, seed=0, splits=("train", "bogus")))


# ----------------------------------------------------------------------------- sequences
def test_slerp_endpoints_and_constant_speed():
    g = torch.Generator().manual_seed(1)
    R0 = axis_angle_to_matrix(torch.randn(4, 3, generator=g, dtype=torch.float64))
    R1 = axis_angle_to_matrix(torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.5) @ R0
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    Rt = scenes.slerp(R0, R1, t)
    assert torch.allclose(Rt[0], R0, atol=1e-10) and torch.allclose(Rt[-1], R1, atol=1e-10)
    steps = matrix_to_axis_angle(Rt[:-1].transpose(-1, -2) @ Rt[1:]).norm(dim=-1)  # (4 steps, 4)
    assert torch.allclose(steps, steps[:1].expand_as(steps), atol=1e-8)


def test_orient_maps_rest_axes():
    f = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    n = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    for side, rest_f in (("right", (-1.0, 0, 0)), ("left", (1.0, 0, 0))):
        R = scenes.orient(side, f, n)
        assert torch.allclose(R @ torch.tensor(rest_f, dtype=torch.float64), f)
        assert torch.allclose(R @ torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64), n)
        assert abs(float(torch.det(R)) - 1) < 1e-12
