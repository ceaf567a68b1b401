"""Losses against hand-written references, the theta choice, and the DetMag stop-gradient."""

from __future__ import annotations

import torch
from conftest import random_rotmats

from handflow.config import load_config
from handflow.geometry import intrinsics, matrix_to_rot6d
from handflow.models import build_model
from handflow.models.losses import DM, choose_theta_target, joints2d_loss, joints3d_loss, rotation_loss, theta_loss


def test_joint_losses_match_loops() -> None:
    g = torch.Generator().manual_seed(0)
    B = 3
    pred = torch.randn(B, 42, 3, generator=g, dtype=torch.float64) * 30 + torch.tensor([0, 0, 500.0], dtype=torch.float64)
    gt = pred + torch.randn(B, 42, 3, generator=g, dtype=torch.float64) * 10
    valid = torch.rand(B, 42, generator=g) > 0.3
    num = sum(((pred[b, j] - gt[b, j]) / DM).square().sum() for b in range(B) for j in range(42) if valid[b, j])
    assert torch.allclose(joints3d_loss(pred, gt, valid), num / valid.sum())
    K = intrinsics(torch.full((B,), 200.0, dtype=torch.float64), torch.full((B,), 200.0, dtype=torch.float64),
                   torch.full((B,), 64.0, dtype=torch.float64), torch.full((B,), 64.0, dtype=torch.float64))
    gt2 = torch.rand(B, 42, 2, generator=g, dtype=torch.float64) * 128
    ref, cnt = 0.0, 0
    for b in range(B):
        for j in range(42):
            if valid[b, j]:
                u = 200 * pred[b, j, 0] / pred[b, j, 2] + 64
                v = 200 * pred[b, j, 1] / pred[b, j, 2] + 64
                ref += ((u - gt2[b, j, 0]) * 2 / 128) ** 2 + ((v - gt2[b, j, 1]) * 2 / 128) ** 2
                cnt += 1
    assert torch.allclose(joints2d_loss(pred, gt2, valid, K, 128), ref / cnt, rtol=1e-6)
    # sample axis: same as averaging over each sample
    ps = torch.stack([pred, gt], 1)
    both = (joints3d_loss(pred, gt, valid) + joints3d_loss(gt, gt, valid)) / 2
    assert torch.allclose(joints3d_loss(ps, gt, valid), both)


def test_root_relative_joint_loss_matches_a_loop_and_ignores_root_errors_in_the_articulation() -> None:
    from handflow.constants import LEFT_ROOT, NUM_HAND_JOINTS, RIGHT_ROOT

    g = torch.Generator().manual_seed(1)
    B = 4
    pred = torch.randn(B, 42, 3, generator=g, dtype=torch.float64) * 30 + torch.tensor([0, 0, 500.0], dtype=torch.float64)
    gt = pred + torch.randn(B, 42, 3, generator=g, dtype=torch.float64) * 10
    valid = torch.rand(B, 42, generator=g) > 0.2
    valid[0, LEFT_ROOT] = False  # a hand without a valid wrist: none of its joints count in the relative part
    rel, n_rel, root, n_root = 0.0, 0, 0.0, 0
    for b in range(B):
        for r in (RIGHT_ROOT, LEFT_ROOT):
            if not valid[b, r]:
                continue
            root += ((pred[b, r] - gt[b, r]) / DM).square().sum()
            n_root += 1
            first = 0 if r == RIGHT_ROOT else NUM_HAND_JOINTS
            for j in range(first, first + NUM_HAND_JOINTS):
                if valid[b, j]:
                    rel += (((pred[b, j] - pred[b, r]) - (gt[b, j] - gt[b, r])) / DM).square().sum()
                    n_rel += 1
    assert torch.allclose(joints3d_loss(pred, gt, valid, root_relative=True), rel / n_rel + root / n_root)
    # translating a whole predicted hand changes only the wrist term: the articulation part is blind to it
    shift = torch.tensor([40.0, -25.0, 90.0], dtype=torch.float64)
    moved = pred.clone()
    moved[:, :NUM_HAND_JOINTS] += shift
    def root_term(x, b):
        return ((x[b, RIGHT_ROOT] - gt[b, RIGHT_ROOT]) / DM).square().sum()

    extra = sum(root_term(moved, b) - root_term(pred, b) for b in range(B) if valid[b, RIGHT_ROOT]) / n_root
    diff = joints3d_loss(moved, gt, valid, root_relative=True) - joints3d_loss(pred, gt, valid, root_relative=True)
    assert torch.allclose(diff, extra)
    # the sample axis averages over samples, as in the camera-frame loss
    both = (joints3d_loss(pred, gt, valid, True) + joints3d_loss(gt, gt, valid, True)) / 2
    assert torch.allclose(joints3d_loss(torch.stack([pred, gt], 1), gt, valid, True), both)


def test_rotation_and_theta_losses() -> None:
    y = torch.zeros(2, 218, dtype=torch.float64)
    R = random_rotmats(64).reshape(2, 32, 3, 3)
    d6 = matrix_to_rot6d(R)
    y[:, :96] = d6[:, :16].flatten(1)
    y[:, 109:205] = d6[:, 16:].flatten(1)
    assert rotation_loss(y) < 1e-20
    y2 = y.clone()
    y2[0, :6] = y2[0, :6] * 2  # one block scaled by 2: residual = 3 I, squared norm 18
    assert torch.allclose(rotation_loss(y2), torch.tensor(18.0 / 2, dtype=torch.float64))
    a, b = torch.randn(4, 218), torch.randn(4, 218)
    has = torch.tensor([True, False, True, True])
    assert torch.allclose(theta_loss(a, b, has), (a - b)[has].square().mean())
    assert theta_loss(a, b, torch.zeros(4, dtype=torch.bool)) == 0


def test_theta_target_is_fixed_and_in_range() -> None:
    ids = torch.arange(1000)
    n = torch.randint(1, 9, (1000,))
    a, b = choose_theta_target(ids, n, 0), choose_theta_target(ids, n, 0)
    assert torch.equal(a, b) and (a >= 0).all() and (a < n).all()
    assert not torch.equal(a, choose_theta_target(ids, n, 1))
    assert len(torch.unique(choose_theta_target(ids, torch.full((1000,), 8), 0))) == 8


def _model(**loss):
    cfg = load_config("cpu", ["model.flow_hidden=64", "data.image_size=64"] + [f"loss.{k}={v}" for k, v in loss.items()])
    torch.manual_seed(0)
    m = build_model(cfg)
    y = torch.randn(16, 218) * 0.3
    m.normalizer.fit(y)
    m.initialize(torch.zeros(16, m.backbone.dim), m.normalizer.normalize(y))
    with torch.no_grad():  # leave the identity init, so the flow depends on the context
        for p in m.flow.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return m


def test_detmag_does_not_reach_the_backbone() -> None:
    m = _model(w_nll=0.0)
    feats = m.features(torch.rand(2, 3, 64, 64))
    terms = m.head_losses(feats, torch.randn(2, 1, 218), torch.ones(2, 1, dtype=torch.bool), torch.Generator().manual_seed(0))
    assert set(terms) == {"det"}
    terms["det"].backward()
    bb = [p.grad for p in m.backbone.parameters()]
    assert all(gr is None or gr.abs().max() == 0 for gr in bb)
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in m.flow.parameters())
    # the NLL, by contrast, does train the backbone
    m2 = _model(w_det=0.0)
    f2 = m2.features(torch.rand(2, 3, 64, 64))
    t2 = m2.head_losses(f2, torch.randn(2, 1, 218), torch.ones(2, 1, dtype=torch.bool), None)
    assert set(t2) == {"nll"}
    t2["nll"].backward()
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in m2.backbone.parameters())


def test_nll_is_min_over_annotations() -> None:
    m = _model(w_det=0.0, nll_noise=0.0)
    m.eval()
    feats = m.features(torch.rand(1, 3, 64, 64))
    ys = torch.randn(1, 3, 218)
    per = [m.head_losses(feats, ys[:, k : k + 1], torch.ones(1, 1, dtype=torch.bool), None)["nll"] for k in range(3)]
    both = m.head_losses(feats, ys, torch.tensor([[True, True, False]]), None)["nll"]
    assert torch.allclose(both, torch.minimum(per[0], per[1]))


def test_nll_and_detmag_functions_match_references() -> None:
    from handflow.models.losses import detmag_loss, nll_loss

    lp = torch.tensor([[-3.0, -1.0, 5.0], [-2.0, -7.0, 0.0], [4.0, 4.0, 4.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, True, True], [False, False, False]])
    # row 0: min(3, 1) = 1 (the masked 5 is ignored); row 1: min(2, 7, 0) = 0; row 2 has none
    assert torch.allclose(nll_loss(lp, mask), torch.tensor((1.0 + 0.0) / 2 / 218, dtype=torch.float64))
    assert nll_loss(lp, torch.zeros_like(mask)) == 0
    ld = torch.tensor([[1.0, 3.0], [10.0, 20.0]], dtype=torch.float64)
    assert torch.allclose(detmag_loss(ld), torch.tensor(-34.0 / 4 / 218, dtype=torch.float64))
    assert torch.allclose(detmag_loss(ld, torch.tensor([True, False])), torch.tensor(-2.0 / 218, dtype=torch.float64))


def test_physical_log_prob_includes_the_normalizer_jacobian() -> None:
    m = _model()
    m.eval()
    feats = m.features(torch.rand(2, 3, 64, 64))
    y = m.sample(feats, 3)  # (2, 3, 218) physical
    lp_std = m.flow.log_prob(m.normalizer.normalize(y), feats)
    ref = lp_std - torch.log(m.normalizer.std).sum()
    assert torch.allclose(m.log_prob(y, feats), ref, atol=1e-4)
    assert torch.allclose(m.log_prob(m.normalizer.normalize(y), feats, standardized=True), lp_std)
    # the standardized dims are the scalars only (betas, root): their std differs from 1
    assert (m.normalizer.std != 1).sum() == 2 * 13


def test_detmag_and_nll_skip_images_without_parameters() -> None:
    m = _model()
    feats = m.features(torch.rand(2, 3, 64, 64))
    none = m.head_losses(feats, torch.randn(2, 1, 218), torch.zeros(2, 1, dtype=torch.bool), None)
    assert none == {}
    g = torch.Generator().manual_seed(0)
    one = m.head_losses(feats, torch.randn(2, 1, 218), torch.tensor([[True], [False]]), g)
    assert set(one) == {"nll", "det"} and all(torch.isfinite(v) for v in one.values())
