"""MultiHands criteria on hand-made inputs, and the on-disk format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_rotmats

from handflow.multihands.checks import check_occlusion, check_reprojection, default_pixel_threshold
from handflow.multihands.io import load, part_name, write_part
from handflow.multihands.perturb import PerturbConfig, TwoHandState, free_joint_mask, moved_joints, perturb


def test_reprojection_only_counts_visible_joints() -> None:
    gt = torch.zeros(3, 42, 2)
    vis = torch.zeros(3, 42, dtype=torch.bool)
    vis[:, :5] = True
    proj = gt.clone()
    proj[1, 2] = torch.tensor([3.0, 0.0])  # visible joint off by 3 px
    proj[2, 30] = torch.tensor([50.0, 50.0])  # occluded joint far off: allowed
    ok = check_reprojection(proj, gt, vis, threshold=2.56)
    assert ok.tolist() == [True, False, True]
    assert check_reprojection(proj, gt, vis, threshold=3.0)[1]  # boundary inclusive


def test_occlusion_requires_gt_occluded_to_stay_hidden() -> None:
    occ = torch.zeros(2, 42, dtype=torch.bool)
    occ[:, 7] = True
    vis = torch.ones(2, 42, dtype=torch.bool)
    vis[0, 7] = False
    assert check_occlusion(vis, occ).tolist() == [True, False]


def test_default_threshold_is_two_percent() -> None:
    assert default_pixel_threshold(128) == pytest.approx(2.56)


def test_perturb_keeps_projected_root_and_is_seeded() -> None:
    P = 16
    g = torch.Generator().manual_seed(0)
    R = random_rotmats(P * 2 * 16, g).reshape(P, 2, 16, 3, 3)
    st = TwoHandState(R, torch.zeros(P, 2, 10, dtype=torch.float64),
                      torch.tensor([30.0, -20.0, 600.0], dtype=torch.float64).expand(P, 2, 3).clone())
    a = perturb(st, PerturbConfig(), torch.Generator().manual_seed(5))
    b = perturb(st, PerturbConfig(), torch.Generator().manual_seed(5))
    assert torch.equal(a.rotmats, b.rotmats) and torch.equal(a.root, b.root)
    # wrist moves along its camera ray: x/z and y/z unchanged
    assert torch.allclose(a.root[..., :2] / a.root[..., 2:], st.root[..., :2] / st.root[..., 2:], atol=1e-12)
    assert not torch.allclose(a.root, st.root)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(a.rotmats.transpose(-1, -2) @ a.rotmats, eye.expand_as(a.rotmats), atol=1e-10)


def test_io_round_trip_and_atomicity(tmp_path) -> None:
    M, N = 3, 4
    rng = np.random.default_rng(0)
    count = np.array([4, 2, 0], np.int32)
    params = rng.normal(size=(M, N, 218)).astype(np.float32)
    joints = rng.normal(size=(M, N, 42, 3)).astype(np.float32)
    for m, c in enumerate(count):
        params[m, c:] = np.nan
        joints[m, c:] = np.nan
    arrays = dict(image_ids=np.array([10, 11, 12]), count=count, params=params, joints=joints,
                  gt_params=params[:, 0] * 0, gt_joints=joints[:, 0] * 0,
                  gt_visible=np.ones((M, 42), bool), K=np.tile(np.eye(3, dtype=np.float32), (M, 1, 1)))
    with pytest.raises(ValueError, match="missing arrays"):
        write_part(tmp_path / "test" / part_name(0), {k: v for k, v in arrays.items() if k != "K"}, {})
    write_part(tmp_path / "test" / part_name(0), arrays, {"seed": 1})
    (tmp_path / "test" / ".tmp-part-junk").mkdir()  # an interrupted write is ignored
    rec = load(tmp_path, "test")
    assert sorted(rec) == [10, 11, 12]
    assert rec[11].params.shape == (2, 218) and rec[12].joints.shape == (0, 42, 3)
    np.testing.assert_array_equal(rec[10].joints, joints[0])
    assert rec[10].gt_visible.dtype == bool and rec[10].K.shape == (3, 3)
    import pickle

    again = pickle.loads(pickle.dumps(rec))  # DataLoader workers: no memory map is pickled
    np.testing.assert_array_equal(again[10].params, rec[10].params)
    assert 99 not in rec and len(rec) == 3
    (tmp_path / "test" / part_name(0) / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="val"):
        load(tmp_path, "val")


def test_moved_joints_known_answer() -> None:
    from handflow.constants import IH_JOINT_NAMES, MANO_JOINT_NAMES

    moved = moved_joints()
    names = lambda k: sorted(IH_JOINT_NAMES[j] for j in moved[k - 1].nonzero().flatten().tolist())  # noqa: E731
    # MANO index1 (the index MCP) moves index2, index3 and the index tip (InterHand names 3, 2, 4)
    assert MANO_JOINT_NAMES[1] == "index1" and names(1) == ["index2", "index3", "index4"]
    assert MANO_JOINT_NAMES[15] == "thumb3" and names(15) == ["thumb4"]


def test_free_joints_move_only_occluded_joints() -> None:
    from handflow.constants import IH_JOINT_NAMES

    vis = torch.ones(1, 42, dtype=torch.bool)
    for n in ("index4", "index3"):  # right index tip and DIP hidden
        vis[0, IH_JOINT_NAMES.index(n)] = False
    free = free_joint_mask(vis)
    assert free.shape == (1, 2, 15)
    # only right index3 (MANO 3: moves the tip alone) and index2 (moves DIP and tip) are free
    assert free[0, 0].nonzero().flatten().tolist() == [1, 2] and not free[0, 1].any()


def test_perturb_free_joints_resample_from_prior_and_others_untouched() -> None:
    from handflow.hand.registry import load_hand_model

    model = load_hand_model("openhand")
    P = 64
    g = torch.Generator().manual_seed(0)
    R = torch.cat([torch.eye(3).expand(P, 2, 1, 3, 3),
                   torch.stack([model.pose_prior.sample(P, side=s, generator=g) for s in ("right", "left")], 1)], 2)
    st = TwoHandState(R, torch.zeros(P, 2, 10), torch.tensor([0.0, 0.0, 500.0]).expand(P, 2, 3).clone())
    free = torch.zeros(P, 2, 15, dtype=torch.bool)
    free[:, 0, 2] = True
    cfg = PerturbConfig(finger_fraction=0.0, move_probability=0.0, free_resample=1.0, free_probability=1.0)
    out = perturb(st, cfg, torch.Generator().manual_seed(1), free=free, prior=model.pose_prior)
    changed = ~torch.isclose(out.rotmats, st.rotmats, atol=1e-7).flatten(-2).all(-1)  # (P, 2, 16)
    assert changed[:, 0, 3].all() and changed.sum() == P  # exactly the free joint of every proposal
    assert torch.equal(out.root, st.root) and torch.equal(out.betas, st.betas)


def test_free_proposals_leave_visible_joints_in_place() -> None:
    from handflow.constants import IH_JOINT_NAMES
    from handflow.hand.registry import load_hand_model
    from handflow.multihands.engine import joints_two_hands

    model = load_hand_model("openhand")
    P = 32
    g = torch.Generator().manual_seed(2)
    R = torch.cat([torch.eye(3).expand(P, 2, 1, 3, 3),
                   torch.stack([model.pose_prior.sample(P, side=s, generator=g) for s in ("right", "left")], 1)], 2)
    st = TwoHandState(R, torch.zeros(P, 2, 10), torch.tensor([0.0, 0.0, 500.0]).expand(P, 2, 3).clone())
    vis = torch.ones(1, 42, dtype=torch.bool)
    hidden = [IH_JOINT_NAMES.index(n) for n in ("middle4", "middle3", "middle2", "thumb4")]
    vis[0, hidden] = False
    vis[0, [21 + h for h in hidden]] = False
    free = free_joint_mask(vis).expand(P, 2, 15)
    cfg = PerturbConfig(free_probability=1.0, free_resample=1.0)
    out = perturb(st, cfg, torch.Generator().manual_seed(3), free=free, prior=model.pose_prior)
    j0, j1 = joints_two_hands(model, st), joints_two_hands(model, out)
    # fingertips are skinned vertices with small weights on neighbouring fingers' joints, so a
    # visible tip may move by a few hundredths of a mm (far below T); FK joints do not move at all
    torch.testing.assert_close(j1[:, vis[0]], j0[:, vis[0]], atol=0.2, rtol=0)
    assert (j1[:, ~vis[0]] - j0[:, ~vis[0]]).norm(dim=-1).amax() > 5.0  # hidden joints did move


def test_scale_direction_scales_the_hand_about_the_wrist() -> None:
    from handflow.hand.registry import load_hand_model
    from handflow.multihands.perturb import scale_direction

    model = load_hand_model("openhand")
    eye = torch.eye(3).expand(1, 16, 3, 3)
    for side in ("right", "left"):
        b = scale_direction(model, side)
        j0 = model(eye, torch.zeros(1, 10), side=side).joints[0]
        eps = 0.05
        j1 = model(eye, (eps * b)[None], side=side).joints[0]
        # the residual of uniform scaling is far below a millimetre on a ~185 mm hand
        assert float((j1 - (1 + eps) * j0).norm(dim=-1).max()) < 0.05


def test_collision_tolerates_no_more_than_the_ground_truth_penetration() -> None:
    from handflow.hand.collision import collide, penetration
    from handflow.hand.registry import load_hand_model
    from handflow.multihands.checks import check_no_collision, check_prior

    model = load_hand_model("openhand")
    eye = torch.eye(3).expand(1, 16, 3, 3)
    jr = model(eye, torch.zeros(1, 10), side="right").joints
    jl = model(eye, torch.zeros(1, 10), side="left").joints
    gaps = torch.tensor([200.0, 40.0, 30.0, 20.0, 10.0])  # left hand shifted along x, mm
    R = jr.expand(5, -1, -1)
    L = jl + torch.stack([gaps, torch.zeros(5), torch.zeros(5)], 1)[:, None]
    hit = collide(R, L)
    assert not hit[0] and hit[-1]
    pen = penetration(R, L)
    assert bool((pen[1:].diff() >= 0).all())  # closer -> deeper
    tol = torch.full((5,), float(pen[2]))  # the ground truth sat at gap 30 mm
    ok = check_no_collision(R, L, tol)
    assert ok.tolist() == [True] + [bool(not h or p <= pen[2]) for h, p in zip(hit[1:], pen[1:])]
    assert not ok[-1] and ok[2]
    assert check_no_collision(R, L).tolist() == (~hit).tolist()
    # per-proposal prior thresholds
    rot = model.pose_prior.sample(3, side="right", generator=torch.Generator().manual_seed(0))
    both = torch.stack([torch.cat([eye[0, :1].expand(3, 1, 3, 3), rot], 1)] * 2, 1)
    lp = model.pose_prior.log_prob(rot, side="right")
    thr = {"right": lp.clone(), "left": torch.full((3,), -1e9)}
    thr["right"][1] += 1.0
    assert check_prior(model, both, thr).tolist() == [True, False, True]


def test_engine_passes_query_to_backends_that_take_it() -> None:
    from handflow.hand.registry import load_hand_model
    from handflow.multihands.engine import EngineConfig, Targets, params_from_state, run_batch

    model = load_hand_model("openhand")
    K = torch.tensor([[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]])
    R = torch.eye(3).expand(1, 2, 16, 3, 3).clone()
    st = TwoHandState(R, torch.zeros(1, 2, 10), torch.tensor([[[-80.0, 0, 500], [80.0, 0, 500]]]))
    occ = torch.zeros(1, 42, dtype=torch.bool)
    occ[0, 3] = True
    t = Targets(torch.tensor([0]), params_from_state(st, K[None], 64).float(), K[None], 64,
                torch.zeros(1, 42, 2), ~occ, occ)
    seen = []

    def vis(verts, faces, joints, K, hw, query):
        seen.append(query)
        return torch.zeros(joints.shape[:3], dtype=torch.bool)

    run_batch(model, t, EngineConfig(num=2, rounds=1, proposals_per_image=4, pixel_threshold=1e9), vis,
              torch.Generator().manual_seed(0))
    assert seen and all(q.shape[1:] == (2, 21) and q[:, 0, 3].all() and q.sum() == len(q) for q in seen)
