"""Image-free items in memory with batched augmentation and batched MultiHands targets (the
keypoint-evidence protocol's loader, issue #16), against the per-item path."""

from __future__ import annotations

import pytest
import torch

from handflow.data.interhand import InterHandDataset
from handflow.data.multihands_targets import BatchedAttach, MultiHandsDataset, attach_multihands
from handflow.data.targets import TargetsDataset, collate_batched
from handflow.multihands import io as mh_io

SIZE = 64
#: float64 geometry on both paths, float32 outputs
TOL = 1e-3


def _per_item(ds, idx: list[int]) -> dict:
    return torch.utils.data.default_collate([ds[i] for i in idx])


def _same_targets(a: dict, b: dict) -> None:
    for k in ("K", "joints_cam", "joints_2d", "y"):
        assert torch.allclose(a[k], b[k], atol=TOL, rtol=1e-5), k
    for k in ("visible", "joint_valid", "has_params"):
        assert torch.equal(a[k], b[k]), k
    assert a["hand_type"] == b["hand_type"]
    for k in ("image_id", "index", "capture", "frame"):
        assert torch.equal(a["meta"][k], b["meta"][k]), k
    assert a["meta"]["file_name"] == b["meta"]["file_name"]


@pytest.fixture(scope="module")
def multihands(tiny_data, tmp_path_factory):
    """MultiHands annotations of the tiny train split (a short search: a few per image)."""
    from handflow.multihands.generate import GenerateConfig, dataset_targets, generate

    out = tmp_path_factory.mktemp("mh")
    cfg = GenerateConfig(num=4, rounds=2, proposals_per_image=16, image_size=SIZE, batch_images=8, seed=1)
    generate(out, "train", cfg, dataset_targets(tiny_data, "train", SIZE), progress=False)
    return out


def test_batches_equal_the_per_item_path_with_and_without_augmentation(tiny_data) -> None:
    for augment in (False, True):
        ds = InterHandDataset(tiny_data, "train", SIZE, augment=augment, seed=5, load_images=False)
        td = TargetsDataset(InterHandDataset(tiny_data, "train", SIZE, load_images=False), augment=augment, seed=5)
        assert len(td) == len(ds) and td.batched
        idx = list(range(len(ds)))[::-1]
        for epoch in (0, 2):
            ds.set_epoch(epoch)
            td.set_epoch(epoch)
            _same_targets(_per_item(ds, idx), td.__getitems__(idx))
        single = td[3]
        assert single["K"].shape == (3, 3) and single["meta"]["index"] == 3
    # the base's own augmentation is never baked into the stored targets (nor into their cache)
    import handflow.data.targets as targets

    augmenting = InterHandDataset(tiny_data, "train", SIZE, augment=True, seed=1, load_images=False)
    targets._cache_file(augmenting).unlink(missing_ok=True)  # the cache is written from this base
    from_augmenting = TargetsDataset(augmenting)
    plain = InterHandDataset(tiny_data, "train", SIZE, load_images=False)
    _same_targets(_per_item(plain, idx), from_augmenting.__getitems__(idx))
    moved = TargetsDataset(InterHandDataset(tiny_data, "train", SIZE, load_images=False), augment=True, seed=5)
    still = TargetsDataset(InterHandDataset(tiny_data, "train", SIZE, load_images=False), augment=False)
    assert not torch.allclose(moved.__getitems__([0, 1])["K"], still.__getitems__([0, 1])["K"])  # it did augment


def test_batched_multihands_targets_equal_the_per_item_attach(tiny_data, multihands) -> None:
    recs = mh_io.load(multihands, "train")
    assert sum(len(r.params) > 1 for r in recs.values()) >= 2  # real annotations to map
    for augment in (False, True):
        per = MultiHandsDataset(InterHandDataset(tiny_data, "train", SIZE, augment=augment, seed=2, load_images=False),
                                multihands, "train", 4, image_size=SIZE, seed=9)
        bat = MultiHandsDataset(TargetsDataset(InterHandDataset(tiny_data, "train", SIZE, load_images=False),
                                               augment=augment, seed=2), multihands, "train", 4, image_size=SIZE, seed=9)
        per.base.set_epoch(1)
        bat.base.set_epoch(1)
        idx = list(range(len(per)))
        a, b = _per_item(per, idx), bat.__getitems__(idx)
        _same_targets(a, b)
        assert torch.equal(a["multi_valid"], b["multi_valid"]) and a["multi_valid"][:, 1:].any()
        assert torch.equal(a["multi_theta"], b["multi_theta"])
        assert torch.allclose(a["multi_y"], b["multi_y"], atol=TOL, rtol=1e-5)


def test_items_without_annotations_or_parameters_and_foreign_annotations(tiny_data, multihands) -> None:
    base = TargetsDataset(InterHandDataset(tiny_data, "train", SIZE, load_images=False), augment=True, seed=4)
    recs = dict(mh_io.load(multihands, "train").items())
    ids = base.t["image_id"].tolist()
    recs.pop(ids[0])  # an image the search did not annotate: ground truth only
    attach = BatchedAttach(base, recs, 3, SIZE, seed=0)
    idx = [0, 1, 2]
    batch = base.__getitems__(idx)
    batch["has_params"] = batch["has_params"].clone()
    batch["has_params"][2] = False  # an image without hand-model parameters: nothing valid
    got = attach(batch, idx)
    items = [{k: (v[i] if isinstance(v, (torch.Tensor, list)) else {m: w[i] for m, w in v.items()})
              for k, v in batch.items()} for i in range(3)]
    want = torch.utils.data.default_collate([attach_multihands(it, recs, 3, SIZE, seed=0) for it in items])
    assert torch.equal(got["multi_valid"], want["multi_valid"]) and torch.equal(got["multi_theta"], want["multi_theta"])
    assert torch.allclose(got["multi_y"], want["multi_y"], atol=TOL)
    assert got["multi_valid"][0].tolist() == [True, False, False] and not got["multi_valid"][2].any()
    batch["y"] = batch["y"].clone()
    batch["y"][1, -1] += 0.2  # left wrist depth changed: annotations of other data
    with pytest.raises(ValueError, match="does not match"):
        attach(batch, idx)


def test_keypoint_data_module_uses_the_batched_path(tiny_data, multihands, tmp_path) -> None:
    from handflow.data.datamodule import InterHandDataModule

    dm = InterHandDataModule(tiny_data, SIZE, 3, keypoints=True, multihands=multihands)
    loader = dm.train_dataloader()
    assert loader.collate_fn is collate_batched and isinstance(dm.dataset("train").base, TargetsDataset)
    b = next(iter(loader))
    assert b["multi_y"].shape == (3, 8, 218) and b["joints_2d"].shape == (3, 42, 2) and "image" not in b


def test_targets_are_cached_beside_the_index_and_rebuilt_when_unreadable(tiny_data, monkeypatch) -> None:
    import handflow.data.targets as targets

    ds = InterHandDataset(tiny_data, "val", SIZE, load_images=False)
    first = targets.split_targets(ds)
    path = targets._cache_file(ds)
    assert path.is_file() and path.parent == ds.index.folder
    calls = []
    monkeypatch.setattr(targets, "item_targets", lambda d, i: calls.append(i))
    again = targets.split_targets(ds)  # from the cache: no item recomputed
    assert not calls and all((first[k] == again[k]).all() for k in first)
    path.write_bytes(b"not an npz")
    monkeypatch.undo()
    rebuilt = targets.split_targets(ds)
    assert all((first[k] == rebuilt[k]).all() for k in first)
