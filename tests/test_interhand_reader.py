"""InterHand2.6M reader on fixtures in the exact real format, and on a synthetic set."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from handflow.data import InterHandDataset
from handflow.data.ih_json import AnnotationError
from handflow.geometry import project
from handflow.hand import load_hand_model
from handflow.params import unpack

from ih_fixtures import write_fixture


@pytest.fixture
def fixture(tmp_path):
    truth = write_fixture(tmp_path)
    return tmp_path, truth


def _decode(item, model):
    p = unpack(item["y"][None].double(), item["K"][None].double(), item["image"].shape[-1] if "image" in item else 96)
    return torch.cat([model(p[s].rotmats, p[s].betas, s).joints + p[s].root[:, None] for s in ("right", "left")], 1)[0]


def test_items_match_the_real_format_geometry(fixture) -> None:
    root, truth = fixture
    ds = InterHandDataset(root, "test", 96, hand_model="openhand", visibility="none")
    assert len(ds) == 4
    model = load_hand_model("openhand").double()
    for i in range(len(ds)):
        it = ds[i]
        t = truth[it["meta"]["image_id"]]
        assert it["image"].shape == (3, 96, 96)
        np.testing.assert_array_equal(it["joint_valid"].numpy(), t["valid"])
        v = it["joint_valid"]
        assert torch.allclose(it["joints_cam"][v].double(), torch.from_numpy(t["cam"])[v], atol=1e-3)
        assert torch.allclose(project(it["joints_cam"], it["K"]), it["joints_2d"], atol=1e-3)
        # the crop shows the drawn dots at joints_2d (pixel-centre consistent resampling)
        img = it["image"].mean(0)
        W, H = (334, 512) if it["meta"]["camera"] == "400026" else (512, 334)
        checked = 0
        for j in torch.nonzero(v).flatten().tolist():
            x, y = it["joints_2d"][j].floor().long().tolist()
            su, sv = t["uv"][j]
            if 1 <= x < 95 and 1 <= y < 95 and 8 <= su < W - 8 and 8 <= sv < H - 8:
                checked += 1
                assert img[y - 1 : y + 2, x - 1 : x + 2].max() > 0.6, (i, j)
        assert checked >= 5
        if it["has_params"]:
            assert torch.allclose(_decode(it, model).float(), it["joints_cam"], atol=1e-2)
        assert it["meta"]["file_name"].startswith("Capture3/0390_dh_touchROM/cam")
    # the right-only frame: left hand invalid, no params
    right_only = [ds.annotation(i) for i in range(4) if not ds.annotation(i)["joint_valid"][21:].any()]
    assert len(right_only) == 2 and not right_only[0]["has_params"] and right_only[0]["hand_type"] == "right"
    assert right_only[0]["y"].abs().sum() == 0


def test_default_collate_and_annotation_without_image(fixture) -> None:
    root, _ = fixture
    ds = InterHandDataset(root, "test", 64, hand_model="openhand", visibility="render")
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 64, 64) and batch["y"].shape == (2, 218)
    ann = ds.annotation(0)
    assert "image" not in ann and torch.equal(ann["joints_2d"], ds[0]["joints_2d"])
    assert ann["visible"].any() and (ann["visible"] <= ann["joint_valid"]).all()


def test_index_is_reused_and_rebuilt_when_a_source_changes(fixture) -> None:
    root, _ = fixture
    a = InterHandDataset(root, "test", 64, visibility="none")
    assert a.index.rebuilt
    b = InterHandDataset(root, "test", 64, visibility="none")
    assert not b.index.rebuilt
    p = root / "annotations/test/InterHand2.6M_test_data.json"
    d = json.loads(p.read_text())
    d["images"] = d["images"][:3]
    p.write_text(json.dumps(d))
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    c = InterHandDataset(root, "test", 64, visibility="none")
    assert c.index.rebuilt and len(c) == 3


def test_augmentation_is_consistent_and_seeded(fixture) -> None:
    root, _ = fixture
    ds = InterHandDataset(root, "test", 96, hand_model="openhand", augment=True, seed=3, visibility="none")
    model = load_hand_model("openhand").double()
    a, b = ds[0], ds[0]
    assert torch.equal(a["image"], b["image"])
    ds.set_epoch(1)
    c = ds[0]
    assert not torch.equal(a["joints_2d"], c["joints_2d"])
    for it in (a, c):
        assert torch.allclose(project(it["joints_cam"], it["K"]), it["joints_2d"], atol=1e-3)
        assert torch.allclose(_decode(it, model).float(), it["joints_cam"], atol=1e-2)


def test_v00_layout_and_bare_joint_lists(tmp_path) -> None:
    write_fixture(tmp_path)
    ann = tmp_path / "annotations"
    (ann / "test").rename(ann / "all")
    p = ann / "all/InterHand2.6M_test_joint_3d.json"
    d = json.loads(p.read_text())
    for cap in d.values():
        for fr in cap:
            cap[fr] = cap[fr]["world_coord"]
    p.write_text(json.dumps(d))
    ds = InterHandDataset(tmp_path, "test", 64, visibility="none")
    assert len(ds) == 4 and ds[0]["image"].shape == (3, 64, 64)


def test_clear_errors(fixture, tmp_path_factory) -> None:
    root, truth = fixture
    with pytest.raises(FileNotFoundError, match="annotations"):
        InterHandDataset(tmp_path_factory.mktemp("empty"), "test", 64)
    with pytest.raises(ValueError, match="unknown split"):
        InterHandDataset(root, "dev", 64)
    p = root / "annotations/test/InterHand2.6M_test_camera.json"
    good = p.read_text()
    p.write_text(good[:50])
    with pytest.raises(AnnotationError, match="corrupt JSON"):
        InterHandDataset(root, "test", 64, cache_dir=tmp_path_factory.mktemp("c1"))
    d = json.loads(good)
    del d["3"]["focal"]
    p.write_text(json.dumps(d))
    with pytest.raises(AnnotationError, match="'focal'"):
        InterHandDataset(root, "test", 64, cache_dir=tmp_path_factory.mktemp("c2"))
    p.write_text(good)
    ds = InterHandDataset(root, "test", 64, visibility="none", cache_dir=tmp_path_factory.mktemp("c3"))
    victim = next(iter(truth.values()))["file"]
    victim.write_bytes(b"not a jpeg")
    with pytest.raises(OSError, match="corrupt or unreadable image"):
        [ds[i] for i in range(len(ds))]
    skipping = InterHandDataset(root, "test", 64, visibility="none", on_error="skip", cache_dir=tmp_path_factory.mktemp("c4"))
    assert all(skipping[i]["image"].shape == (3, 64, 64) for i in range(len(skipping)))


def test_reads_the_synthetic_dataset(tmp_path) -> None:
    from handflow.data.synth.generate import SynthConfig, generate

    generate(tmp_path, SynthConfig(frames=4, cameras=3, image_size=64, seed=1), progress=False)
    ds = InterHandDataset(tmp_path, "train", 64)
    assert ds.visibility == "extra" and ds.hand_model.name == "openhand"
    model = load_hand_model("openhand").double()
    it = ds[0]
    assert it["has_params"] and it["visible"].any()
    assert torch.allclose(_decode(it, model).float(), it["joints_cam"], atol=1e-2)
