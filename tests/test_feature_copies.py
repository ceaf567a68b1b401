"""Shared-feature protocol with a given backbone and augmented copies (issue #17): a float16
weights-only export as the backbone of the cache and of the heads, K augmented copies of every
training image in the cache, and the items that serve copy k with the targets of copy k."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from handflow.config import ConfigError
from handflow.data.augment import AugmentConfig
from handflow.data.datamodule import EpochShuffleSampler, InterHandDataModule
from handflow.data.features import FeatureCacheError, backbone_digest, feature_augmentation, load_split_features
from handflow.data.interhand import InterHandDataset
from handflow.data.multihands_targets import MultiHandsDataset
from handflow.models.checkpoint import load_model
from handflow.models.shipped import export_weights
from handflow.pipeline.features import cache_features
from tests.conftest import tiny_cfg, tiny_train

SIZE, SEED, K = 64, 7, 2
TARGETS = ("K", "joints_cam", "joints_2d", "y", "visible", "joint_valid")


@pytest.fixture(scope="module")
def export(tiny_data, tmp_path_factory):
    """A tiny trained model exported as float16 weights only (as the shipped models are)."""
    out = tmp_path_factory.mktemp("export")
    ckpt = tiny_train(tiny_data, out / "run", steps=2, **{"model.kind": "flow"})
    return export_weights(ckpt, out / "model.pt")


@pytest.fixture(scope="module")
def copies(tiny_data, export, tmp_path_factory):
    """A cache of K augmented copies of the train split (augmentation seed SEED), val one copy."""
    out = tmp_path_factory.mktemp("copies")
    cache_features(export, tiny_data, out, splits=("train", "val"), batch_size=4, num_workers=0, progress=False,
                   copies=K, seed=SEED)
    return out


def _augmented(tiny_data, epoch: int, load_images: bool = True) -> InterHandDataset:
    ds = InterHandDataset(tiny_data, "train", SIZE, augment=True, seed=SEED, load_images=load_images)
    ds.set_epoch(epoch)
    return ds


def _same(a: dict, b: dict) -> None:
    for k in TARGETS:
        assert torch.equal(a[k], b[k]), k
    assert a["meta"]["image_id"] == b["meta"]["image_id"]


def test_a_float16_export_is_a_backbone_for_the_cache_and_the_heads(tiny_data, export, copies, tmp_path) -> None:
    """Its weights are widened to float32 the same way by load_model (the cache) and
    init_backbone (the heads): the digests agree, and a head trains on it."""
    from handflow.training.module import HandFlowModule
    from handflow.training.runner import init_backbone

    sd = torch.load(export, weights_only=True)["state_dict"]
    assert sd["model.backbone.net.conv1.weight"].dtype == torch.float16
    meta = json.loads((copies / "features.json").read_text())
    cfg = tiny_cfg(tiny_data, tmp_path, 1, **{"model.backbone_checkpoint": export, "model.freeze_backbone": "true",
                                             "data.features": copies, "data.feature_copies": K, "data.augment": "true"})
    module = HandFlowModule(cfg)
    init_backbone(module, cfg)
    w = module.model.backbone.state_dict()["net.conv1.weight"]
    assert w.dtype == torch.float32 and torch.equal(w, sd["model.backbone.net.conv1.weight"].float())
    assert backbone_digest(module.model.backbone) == meta["backbone_digest"] == backbone_digest(load_model(export)[0].backbone)
    from handflow.training import load_checkpoint, train

    head = tiny_cfg(tiny_data, tmp_path / "head", 2, **{"model.backbone_checkpoint": export, "model.freeze_backbone": "true",
                                                       "data.features": copies, "data.feature_copies": K,
                                                       "data.augment": "true"})
    last = train(head, datamodule=InterHandDataModule.from_config(head, num_workers=0), enable_progress_bar=False)
    trained, _ = load_checkpoint(last)
    assert backbone_digest(trained.model.backbone) == meta["backbone_digest"]


def test_copy_k_is_the_backbone_on_the_image_augmented_for_epoch_k(tiny_data, export, copies) -> None:
    model, _ = load_model(export)
    F, ids = load_split_features(copies, "train")
    n = len(ids)
    assert F.shape == (K, n, model.backbone.dim)
    for k in range(K):
        ds = _augmented(tiny_data, k)
        for i in (0, n - 1):
            item = ds[i]
            assert int(ids[i]) == item["meta"]["image_id"]
            with torch.no_grad():
                ref = model.backbone(item["image"][None])[0]
            torch.testing.assert_close(F[k, i], ref, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(F[1 - k, i], ref, rtol=1e-3, atol=1e-3)  # the copies differ: the order is tested
    Fv, _ = load_split_features(copies, "val")
    assert Fv.dim() == 2  # val and test: one un-augmented copy
    meta = json.loads((copies / "features.json").read_text())
    assert meta["copies"] == K and meta["augment_seed"] == SEED and meta["augment"] == asdict(AugmentConfig())
    assert not list(copies.glob("*.copy*.pt"))  # the per-copy parts are merged and removed


@pytest.mark.parametrize("multihands", [False, True])
def test_items_serve_copy_k_with_the_targets_of_copy_k(tiny_data, copies, multihands, tmp_path) -> None:
    """Through the data module (and the MultiHands wrapper): in every epoch, item i carries the
    feature of the copy it serves and exactly the targets of that copy's augmented image."""
    mh = None
    if multihands:
        from handflow.multihands.generate import GenerateConfig, dataset_targets, generate

        mh = tmp_path / "mh"
        cfg = GenerateConfig(num=3, rounds=1, proposals_per_image=8, image_size=SIZE, batch_images=8, seed=1)
        generate(mh, "train", cfg, dataset_targets(tiny_data, "train", SIZE), progress=False)
    F, _ = load_split_features(copies, "train")
    dm = InterHandDataModule(tiny_data, SIZE, features=copies, feature_copies=K, seed=3, multihands=mh, multihands_max=3)
    fd = dm.dataset("train")
    sampler = EpochShuffleSampler(fd, seed=3)
    refs = [_augmented(tiny_data, k, load_images=False) for k in range(K)]
    if multihands:
        refs = [MultiHandsDataset(r, mh, "train", 3, image_size=SIZE) for r in refs]
    served: dict[int, set[int]] = {}
    for epoch in range(3):
        sampler.set_epoch(epoch)  # as Lightning does: the epoch reaches the feature dataset
        assert fd.epoch == epoch
        for i in range(len(fd)):
            k = fd.copy_of(i)
            served.setdefault(i, set()).add(k)
            item, ref = fd[i], refs[k][i]
            assert torch.equal(item["feats"], F[k, i])
            _same(item, ref)
            if multihands:
                assert torch.equal(item["multi_y"], ref["multi_y"]) and torch.equal(item["multi_valid"], ref["multi_valid"])
            if i < 4:  # the other copy's targets differ: a copy served with the wrong targets fails above
                assert not torch.equal(item["K"], refs[1 - k][i]["K"])
    assert all(s == set(range(K)) for s in served.values())  # K consecutive epochs serve every copy
    assert len({fd.copy_of(i) for i in range(len(fd))}) == K  # and one epoch mixes the copies


def test_one_copy_writes_the_cache_as_before(tiny_data, export, tmp_path) -> None:
    """copies=1 (the default) writes the files an older handflow wrote: (N, C) un-augmented
    features and no copy fields; such a cache reads as one copy."""
    out = tmp_path / "one"
    meta = cache_features(export, tiny_data, out, splits=("train",), batch_size=4, num_workers=0, progress=False)
    assert set(meta) == {"checkpoint", "backbone", "backbone_digest", "image_size", "data", "hand_model", "dim", "splits"}
    d = torch.load(out / "train.pt", weights_only=True)
    assert set(d) == {"features", "image_id"} and d["features"].dim() == 2 and sorted(p.name for p in out.iterdir()) == \
        ["features.json", "train.pt"]
    model, _ = load_model(export)
    with torch.no_grad():
        ref = model.backbone(InterHandDataset(tiny_data, "train", SIZE)[1]["image"][None])[0]
    torch.testing.assert_close(d["features"][1], ref, rtol=1e-5, atol=1e-5)
    assert feature_augmentation(out, 1, AugmentConfig()) is None
    fd = InterHandDataModule(tiny_data, SIZE, features=out).dataset("train")
    assert fd.copies == 1 and not fd.inner.augment and torch.equal(fd[1]["feats"], d["features"][1])


def test_a_cache_of_other_copies_or_augmentation_is_refused(tiny_data, export, copies, tmp_path) -> None:
    one = tmp_path / "one"
    cache_features(export, tiny_data, one, splits=("train",), batch_size=4, num_workers=0, progress=False)
    with pytest.raises(FeatureCacheError, match=f"data.feature_copies={K}") as e:
        InterHandDataModule(tiny_data, SIZE, features=copies, feature_copies=1).dataset("train")
    assert "\n" not in str(e.value)
    with pytest.raises(FeatureCacheError, match="holds 1 feature copies"):
        InterHandDataModule(tiny_data, SIZE, features=one, feature_copies=K).dataset("train")
    with pytest.raises(FeatureCacheError, match="augmented with"):
        feature_augmentation(copies, K, AugmentConfig(rotation_deg=10.0))
    with pytest.raises(FeatureCacheError, match="augmented with"):
        InterHandDataModule(tiny_data, SIZE, features=copies, feature_copies=K, augment=False).dataset("train")
    with pytest.raises(FeatureCacheError, match="another --out folder"):  # more copies into a cache of K
        cache_features(export, tiny_data, copies, splits=("train",), num_workers=0, progress=False, copies=K + 1, seed=SEED)
    with pytest.raises(FeatureCacheError, match="another --out folder"):  # another augmentation seed
        cache_features(export, tiny_data, copies, splits=("train",), num_workers=0, progress=False, copies=K, seed=SEED + 1)
    with pytest.raises(ConfigError, match="feature_copies"):
        tiny_cfg(tiny_data, tmp_path, 1, **{"data.feature_copies": 2})


def test_a_stopped_cache_resumes_at_the_next_copy(tiny_data, export, copies, tmp_path) -> None:
    """A copy written before the run stopped (``train.copy<k>.pt``) is kept, not recomputed."""
    import shutil

    out = tmp_path / "resume"
    shutil.copytree(copies, out)
    F, ids = load_split_features(out, "train")
    meta = json.loads((out / "features.json").read_text())
    del meta["splits"]["train"]
    (out / "features.json").write_text(json.dumps(meta))
    (out / "train.pt").unlink()
    torch.save({"features": torch.zeros_like(F[0]), "image_id": ids}, out / "train.copy0.pt")  # a marker: copy 0 is done
    cache_features(export, tiny_data, out, splits=("train",), batch_size=4, num_workers=0, progress=False, copies=K, seed=SEED)
    G, _ = load_split_features(out, "train")
    assert torch.equal(G[0], torch.zeros_like(F[0])) and torch.equal(G[1], F[1])
    assert not list(out.glob("*.copy*.pt"))
