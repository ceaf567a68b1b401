"""MultiHands end to end: independent re-check of every accepted annotation, resume, shards,
determinism, reader round trip, training wrapper.

Targets are two-hand scenes built from OpenHand prior samples (no dataset needed). Visibility
is ``handflow.render.visibility`` when it is installed, otherwise a small vertex-splat z-buffer
defined here (the re-check then uses its single-scene loop version).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import random_rotmats

from handflow.constants import IH_TIPS, NUM_HAND_JOINTS, NUM_JOINTS, SIDES
from handflow.errors import SettingsMismatch
from handflow.geometry.camera import project
from handflow.hand.collision import collide
from handflow.hand.registry import load_hand_model
from handflow.multihands import io as mh_io
from handflow.multihands.generate import GenerateConfig, generate, targets_from_items
from handflow.multihands.posing import MESH_CHUNK, has_fast_path, pose_joints, pose_meshes
from handflow.params import pack, pack_hand, unpack

SIZE = 48
FOCAL = 80.0
DEPTH = 420.0


@pytest.fixture(scope="module")
def model():
    return load_hand_model("openhand")


# ----------------------------------------------------------------------------- visibility
def _render_available() -> bool:
    try:
        from handflow.render.visibility import joint_visibility, joint_visibility_batch  # noqa: F401
    except ImportError:
        return False
    return True


def _splat_single(verts: list[torch.Tensor], joints: list[torch.Tensor], K: torch.Tensor, hw) -> list[torch.Tensor]:
    """One scene: per hand (V,3) vertices, (21,3) joints -> per hand (21,) visible.

    Nearest-vertex z-buffer: a joint is visible when the front-most vertex at its pixel belongs
    to its own hand and lies no more than ``TOL`` mm in front of the joint.
    """
    H, W = hw
    TOL = 12.0
    best = torch.full((H, W), math.inf, dtype=torch.float64)
    owner = torch.full((H, W), -1, dtype=torch.long)
    for h, v in enumerate(verts):
        uv = project(v.double(), K.double())
        for k in range(v.shape[0]):
            x, y = int(uv[k, 0]), int(uv[k, 1])
            if 0 <= x < W and 0 <= y < H and v[k, 2] < best[y, x]:
                best[y, x], owner[y, x] = float(v[k, 2]), h
    out = []
    for h, j in enumerate(joints):
        uv = project(j.double(), K.double())
        vis = torch.zeros(j.shape[0], dtype=torch.bool)
        for k in range(j.shape[0]):
            x, y = int(uv[k, 0]), int(uv[k, 1])
            if 0 <= x < W and 0 <= y < H and owner[y, x] == h:
                vis[k] = float(best[y, x]) >= float(j[k, 2]) - TOL
        out.append(vis)
    return out


def _splat_batch(verts, faces, joints, K, hw):
    """Vectorized twin of :func:`_splat_single` (the engine's :data:`VisibilityFn`)."""
    P, _, V, _ = verts.shape
    H, W = hw
    TOL = 12.0
    v = verts.double().reshape(P, 2 * V, 3)
    uv = project(v, K.double()[:, None].expand(P, 1, 3, 3).reshape(P, 3, 3))
    x, y = uv[..., 0].floor().long(), uv[..., 1].floor().long()
    inside = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    pix = torch.where(inside, y * W + x, H * W)  # H*W = dump slot
    flat = torch.full((P, H * W + 1), math.inf, dtype=torch.float64)
    flat.scatter_reduce_(1, pix, v[..., 2], reduce="amin")
    hand = torch.arange(2).repeat_interleave(V).expand(P, -1)
    is_min = v[..., 2] == flat.gather(1, pix)
    # owner: the highest hand index among vertices at the minimum (matches the loop's strict <
    # only when there are no exact ties, which are measure-zero for float depths)
    own = torch.full((P, H * W + 1), -1, dtype=torch.long)
    own.scatter_reduce_(1, pix, torch.where(is_min & inside, hand, -1), reduce="amax")
    j = joints.double().reshape(P, NUM_JOINTS, 3)
    ju = project(j, K.double())
    jx, jy = ju[..., 0].floor().long(), ju[..., 1].floor().long()
    jin = (jx >= 0) & (jx < W) & (jy >= 0) & (jy < H)
    jp = torch.where(jin, jy * W + jx, H * W)
    jh = torch.arange(2).repeat_interleave(NUM_HAND_JOINTS).expand(P, -1)
    vis = jin & (own.gather(1, jp) == jh) & (flat.gather(1, jp) >= j[..., 2] - TOL)
    return vis.reshape(P, 2, NUM_HAND_JOINTS)


def single_visibility(model, rotmats, betas, root, K):
    """Visibility of one scene, recomputed from scratch: (42,) bool."""
    outs = [model(rotmats[h][None], betas[h][None], side=s).translate(root[h][None]) for h, s in enumerate(SIDES)]
    if _render_available():
        from handflow.render import Mesh
        from handflow.render.visibility import joint_visibility

        # the dataset's calling convention (handflow.data.synth.frames): hand ids 0 right, 1 left
        meshes = [Mesh(vertices=o.vertices[0].float(), faces=model.faces_for(s), color=torch.tensor([0.8, 0.6, 0.5]),
                       part_labels=model.part_labels, hand_id=h) for h, (o, s) in enumerate(zip(outs, SIDES))]
        vis = joint_visibility(meshes, [o.joints[0].float() for o in outs], K.float(), (SIZE, SIZE))
        return torch.cat([torch.as_tensor(v) for v in vis])
    return torch.cat(_splat_single([o.vertices[0] for o in outs], [o.joints[0] for o in outs], K, (SIZE, SIZE)))


def batch_visibility():
    if _render_available():
        from handflow.multihands.generate import default_visibility

        return default_visibility()
    return _splat_batch


# ----------------------------------------------------------------------------- targets
def make_items(model, n: int, seed: int = 0) -> list[dict]:
    """``n`` two-hand scenes from prior samples, as dataset items (no image)."""
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1]], dtype=torch.float64)
    items: list[dict] = []
    while len(items) < n:
        i = len(items)
        rot, betas, root = [], [], []
        for h, side in enumerate(SIDES):
            fingers = model.pose_prior.sample(1, side=side, generator=g).double()[0]
            aa = torch.randn(3, generator=g, dtype=torch.float64) * 0.3 + torch.tensor([math.pi / 2, 0.0, 0.0])
            from handflow.geometry.rotations import axis_angle_to_matrix

            rot.append(torch.cat([axis_angle_to_matrix(aa)[None], fingers]))
            betas.append(torch.randn(10, generator=g, dtype=torch.float64) * 0.5)
            x = (-1) ** h * (45.0 + 10 * float(torch.rand(1, generator=g)))
            root.append(torch.tensor([x, 40.0, DEPTH + 40 * float(torch.rand(1, generator=g))], dtype=torch.float64))
        y = pack(*[pack_hand(rot[h], betas[h], root[h], K, SIZE) for h in range(2)])
        hp = unpack(y.float(), K.float(), SIZE)
        R = [hp[s].rotmats for s in SIDES]
        B = [hp[s].betas for s in SIDES]
        T = [hp[s].root for s in SIDES]
        outs = [model(R[h][None], B[h][None], side=s).translate(T[h][None]) for h, s in enumerate(SIDES)]
        if bool(collide(*outs).any()):  # like the real data: no colliding ground truth
            continue
        joints = torch.cat([o.joints[0] for o in outs])
        vis = single_visibility(model, R, B, T, K.float())
        items.append({"y": y.float(), "K": K.float(), "joints_2d": project(joints, K.float()), "joints_cam": joints,
                      "joint_valid": torch.ones(NUM_JOINTS, dtype=torch.bool), "visible": vis,
                      "has_params": i != 1,  # one image without parameters: skipped
                      "meta": {"image_id": 1000 + 7 * i}})
    return items


CFG = dict(num=8, rounds=3, proposals_per_image=24, image_size=SIZE, batch_images=3, part_size=4, seed=3)


@pytest.fixture(scope="module")
def items(model):
    return make_items(model, 7)


@pytest.fixture(scope="module")
def run(model, items, tmp_path_factory):
    out = tmp_path_factory.mktemp("mh")
    targets = targets_from_items(items, SIZE)
    res = generate(out, "test", GenerateConfig(**CFG), targets, model=model, visibility=batch_visibility(),
                   progress=False)
    return out, res


def test_pose_joints_matches_full_forward(model) -> None:
    assert has_fast_path(model)  # the shortcut under test is really taken for openhand
    g = torch.Generator().manual_seed(0)
    n = MESH_CHUNK + 3  # spans two skinning chunks
    for side in SIDES:
        R = torch.cat([torch.eye(3).expand(n, 1, 3, 3), model.pose_prior.sample(n, side=side, generator=g)], 1)
        R[:, 0] = random_rotmats(n, g, torch.float32)
        b = torch.randn(n, 10, generator=g)
        ref = model(R, b, side=side)
        torch.testing.assert_close(pose_joints(model, R, b, side), ref.joints, atol=1e-4, rtol=0)
        fast = pose_meshes(model, R, b, side)
        torch.testing.assert_close(fast.vertices, ref.vertices, atol=1e-3, rtol=0)
        torch.testing.assert_close(fast.joints, ref.joints, atol=1e-3, rtol=0)
        # float64: the fast path is the same function, not an approximation
        f64 = pose_meshes(model, R.double(), b.double(), side)
        r64 = model(R.double(), b.double(), side=side)
        torch.testing.assert_close(f64.vertices, r64.vertices, atol=1e-9, rtol=0)


def test_every_accepted_annotation_passes_all_criteria_rechecked(run, items, model) -> None:
    out, res = run
    assert res["complete"]
    recs = mh_io.load(out, "test")
    meta = json.loads((out / "test" / "meta.json").read_text())
    T = meta["thresholds"]["pixel"]
    thr = meta["thresholds"]["prior_log_prob"]
    by_id = {it["meta"]["image_id"]: it for it in items}
    total = 0
    for iid, rec in recs.items():
        it = by_id[iid]
        K = torch.as_tensor(rec.K)
        gt_hp = unpack(torch.as_tensor(rec.gt_params), K, SIZE)
        gt_R = [gt_hp[s].rotmats for s in SIDES]
        for n, y in enumerate(torch.as_tensor(rec.params)):
            hp = unpack(y, K, SIZE)
            R = [hp[s].rotmats for s in SIDES]
            B = [hp[s].betas for s in SIDES]
            Tr = [hp[s].root for s in SIDES]
            outs = [model(R[h][None], B[h][None], side=s).translate(Tr[h][None]) for h, s in enumerate(SIDES)]
            joints = torch.cat([o.joints[0] for o in outs])
            # 1. visible joints within T px of the ground truth 2D joints
            err = (project(joints, K) - it["joints_2d"]).norm(dim=-1)
            gt_vis = it["visible"] & it["joint_valid"]
            assert bool((err[gt_vis] <= T).all()), f"image {iid}: reprojection {err[gt_vis].max():.2f} > {T}"
            # 2. joints occluded in the ground truth (and on its own meshes at this crop) stay occluded
            vis = single_visibility(model, R, B, Tr, K)
            judged = ~it["visible"] & ~single_visibility(model, gt_R, [gt_hp[s].betas for s in SIDES],
                                                         [gt_hp[s].root for s in SIDES], K)
            assert not bool((vis & judged).any()), f"image {iid}: an occluded joint became visible"
            # 3. pose prior above the threshold (or the ground truth's own value if lower), both hands
            for h, s in enumerate(SIDES):
                lim = min(thr[s], float(model.pose_prior.log_prob(gt_R[h][None, 1:], side=s)))
                assert float(model.pose_prior.log_prob(R[h][None, 1:], side=s)) >= lim
            # 4. no collision (these ground truths do not collide: the plain test applies)
            assert not bool(collide(outs[0], outs[1]).any())
            # the stored joints are those of the stored parameters
            torch.testing.assert_close(torch.as_tensor(rec.joints[n]), joints, atol=2e-3, rtol=0)
            total += 1
    assert total > 0, "no annotation accepted at all: the test would be vacuous"


def test_occlusion_judged_on_joints_the_backend_also_finds_occluded(items, model) -> None:
    """A dataset whose visibility disagrees with the backend (joints marked occluded that the
    ground truth's own meshes show, e.g. visibility computed at another resolution) must not
    make every proposal fail: criterion 2 uses the joints occluded in both."""
    from dataclasses import replace

    from handflow.multihands.checks import prior_threshold
    from handflow.multihands.engine import EngineConfig, own_occlusion, run_batch, state_from_params

    targets = targets_from_items(items, SIZE)
    vis = batch_visibility()
    gt_state = state_from_params(targets.params, targets.K, SIZE)
    own = own_occlusion(model, targets, gt_state, vis)
    assert torch.equal(own, targets.gt_occluded)  # consistent data: nothing changes
    # mark every visible fingertip as occluded, as a coarser visibility might
    tips = torch.zeros_like(targets.gt_visible)
    tips[:, [t + h * NUM_HAND_JOINTS for h in range(2) for t in IH_TIPS]] = True
    flipped = tips & targets.gt_visible
    assert flipped.any()
    bad = replace(targets, gt_visible=targets.gt_visible & ~flipped, gt_occluded=targets.gt_occluded | flipped)
    assert not (own_occlusion(model, bad, gt_state, vis) & flipped).any()  # seen on the GT: not judged
    thr = {s: prior_threshold(model, s, 0.01) for s in SIDES}
    ecfg = EngineConfig(num=8, rounds=2, proposals_per_image=24, pixel_threshold=0.02 * SIZE, prior_thresholds=thr)
    res, st = run_batch(model, bad, ecfg, vis, torch.Generator().manual_seed(0))
    assert st.relaxed_occlusion_joints == int(flipped.sum()) and sum(len(r.params) for r in res) > 0


def test_gt_not_among_annotations_and_counts(run, items) -> None:
    out, _ = run
    recs = mh_io.load(out, "test")
    with_params = [it for it in items if it["has_params"]]
    assert sorted(recs) == sorted(it["meta"]["image_id"] for it in with_params)
    for iid, rec in recs.items():
        gt = next(it for it in items if it["meta"]["image_id"] == iid)
        np.testing.assert_array_equal(rec.gt_params, gt["y"].numpy())
        assert rec.params.shape[0] <= CFG["num"]
        d = np.abs(rec.params - rec.gt_params[None]).max(-1) if len(rec.params) else np.zeros(0)
        assert (d > 1e-6).all(), "the ground truth must not be counted among the N annotations"
        assert np.isfinite(rec.params).all()


def test_determinism_and_shards_equal_unsharded(run, items, model, tmp_path) -> None:
    out, _ = run
    targets = targets_from_items(items, SIZE)
    cfg = GenerateConfig(**CFG)
    for i in range(2):
        generate(tmp_path, "test", cfg, targets, shard=(i, 2), model=model, visibility=batch_visibility(),
                 progress=False)
    a, b = mh_io.load(out, "test"), mh_io.load(tmp_path, "test")
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k].params, b[k].params)
        np.testing.assert_array_equal(a[k].joints, b[k].joints)
    # a different seed gives different annotations
    c = tmp_path / "other"
    generate(c, "test", GenerateConfig(**{**CFG, "seed": 4}), targets, model=model, visibility=batch_visibility(),
             progress=False)
    cc = mh_io.load(c, "test")
    assert any(not np.array_equal(a[k].params, cc[k].params) for k in a)


def test_resume_after_kill(run, items, model, tmp_path, monkeypatch) -> None:
    out, _ = run
    targets = targets_from_items(items, SIZE)
    cfg = GenerateConfig(**CFG)
    real = mh_io.write_part
    calls = {"n": 0}

    def dying(folder, arrays, meta):
        calls["n"] += 1
        if calls["n"] == 2:  # killed while writing the second part: leave a half-written temp folder
            tmp = folder.parent / f".tmp-{folder.name}-999"
            tmp.mkdir()
            np.save(tmp / "params.npy", arrays["params"][:1])
            raise KeyboardInterrupt
        return real(folder, arrays, meta)

    import handflow.multihands.generate as gen

    monkeypatch.setattr(gen, "write_part", dying)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, "test", cfg, targets, model=model, visibility=batch_visibility(), progress=False)
    first = tmp_path / "test" / mh_io.part_name(0)
    assert first.is_dir() and not (tmp_path / "test" / mh_io.part_name(1)).exists()
    assert len(mh_io.load(tmp_path, "test")) == 4  # only the finished part is visible
    mtime = (first / "params.npy").stat().st_mtime_ns
    monkeypatch.setattr(gen, "write_part", real)
    res = generate(tmp_path, "test", cfg, targets, model=model, visibility=batch_visibility(), progress=False)
    assert res["skipped"] == [0] and res["written"] == [1] and res["complete"]
    assert (first / "params.npy").stat().st_mtime_ns == mtime
    a, b = mh_io.load(out, "test"), mh_io.load(tmp_path, "test")
    for k in a:
        np.testing.assert_array_equal(a[k].params, b[k].params)
    # other settings in the same folder: refused in one line naming the part, the setting, both
    # fingerprints and the fix; not mixed
    other = GenerateConfig(**{**CFG, "rounds": 2})
    with pytest.raises(SettingsMismatch) as e:
        generate(tmp_path, "test", other, targets, model=model, visibility=batch_visibility(), progress=False)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
    assert str(e.value) == (f"{tmp_path / 'test' / mh_io.part_name(0)} was written with rounds={CFG['rounds']}, "
                            f"fingerprint={cfg.fingerprint()} (now 2, {other.fingerprint()}): use another --out or delete it")
    # the same settings for another number of images (the split changed): refused too
    with pytest.raises(SettingsMismatch, match=r"part-00000 was written with num_images=\d+ \(now 3\)"):
        generate(tmp_path, "test", cfg, targets.index(slice(0, 3)), model=model, visibility=batch_visibility(),
                 progress=False)


# ----------------------------------------------------------------------------- training wrapper
def _rot_z(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_attach_multihands_identity_and_augmented_frame(run, items) -> None:
    from torch.utils.data import default_collate

    from handflow.multihands.dataset import attach_multihands
    from handflow.multihands.engine import params_from_state, state_from_params

    out, _ = run
    recs = mh_io.load(out, "test")
    iid, rec = max(recs.items(), key=lambda kv: kv[1].params.shape[0])
    n = rec.params.shape[0]
    assert n >= 2
    it = dict(next(x for x in items if x["meta"]["image_id"] == iid))
    a = attach_multihands(dict(it), recs, n_max=n + 3, image_size=SIZE)
    assert a["multi_valid"].tolist() == [True] * (n + 1) + [False] * 2
    torch.testing.assert_close(a["multi_y"][0], it["y"])
    torch.testing.assert_close(a["multi_y"][1 : n + 1], torch.as_tensor(rec.params), atol=1e-4, rtol=0)
    assert 0 <= int(a["multi_theta"]) < n + 1
    assert int(attach_multihands(dict(it), recs, n + 3, SIZE)["multi_theta"]) == int(a["multi_theta"])
    # augmented item: camera rolled by 0.4 rad about its axis and a different crop (K, size)
    Ra, S2 = _rot_z(0.4), 64
    K2 = torch.tensor([[110.0, 0, 30.0], [0, 110.0, 35.0], [0, 0, 1]], dtype=torch.float64)
    gt = state_from_params(it["y"][None].double(), it["K"][None].double(), SIZE)
    rot = gt.rotmats.clone()
    rot[:, :, 0] = Ra @ rot[:, :, 0]
    from handflow.multihands.perturb import TwoHandState

    y2 = params_from_state(TwoHandState(rot, gt.betas, gt.root @ Ra.T), K2[None], S2)[0].float()
    it2 = {**it, "y": y2, "K": K2.float()}
    b = attach_multihands(dict(it2), recs, n_max=n + 1, image_size=S2)
    st = state_from_params(b["multi_y"][1:].double(), K2.expand(n, 3, 3), S2)
    model = load_hand_model("openhand")
    joints = torch.cat([model(st.rotmats[:, h], st.betas[:, h], side=s).joints + st.root[:, h, None]
                        for h, s in enumerate(SIDES)], 1)
    torch.testing.assert_close(joints, torch.as_tensor(rec.joints).double() @ Ra.T, atol=0.05, rtol=0)
    batch = default_collate([b, attach_multihands(dict(it2), recs, n_max=n + 1, image_size=S2)])
    assert batch["multi_y"].shape == (2, n + 1, 218) and batch["multi_valid"].shape == (2, n + 1)
    # annotations from other data are refused
    bad = {**it, "y": it["y"].clone()}
    bad["y"][-1] += 0.2  # left wrist depth changed
    with pytest.raises(ValueError, match="does not match"):
        attach_multihands(bad, recs, n_max=3, image_size=SIZE)
    # an image without parameters: nothing valid
    c = attach_multihands({**it, "has_params": False}, recs, n_max=3, image_size=SIZE)
    assert not c["multi_valid"].any()


def test_data_module_needs_multihands_for_train_only(run, tmp_path) -> None:
    from handflow.data.datamodule import InterHandDataModule

    out, _ = run  # annotations for the test split only
    dm = InterHandDataModule(tmp_path, 64, 2, multihands=out)
    assert dm.wants_multihands("test") and not dm.wants_multihands("val")
    with pytest.raises(FileNotFoundError, match="split 'train'"):
        import handflow.multihands.io as io

        io.load(out, "train")
    assert dm.wants_multihands("train")  # required: its absence is an error when the loader is built
    assert not InterHandDataModule(tmp_path, 64, 2).wants_multihands("train")


# ----------------------------------------------------------------------------- diagnostics
def test_diagnostics_known_answer() -> None:
    from handflow.multihands.diagnostics import image_diagnostics, summarize

    g = torch.Generator().manual_seed(0)
    base = torch.randn(NUM_JOINTS, 3, generator=g, dtype=torch.float64) * 30 + torch.tensor([0.0, 0.0, 500.0])
    ray = base / base.norm(dim=-1, keepdim=True)
    n = 6
    t = torch.linspace(-1, 1, n, dtype=torch.float64)  # symmetric: mean offset 0
    vis = torch.zeros(NUM_JOINTS, dtype=torch.bool)
    vis[:10] = True
    amp = torch.where(vis, 2.0, 20.0).double()  # occluded joints move 10x more, only along their rays
    joints = base + t[:, None, None] * amp[None, :, None] * ray
    K = torch.tensor([[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]])
    rec = mh_io.MultiHandsRecord(params=np.zeros((n, 218), np.float32), joints=joints.numpy(), gt_params=np.zeros(218),
                                 gt_joints=base.numpy(), gt_visible=vis.numpy(), K=K.numpy(), image_size=64)
    d = image_diagnostics(rec)
    rms_t = float(t.pow(2).mean().sqrt())
    assert d["visible_along_ray"] == pytest.approx(2.0 * rms_t, rel=1e-9)
    assert d["occluded_along_ray"] == pytest.approx(20.0 * rms_t, rel=1e-9)
    assert d["visible_in_plane"] == pytest.approx(0.0, abs=1e-9) and d["occluded_in_plane"] < 1e-9
    assert d["visible_2d_px"] < 1e-9  # motion along the ray does not move the projection
    expected_global = float(amp.mean() * rms_t)
    assert d["spread_global"] == pytest.approx(expected_global, rel=1e-9)
    one = mh_io.MultiHandsRecord(params=np.zeros((1, 218)), joints=joints[:1].numpy(), gt_params=np.zeros(218),
                                 gt_joints=base.numpy(), gt_visible=vis.numpy(), K=K.numpy(), image_size=64)
    assert image_diagnostics(one) is None
    s = summarize({1: rec, 2: one}, num=6)
    assert s["fraction_fewer_than_num"] == 0.5 and s["images_with_spread"] == 1
    assert s["per_image"]["spread_global"]["mean"] == pytest.approx(expected_global)


def test_show_figure(run, tmp_path) -> None:
    from handflow.multihands.show import plot_multihands

    out, _ = run
    recs = mh_io.load(out, "test")
    iid, rec = max(recs.items(), key=lambda kv: kv[1].params.shape[0])
    p = plot_multihands(None, torch.as_tensor(rec.K), torch.as_tensor(rec.gt_joints), torch.as_tensor(rec.joints),
                        torch.as_tensor(rec.gt_visible), tmp_path / "fig.png", SIZE)
    assert p.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no annotation"):
        plot_multihands(None, torch.as_tensor(rec.K), torch.as_tensor(rec.gt_joints), torch.zeros(0, NUM_JOINTS, 3),
                        torch.as_tensor(rec.gt_visible), tmp_path / "x.png", SIZE)


def test_cli_generate_and_show(items, model, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import handflow.cli.multihands as cli_mh
    import handflow.multihands.generate as gen
    from handflow.cli import app

    monkeypatch.setattr(gen, "dataset_targets", lambda data, split, size, hm: targets_from_items(items, size))
    vis_fn = batch_visibility()  # resolved before the patch (it may itself use default_visibility)
    monkeypatch.setattr(gen, "default_visibility", lambda: vis_fn)
    monkeypatch.setattr(cli_mh, "_load_image", lambda *a: None)
    runner = CliRunner()
    args = ["multihands", "--data", str(tmp_path), "--split", "test", "--num", "4", "--out", str(tmp_path / "mh"),
            "--rounds", "2", "--proposals", "16", "--image-size", str(SIZE), "--part-size", "4", "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "fewer than N" in r.output and (tmp_path / "mh" / "test" / "summary.json").is_file()
    r2 = runner.invoke(app, args)
    assert "skipped (already done) [0, 1]" in r2.output
    bad = runner.invoke(app, args + ["--shard", "2/2"])
    assert bad.exit_code != 0 and "0 <= i < n" in " ".join(bad.output.split())
    fig = tmp_path / "fig.png"
    r3 = runner.invoke(app, ["multihands", "show", "--data", str(tmp_path), "--multihands", str(tmp_path / "mh"),
                             "--split", "test", "--index", "0", "--out", str(fig)])
    assert r3.exit_code == 0, r3.output
    assert fig.stat().st_size > 10_000
    r4 = runner.invoke(app, ["multihands", "show", "--data", ".", "--multihands", str(tmp_path / "mh"), "--index", "99"])
    assert r4.exit_code != 0 and "annotated images" in " ".join(r4.output.split())


def test_engine_runs_on_another_backend_mano_fallback(tmp_path) -> None:
    """The generic path (no openhand shortcut): fake MANO files in the real on-disk format."""
    from handflow.multihands.posing import has_fast_path
    from handflow.testing.mano import write_fake_mano

    write_fake_mano(tmp_path)
    mano = load_hand_model("mano", path=tmp_path)
    assert not has_fast_path(mano)
    items = make_items(mano, 2, seed=1)
    out = tmp_path / "mh"
    generate(out, "test", GenerateConfig(**{**CFG, "hand_model": "mano", "rounds": 2}), targets_from_items(items, SIZE),
             model=mano, visibility=batch_visibility(), progress=False)
    meta = json.loads((out / "test" / "meta.json").read_text())
    # survivors of the cheap criteria reached full-mesh posing and visibility through the fallback
    # (the fake MANO mesh is a deformed sphere: few proposals keep its occluded joints hidden)
    assert meta["hand_model"] == "mano" and meta["stats"]["collision"] > 0, meta["stats"]
    for rec in mh_io.load(out, "test").values():
        for y in torch.as_tensor(rec.params):
            hp = unpack(y, torch.as_tensor(rec.K), SIZE)
            for s in SIDES:
                lp = float(mano.pose_prior.log_prob(hp[s].rotmats[None, 1:], side=s))
                assert lp >= meta["thresholds"]["prior_log_prob"][s]


def test_ground_truth_that_collides_keeps_annotations_no_deeper(items, model, tmp_path) -> None:
    """Touching hands (real data): the proxies may flag the ground truth itself; proposals then
    pass when they penetrate no deeper than it."""
    from handflow.hand.collision import penetration
    from handflow.multihands.engine import params_from_state, state_from_params

    it = items[0]
    st = state_from_params(it["y"][None], it["K"][None], SIZE)
    for dx in range(5, 120, 5):  # slide the left hand towards the right one until the proxies touch
        moved = st.index(torch.tensor([0]))
        moved.root = moved.root.clone()
        moved.root[0, 1, 0] -= dx * math.copysign(1.0, float(st.root[0, 1, 0] - st.root[0, 0, 0]))
        y = params_from_state(moved, it["K"][None], SIZE)[0].float()
        hp = unpack(y, it["K"], SIZE)
        outs = [model(hp[s].rotmats[None], hp[s].betas[None], side=s).translate(hp[s].root[None]) for s in SIDES]
        if bool(collide(*outs).any()):
            break
    else:
        pytest.skip("could not make the hands touch")
    gt_pen = float(penetration(outs[0], outs[1]))
    joints = torch.cat([o.joints[0] for o in outs])
    vis = single_visibility(model, [hp[s].rotmats for s in SIDES], [hp[s].betas for s in SIDES],
                            [hp[s].root for s in SIDES], it["K"])
    item = {**it, "y": y, "joints_2d": project(joints, it["K"]), "visible": vis, "has_params": True,
            "meta": {"image_id": 5}}
    res = generate(tmp_path, "test", GenerateConfig(**{**CFG, "part_size": 8}), targets_from_items([item], SIZE),
                   model=model, visibility=batch_visibility(), progress=False)
    assert res["meta"]["stats"]["relaxed_collision"] == 1
    rec = mh_io.load(tmp_path, "test")[5]
    assert len(rec.params) > 0
    for y_a in torch.as_tensor(rec.params):
        ha = unpack(y_a, it["K"], SIZE)
        o = [model(ha[s].rotmats[None], ha[s].betas[None], side=s).translate(ha[s].root[None]) for s in SIDES]
        assert float(penetration(o[0], o[1])) <= gt_pen + 1e-3


def test_visibility_adapter_chunks_agree_with_one_call(items, model) -> None:
    if not _render_available():
        pytest.skip("handflow.render.visibility not installed")
    from handflow.multihands.engine import state_from_params
    from handflow.multihands.generate import VIS_CHUNK, default_visibility
    from handflow.multihands.posing import pose_two_hands
    from handflow.render.visibility import joint_visibility_batch

    t = targets_from_items(items, SIZE)
    n = VIS_CHUNK + 5
    idx = torch.arange(n) % len(t)
    j, outs = pose_two_hands(model, state_from_params(t.params, t.K, SIZE).index(idx))
    verts = torch.stack([outs["right"].vertices, outs["left"].vertices], 1)
    faces = [model.faces_for(s) for s in SIDES]
    got = default_visibility()(verts, faces, j.unflatten(1, (2, -1)), t.K[idx], (SIZE, SIZE))
    ref = joint_visibility_batch([verts[:, 0], verts[:, 1]], faces, [j[:, :21], j[:, 21:]], t.K[idx], (SIZE, SIZE))
    assert torch.equal(got, ref.reshape(n, 2, NUM_HAND_JOINTS))
    # batched and single-scene rule agree on the items (their visibility came from joint_visibility)
    assert torch.equal(got[: len(t)].reshape(-1, NUM_JOINTS), t.gt_visible)


def test_query_crop_visibility_equals_full_image_on_queried_joints(items, model) -> None:
    if not _render_available():
        pytest.skip("handflow.render.visibility not installed")
    from handflow.multihands.engine import state_from_params
    from handflow.multihands.generate import default_visibility
    from handflow.multihands.perturb import PerturbConfig, free_joint_mask, perturb
    from handflow.multihands.posing import pose_two_hands

    t = targets_from_items(items, SIZE)
    idx = torch.arange(96) % len(t)
    props = perturb(state_from_params(t.params, t.K, SIZE).index(idx), PerturbConfig(min_step=0.5),
                    torch.Generator().manual_seed(0), free=free_joint_mask(t.gt_visible)[idx], prior=model.pose_prior)
    props.root[:12, :, 0] += torch.linspace(-400, 400, 12)[:, None]  # some hands (partly) outside the image
    j, outs = pose_two_hands(model, props)
    verts = torch.stack([outs["right"].vertices, outs["left"].vertices], 1)
    faces = [model.faces_for(s) for s in SIDES]
    J, K = j.unflatten(1, (2, -1)), t.K[idx]
    q = t.gt_occluded[idx].unflatten(1, (2, -1))
    q[:12] = True  # query everything in the shifted scenes, including joints outside the image
    f = default_visibility()
    full = f(verts, faces, J, K, (SIZE, SIZE))
    crop = f(verts, faces, J, K, (SIZE, SIZE), query=q)
    assert int(q.sum()) > 500 and bool(full[q].any()) and not bool(full[q].all())
    assert torch.equal(full[q], crop[q])
