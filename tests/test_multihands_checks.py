"""MultiHands criteria on hand-made inputs, and the on-disk format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handflow.multihands.checks import check_occlusion, check_reprojection, default_pixel_threshold
from handflow.multihands.io import load, part_name, write_part
from handflow.multihands.perturb import PerturbConfig, TwoHandState, perturb

from conftest import random_rotmats


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
                  gt_params=params[:, 0] * 0, gt_joints=joints[:, 0] * 0)
    write_part(tmp_path / "test" / part_name(0, 1, 0), arrays, {"seed": 1})
    (tmp_path / "test" / ".tmp-part-junk").mkdir()  # an interrupted write is ignored
    rec = load(tmp_path, "test")
    assert sorted(rec) == [10, 11, 12]
    assert rec[11].params.shape == (2, 218) and rec[12].joints.shape == (0, 42, 3)
    np.testing.assert_array_equal(rec[10].joints, joints[0])
    with pytest.raises(FileNotFoundError, match="val"):
        load(tmp_path, "val")
