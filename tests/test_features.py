"""Shared-feature protocol: cached backbone features, heads trained on them, and the checks
that keep a cache tied to its backbone and dataset."""

from __future__ import annotations

import json

import pytest
import torch

from handflow.config import ConfigError
from handflow.data.features import FeatureCacheError, FeatureDataset, backbone_digest, load_split_features
from handflow.data.interhand import InterHandDataset
from handflow.pipeline.features import cache_features
from handflow.training import load_checkpoint
from tests.conftest import tiny_cfg, tiny_train


@pytest.fixture(scope="module")
def donor(tiny_data, tmp_path_factory):
    """A trained tiny deterministic model (its backbone is the shared one) and its cache."""
    out = tmp_path_factory.mktemp("donor")
    ckpt = tiny_train(tiny_data, out / "run", steps=2, **{"model.kind": "deterministic"})
    feats = out / "features"
    cache_features(ckpt, tiny_data, feats, splits=("train", "val", "test"), batch_size=4, num_workers=0, progress=False)
    return ckpt, feats


def test_cached_features_equal_the_backbone_on_the_images(tiny_data, donor):
    ckpt, feats = donor
    module, cfg = load_checkpoint(ckpt)
    F, ids = load_split_features(feats, "test")
    ds = InterHandDataset(tiny_data, "test", cfg.data.image_size)
    assert F.shape == (len(ds), module.model.backbone.dim)
    for i in (0, len(ds) - 1):
        item = ds[i]
        assert int(ids[i]) == item["meta"]["image_id"]
        with torch.no_grad():
            ref = module.model.features(item["image"][None])[0]
        torch.testing.assert_close(F[i], ref, rtol=1e-5, atol=1e-5)
    meta = json.loads((feats / "features.json").read_text())
    assert meta["backbone_digest"] == backbone_digest(module.model.backbone)
    assert meta["splits"]["test"] == len(ds)


def test_losses_on_cached_features_equal_losses_on_images(tiny_data, donor, tmp_path):
    """The training objective is the same whether the frozen backbone runs or its cache is read."""
    from handflow.training.module import HandFlowModule
    from handflow.training.runner import fit_normalizer, init_backbone

    ckpt, feats = donor
    cfg = tiny_cfg(tiny_data, tmp_path, 1, **{"model.backbone_checkpoint": ckpt, "model.freeze_backbone": "true",
                                             "data.features": feats})
    module = HandFlowModule(cfg)
    init_backbone(module, cfg)
    plain = InterHandDataset(tiny_data, "train", 64)
    fit_normalizer(module, plain)
    cached = FeatureDataset(InterHandDataset(tiny_data, "train", 64, load_images=False), *load_split_features(feats, "train"))
    collate = torch.utils.data.default_collate
    a, b = collate([plain[i] for i in range(3)]), collate([cached[i] for i in range(3)])
    assert "image" not in b and b["feats"].shape == (3, 512)
    module.train()
    assert not module.model.backbone.training  # frozen: BatchNorm statistics stay
    la, ta, _ = module.compute_losses(a)
    lb, tb, _ = module.compute_losses(b)
    torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-4)
    assert ta.keys() == tb.keys()


def test_head_training_keeps_the_backbone_and_checkpoint_predicts(tiny_data, donor, tmp_path):
    ckpt, feats = donor
    donor_module, _ = load_checkpoint(ckpt)
    on_features = {"model.backbone_checkpoint": ckpt, "model.freeze_backbone": "true", "data.features": feats}
    last = tiny_train(tiny_data, tmp_path / "head", steps=3, **on_features)
    head, cfg = load_checkpoint(last)
    assert cfg.model.kind == "flow" and cfg.data.features == str(feats)
    for k, v in donor_module.model.backbone.state_dict().items():
        assert torch.equal(v, head.model.backbone.state_dict()[k]), k
    ds = InterHandDataset(tiny_data, "test", 64)
    out = head.model.predict(ds[0]["image"][None], 5)
    assert out["samples"].shape == (1, 5, 218) and torch.isfinite(out["samples"]).all()
    # the flow's parameters moved (it trained), the backbone did not
    fresh = tiny_train(tiny_data, tmp_path / "head0", steps=1, **on_features)
    h1, _ = load_checkpoint(fresh)
    assert any(not torch.equal(p, q) for p, q in zip(h1.model.flow.parameters(), head.model.flow.parameters()))


def test_features_need_a_frozen_backbone(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="freeze_backbone"):
        tiny_cfg(tiny_data, tmp_path, 1, **{"data.features": str(tmp_path)})


def test_cache_of_another_backbone_is_refused(tiny_data, donor, tmp_path):
    ckpt, feats = donor
    other = tiny_train(tiny_data, tmp_path / "other", steps=1, **{"model.kind": "deterministic", "train.seed": 5})
    with pytest.raises(FeatureCacheError, match="another backbone"):
        tiny_train(tiny_data, tmp_path / "bad", steps=1, **{"model.backbone_checkpoint": other, "model.freeze_backbone": "true",
                                                            "data.features": feats})
    with pytest.raises(FeatureCacheError, match="another backbone"):
        cache_features(other, tiny_data, feats, splits=("test",), num_workers=0, progress=False)


def test_cache_of_another_dataset_or_split_is_refused(tiny_data, donor, tmp_path):
    ckpt, feats = donor
    F, ids = load_split_features(feats, "train")
    base = InterHandDataset(tiny_data, "train", 64, load_images=False)
    with pytest.raises(FeatureCacheError, match="items"):
        FeatureDataset(base, F[:-1], ids[:-1])
    with pytest.raises(FeatureCacheError, match="image ids"):
        FeatureDataset(base, F, ids.flip(0))
    with pytest.raises(FeatureCacheError, match="no features for split"):
        load_split_features(feats, "nosuchsplit")
    with pytest.raises(FeatureCacheError, match="handflow features"):
        load_split_features(tmp_path, "train")


def test_images_of_another_size_are_refused(tiny_data, donor, tmp_path):
    from handflow.training.module import HandFlowModule

    module = HandFlowModule(tiny_cfg(tiny_data, tmp_path, 1))
    batch = torch.utils.data.default_collate([InterHandDataset(tiny_data, "train", 48)[0]])
    with pytest.raises(ValueError, match="data.image_size=64"):
        module.compute_losses(batch)


def test_evaluation_on_cached_features_equals_evaluation_on_images(tiny_data, donor, tmp_path):
    """A head on the frozen backbone scored from the cached test features (``--features``) gives
    the per-image metrics of scoring it on the decoded images; a cache of another backbone is
    refused in one line."""
    import numpy as np

    from handflow.data.features import FeatureCacheError
    from handflow.evaluation import evaluate
    from handflow.multihands.generate import GenerateConfig, dataset_targets, generate

    ckpt, feats = donor
    mh = tmp_path / "mh"  # with MultiHands: the min/MMD columns, and the image ids read before the cache wraps
    generate(mh, "test", GenerateConfig(num=3, rounds=1, proposals_per_image=8, image_size=64, batch_images=8),
             dataset_targets(tiny_data, "test", 64), progress=False)
    head = tiny_train(tiny_data, tmp_path / "head", steps=2, **{"model.backbone_checkpoint": str(ckpt),
                                                                "model.freeze_backbone": True, "data.features": str(feats)})
    kw = {"samples": 4, "batch_size": 3, "progress": False, "multihands": mh}
    evaluate(head, tiny_data, tmp_path / "img", **kw)
    evaluate(head, tiny_data, tmp_path / "feat", features=feats, **kw)
    a, b = np.load(tmp_path / "img" / "per_image.npz"), np.load(tmp_path / "feat" / "per_image.npz")
    assert np.array_equal(a["image_id"], b["image_id"]) and len(a["image_id"]) > 1
    assert b["has_multihands"].any()
    for k in ("mpjpe_z0_rr", "mpjpe_z0_global", "mpjpe_best_rrr", "spread_mm", "min_global", "mmd_rrr"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-3, err_msg=k)
    other = tiny_train(tiny_data, tmp_path / "other", steps=1, **{"model.kind": "deterministic", "train.seed": 5})
    with pytest.raises(FeatureCacheError, match="another backbone"):
        evaluate(other, tiny_data, tmp_path / "bad", features=feats, **kw)
