"""The keypoint-guided flow context (``model.context=keypoints2d``, issue #17): a 2D keypoint
head on ``layer3`` whose soft-argmax joints and confidence join the pooled feature."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_cfg
from torch import nn

from handflow.config import ConfigError, load_config
from handflow.constants import NUM_JOINTS
from handflow.data.datamodule import InterHandDataModule
from handflow.models.backbone import Backbone, KeypointHead
from handflow.models.losses import keypoint2d_loss


def test_soft_argmax_finds_the_peak_pixel_centre() -> None:
    head = KeypointHead(4, joints=3)
    head.layers = nn.Identity()  # the logits are the input
    H, W = 16, 12
    logits = torch.full((2, 3, H, W), -1e4)
    peaks = [[(0, 0), (5, 7), (15, 11)], [(8, 3), (2, 10), (9, 0)]]  # (row, col)
    for b, row in enumerate(peaks):
        for j, (r, c) in enumerate(row):
            logits[b, j, r, c] = 0.0
    uv, conf = head(logits)
    for b, row in enumerate(peaks):
        for j, (r, c) in enumerate(row):
            assert torch.allclose(uv[b, j], torch.tensor([(c + 0.5) * 2 / W - 1, (r + 0.5) * 2 / H - 1]), atol=1e-6)
    assert torch.allclose(conf, torch.ones_like(conf))
    flat = head(torch.zeros(1, 3, H, W))  # a flat map: the image centre, confidence 1 / (H W)
    assert torch.allclose(flat[0], torch.zeros(1, 3, 2), atol=1e-6) and torch.allclose(flat[1], torch.full((1, 3), 1 / (H * W)))


def test_backbone_context_layout_and_the_pooled_feature_unchanged() -> None:
    torch.manual_seed(0)
    pooled = Backbone("resnet18").eval()
    guided = Backbone("resnet18", context="keypoints2d").eval()
    assert guided.dim == pooled.dim + 3 * NUM_JOINTS and pooled.keypoint_head is None
    guided.net.load_state_dict(pooled.net.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        f, g = pooled(x), guided(x)
    assert g.shape == (2, guided.dim)
    assert torch.allclose(g[:, : pooled.dim], f, atol=1e-5)  # the same ResNet, run stage by stage
    uv, conf = guided.keypoints(g)
    assert uv.shape == (2, NUM_JOINTS, 2) and conf.shape == (2, NUM_JOINTS)
    assert uv.abs().max() < 1 and (conf > 0).all() and (conf <= 1).all()
    with pytest.raises(ValueError, match="no keypoint head"):
        pooled.keypoints(f)
    with pytest.raises(ValueError, match="unknown backbone context"):
        Backbone("resnet18", context="heatmaps")


def test_keypoint2d_loss_against_a_loop() -> None:
    g = torch.Generator().manual_seed(2)
    B, S = 3, 128
    gt = torch.rand(B, NUM_JOINTS, 2, generator=g) * S
    uv = torch.rand(B, NUM_JOINTS, 2, generator=g) * 2 - 1
    vis = torch.rand(B, NUM_JOINTS, generator=g) < 0.6
    total, n = 0.0, 0
    for b in range(B):
        for j in range(NUM_JOINTS):
            if vis[b, j]:
                total += sum(abs(float(uv[b, j, k]) - (2 * float(gt[b, j, k]) / S - 1)) for k in range(2))
                n += 1
    assert abs(float(keypoint2d_loss(uv, gt, vis, S)) - total / n) < 1e-5
    assert float(keypoint2d_loss(gt * 2 / S - 1, gt, vis, S)) < 1e-6  # zero at the ground truth
    moved = uv.clone()
    moved[~vis] += 5.0  # hidden joints do not count
    assert torch.allclose(keypoint2d_loss(moved, gt, vis, S), keypoint2d_loss(uv, gt, vis, S))


def test_training_step_trains_the_keypoint_head(tiny_data, tmp_path) -> None:
    from handflow.training import HandFlowModule
    from handflow.training.runner import fit_normalizer

    cfg = tiny_cfg(tiny_data, tmp_path / "k", 1, **{"model.context": "keypoints2d"})
    dm = InterHandDataModule.from_config(cfg, num_workers=0, augment=False, multihands=None, features=None)
    batch = torch.utils.data.default_collate([dm.dataset("train")[i] for i in range(2)])
    module = HandFlowModule(cfg)
    fit_normalizer(module, dm.dataset("train"))
    total, terms, _ = module.compute_losses(batch)
    assert "kp2d" in terms and torch.isfinite(terms["kp2d"]) and float(terms["kp2d"].detach()) > 0
    total.backward()
    head = module.model.backbone.keypoint_head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    off = HandFlowModule(tiny_cfg(tiny_data, tmp_path / "k0", 1, **{"model.context": "keypoints2d", "loss.w_kp2d": 0}))
    fit_normalizer(off, dm.dataset("train"))
    assert "kp2d" not in off.compute_losses(batch)[1]
    pooled = HandFlowModule(tiny_cfg(tiny_data, tmp_path / "p", 1))
    fit_normalizer(pooled, dm.dataset("train"))
    assert "kp2d" not in pooled.compute_losses(batch)[1]  # the paper's context: no such term


def test_config_checks_and_resume_refuses_another_context(tmp_path) -> None:
    from handflow.config import to_dict
    from handflow.training import CheckpointMismatch
    from handflow.training.runner import check_compatible

    with pytest.raises(ConfigError, match="model.context='heatmaps'"):
        load_config("cpu", ["model.context=heatmaps"])
    with pytest.raises(ConfigError, match="needs an image backbone"):
        load_config("cpu", ["model.backbone=keypoints", "model.context=keypoints2d"])
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "optimizer_states": [{}], "hyper_parameters": {"config": to_dict(load_config("cpu"))}}, path)
    with pytest.raises(CheckpointMismatch, match=r"model\.context=pooled \(now keypoints2d\)"):
        check_compatible(path, load_config("cpu", ["model.context=keypoints2d"]))


def test_a_pooled_backbone_starts_a_keypoints2d_run_not_the_reverse(tiny_data, tmp_path) -> None:
    from conftest import tiny_train

    from handflow.training import CheckpointMismatch, HandFlowModule, load_checkpoint
    from handflow.training.runner import init_backbone

    pooled = tiny_train(tiny_data, tmp_path / "p", 1)
    cfg = tiny_cfg(tiny_data, tmp_path / "k", 1, **{"model.context": "keypoints2d", "model.backbone_checkpoint": pooled})
    module = HandFlowModule(cfg)
    head = {k: v.clone() for k, v in module.model.backbone.keypoint_head.state_dict().items()}
    init_backbone(module, cfg)
    donor = load_checkpoint(pooled)[0]
    assert all(torch.equal(v, donor.model.backbone.net.state_dict()[k])
               for k, v in module.model.backbone.net.state_dict().items())
    assert all(torch.equal(v, head[k]) for k, v in module.model.backbone.keypoint_head.state_dict().items())
    guided = tiny_train(tiny_data, tmp_path / "g", 1, **{"model.context": "keypoints2d"})
    back = tiny_cfg(tiny_data, tmp_path / "b", 1, **{"model.backbone_checkpoint": guided})
    with pytest.raises(CheckpointMismatch, match="backbone context 'keypoints2d', this config 'pooled'"):
        init_backbone(HandFlowModule(back), back)
