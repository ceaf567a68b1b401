"""Packed store and batched augmentation (issue #17): targets, augmentation against the
per-sample path, refusals, resume, and the training step on packed batches."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from handflow.data.augment import AugmentConfig, AugmentParams, color_jitter, sample_augment
from handflow.data.interhand import InterHandDataset
from handflow.data.packed import (
    AugmentBatch,
    PackedDataModule,
    PackedDataset,
    PackedStoreError,
    augment_batch,
    collate_packed,
    pack_split,
)
from handflow.errors import SettingsMismatch

SIZE = 64
TARGET_KEYS = ("K", "joints_cam", "joints_2d", "joint_valid", "visible", "y")
#: uint8 storage of a crop: at most half a grey level (plus float rounding)
QUANT_TOL = 0.5 / 255 + 1e-5
#: two bilinear resamplings vs one: mean absolute difference of the augmented images
AUG_IMAGE_MEAN_TOL = 0.02
#: float64 targets of both paths, stored as float32
AUG_TARGET_TOL = 1e-3


@pytest.fixture(scope="module")
def store(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed")
    pack_split(tiny_data, "train", out, SIZE, chunk=5, progress=False)
    pack_split(tiny_data, "val", out, SIZE, progress=False)
    return out


def _per_sample(ds: InterHandDataset, idx: list[int]) -> dict:
    return torch.utils.data.default_collate([ds[i] for i in idx])


def test_store_targets_equal_the_dataset_items(tiny_data, store):
    ds = InterHandDataset(tiny_data, "train", SIZE)
    pk = PackedDataset(store, "train", root=tiny_data)
    assert len(pk) == len(ds)
    for i in range(len(ds)):
        a, b = ds[i], pk[i]
        for k in TARGET_KEYS:
            assert torch.equal(a[k], b[k]), (i, k)
        assert a["has_params"] == bool(b["has_params"]) and a["hand_type"] == b["hand_type"]
        assert {k: a["meta"][k] for k in ("image_id", "index", "file_name", "seq", "camera", "capture", "frame")} == \
            {k: (v.item() if torch.is_tensor(v) else v) for k, v in b["meta"].items()}
        assert (a["image"] - b["image"]).abs().max() <= QUANT_TOL
        assert torch.equal(pk.annotation(i)["y"], a["y"])


def test_identity_augmentation_returns_the_packed_crop(store):
    pk = PackedDataset(store, "train")
    idx = [0, 3, 5]
    b = pk.batch(idx, None)
    pad, S = pk.pad, pk.size
    crops = torch.from_numpy(np.asarray(pk._images[idx]))
    assert torch.equal(b["image"], crops[:, :, pad:pad + S, pad:pad + S].float() / 255)
    ident = AugmentBatch.stack([AugmentParams()] * len(idx))
    w = pk.batch(idx, ident)  # the warp path with identity parameters
    assert (w["image"] - b["image"]).abs().max() < 1e-5
    for k in ("K", "joints_cam", "joints_2d", "y"):
        assert torch.allclose(w[k], b[k], atol=1e-4), k
    assert torch.equal(w["visible"], b["visible"])


def test_batched_augmentation_matches_the_per_sample_path(tiny_data, store):
    ds = InterHandDataset(tiny_data, "train", SIZE, augment=True, seed=7)
    pk = PackedDataset(store, "train", augment=True, seed=7)
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        pk.set_epoch(epoch)
        idx = list(range(len(ds)))
        a, b = _per_sample(ds, idx), pk.__getitems__(idx)
        for k in ("K", "joints_cam", "joints_2d", "y"):
            assert torch.allclose(a[k], b[k], atol=AUG_TARGET_TOL, rtol=1e-5), k
        assert torch.equal(a["visible"], b["visible"]) and torch.equal(a["joint_valid"], b["joint_valid"])
        assert (a["image"] - b["image"]).abs().mean() < AUG_IMAGE_MEAN_TOL
        assert not torch.equal(b["image"], pk.batch(idx, None)["image"])  # it did augment


def test_batch_color_jitter_matches_color_jitter():
    from handflow.data.packed import batch_color_jitter

    g = torch.Generator().manual_seed(0)
    img = torch.rand(4, 3, 8, 8, generator=g)
    ps = [sample_augment(AugmentConfig(), 1, i, 0) for i in range(4)]
    ab = AugmentBatch.stack(ps)
    got = batch_color_jitter(img, ab.brightness, ab.contrast, ab.saturation)
    want = torch.stack([color_jitter(img[i], ps[i]) for i in range(4)])
    assert torch.allclose(got, want, atol=1e-6)


def test_resident_store_and_channels_last_run_on_the_cpu(store):
    """The GPU code path (the whole store as one tensor on the device, channels-last images) on the CPU."""
    a = PackedDataset(store, "train", augment=True, seed=1)
    b = PackedDataset(store, "train", augment=True, seed=1, resident=True, channels_last=True)
    idx = [4, 1, 2]
    ba, bb = a.__getitems__(idx), b.__getitems__(idx)
    assert bb["image"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(ba["image"], bb["image"].contiguous())
    p = augment_batch(torch.zeros(1, 3, SIZE + 2 * a.pad, SIZE + 2 * a.pad, dtype=torch.uint8),
                      {k: v[:1] for k, v in a.t.items()}, SIZE, a.pad, None)
    assert p["image"].shape == (1, 3, SIZE, SIZE) and p["image"].dtype == torch.float32


def test_loader_worker_gives_the_same_batches(store):
    """A DataLoader worker reopens the memory map (the dataset is pickled without it)."""
    from handflow.data.datamodule import EpochShuffleSampler

    pk = PackedDataset(store, "train", augment=True, seed=2)
    batches = []
    for workers in (0, 1):
        sampler = EpochShuffleSampler(pk, seed=4)
        sampler.set_epoch(1)
        loader = torch.utils.data.DataLoader(pk, batch_size=4, sampler=sampler, num_workers=workers,
                                             collate_fn=collate_packed, drop_last=True)
        batches.append(list(loader))
    assert len(batches[0]) == len(batches[1]) == len(pk) // 4
    for a, b in zip(*batches):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["y"], b["y"])
        assert a["meta"]["file_name"] == b["meta"]["file_name"]


def test_store_from_other_annotations_or_settings_is_refused(tiny_data, store, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root, ignore=shutil.ignore_patterns(".handflow_cache"))
    data_json = root / "annotations" / "train" / "InterHand2.6M_train_data.json"
    data_json.write_text(data_json.read_text() + " \n")  # other bytes, same content
    with pytest.raises(PackedStoreError, match="other annotations"):
        PackedDataset(store, "train", root=root)
    with pytest.raises(SettingsMismatch, match="annotations="):
        pack_split(root, "train", store, SIZE, progress=False)
    with pytest.raises(SettingsMismatch, match="image_size=64"):
        pack_split(tiny_data, "train", store, 32, progress=False)
    with pytest.raises(PackedStoreError, match="handflow pack"):
        PackedDataset(store, "test")


def test_pack_resumes_after_an_interruption(tiny_data, store, tmp_path, monkeypatch):
    import handflow.data.packed as packed

    real, calls = packed.save_npz, []

    def crash_on_second(path, arrays, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(path, arrays, **kw)

    monkeypatch.setattr(packed, "save_npz", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        pack_split(tiny_data, "train", tmp_path, SIZE, chunk=5, progress=False)
    monkeypatch.setattr(packed, "save_npz", real)
    assert not (tmp_path / "train" / "meta.json").exists()
    pack_split(tiny_data, "train", tmp_path, SIZE, chunk=5, progress=False)
    assert (tmp_path / "train" / "images.u8").read_bytes() == (store / "train" / "images.u8").read_bytes()
    with np.load(tmp_path / "train" / "targets.npz") as x, np.load(store / "train" / "targets.npz") as y:
        assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)
    assert not (tmp_path / "train" / ".chunks").exists()


def test_training_loss_is_the_same_on_packed_and_dataset_batches(tiny_data, store, tmp_path):
    from conftest import tiny_cfg

    from handflow.training.module import HandFlowModule
    from handflow.training.runner import fit_normalizer

    cfg = tiny_cfg(tiny_data, tmp_path, 1)
    module = HandFlowModule(cfg)
    ds = InterHandDataset(tiny_data, "train", SIZE)
    fit_normalizer(module, ds)
    module.eval()
    idx = [0, 2, 4, 6]
    with torch.no_grad():
        la, ta, _ = module.compute_losses(_per_sample(ds, idx))
        lb, tb, _ = module.compute_losses(PackedDataset(store, "train").__getitems__(idx))
    assert torch.allclose(la, lb, rtol=1e-3, atol=1e-4), (ta, tb)


def test_data_packed_trains_through_the_entry_point(tiny_data, store, tmp_path):
    from conftest import tiny_cfg

    from handflow.data.datamodule import InterHandDataModule
    from handflow.training import train

    cfg = tiny_cfg(tiny_data, tmp_path / "run", 3, **{"data.packed": str(store), "data.augment": "true"})
    dm = InterHandDataModule.from_config(cfg, num_workers=0)
    assert isinstance(dm, PackedDataModule)
    assert isinstance(dm.dataset("train"), PackedDataset) and isinstance(dm.dataset("val"), PackedDataset)
    assert not isinstance(dm.dataset("test"), PackedDataset)  # not packed: read from the dataset
    loader = dm.train_dataloader()
    assert loader.collate_fn is collate_packed
    batch = next(iter(loader))
    assert batch["image"].shape == (cfg.data.batch_size, 3, SIZE, SIZE)
    last = train(cfg, datamodule=dm, enable_progress_bar=False)
    assert last.exists()


def test_packed_refuses_multihands_and_other_sizes(tiny_data, store, tmp_path):
    from conftest import tiny_cfg

    from handflow.data.datamodule import InterHandDataModule

    cfg = tiny_cfg(tiny_data, tmp_path, 1, **{"data.packed": str(store), "data.multihands": str(tmp_path)})
    with pytest.raises(PackedStoreError, match="images only"):
        InterHandDataModule.from_config(cfg)
    cfg = tiny_cfg(tiny_data, tmp_path, 1, **{"data.packed": str(store), "data.image_size": 32})
    with pytest.raises(PackedStoreError, match="--image-size 32"):
        InterHandDataModule.from_config(cfg).dataset("train")


def test_pack_cli(tiny_data, store, tmp_path):
    from typer.testing import CliRunner

    from handflow.cli import app

    r = CliRunner().invoke(app, ["pack", "--data", str(tiny_data), "--out", str(tmp_path), "--split", "train,val",
                                 "--image-size", str(SIZE), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "train: 16 crops of 96 px" in r.output and (tmp_path / "val" / "meta.json").is_file()
    assert (tmp_path / "train" / "images.u8").read_bytes() == (store / "train" / "images.u8").read_bytes()
    r = CliRunner().invoke(app, ["pack", "--data", str(tiny_data), "--out", str(tmp_path), "--image-size", "32", "--no-progress"])
    assert r.exit_code != 0 and "image_size=64" in r.output


@pytest.mark.slow
def test_gpu_train_script_cpu_smoke(tmp_path):
    """benchmarks/gpu_train.sh --cpu-smoke: every stage with tiny sizes on the CPU; the weights
    come back from pieces of at most the given size and reproduce the trained model."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(repo / "benchmarks" / "gpu_train.sh"), "--cpu-smoke", "--piece-mib", "2",
                        "--minutes", "0.2", "--work", str(tmp_path / "work")], cwd=repo, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["stages"]) == {"synth", "pack", "throughput", "train", "evaluate"}
    assert m["stages"]["synth"]["settings"]["train_cameras"] == 1
    assert {t["preset"] for t in m["stages"]["throughput"]["results"]} == {"cpu", "paper"}
    assert all(t["images_per_s"] > 0 and t["device"] == m["device"] for t in m["stages"]["throughput"]["results"])
    ev = m["stages"]["evaluate"]
    assert ev["images"] > 0 and ev["z0_rr_mm"] > 0 and ev["mean_pose_rr_mm"] > 0
    pieces = sorted((out / "weights").glob("weights-*.pt"))
    assert len(pieces) > 1 and all(p.stat().st_size <= 2 * 2**20 for p in pieces)
    assert not any(p.is_dir() for p in out.iterdir() if p.name != "weights")  # the data stays outside OUT
    assert not (tmp_path / "work").exists()  # and is deleted at the end
    sys.path.insert(0, str(repo / "benchmarks"))
    try:
        from gpu_train import load_weights
    finally:
        sys.path.pop(0)
    module = load_weights(out / "weights")
    assert module.cfg.data.packed is not None and module.cfg.data.image_size == 64
