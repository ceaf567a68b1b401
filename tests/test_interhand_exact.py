"""Independent checks of the InterHand2.6M reader: the crop resampling against
``crop_intrinsics`` under the pixel-centre convention (known answers from linear ramps),
augmented items against the dots drawn into the fixture images, the streaming JSON walker
against ``json.loads``, and the (seed, index, epoch) determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ih_fixtures import write_fixture

from handflow.data.crop import rot_z, warp_to_crop
from handflow.geometry import crop_intrinsics, intrinsics, project

W, H = 334, 512  # a portrait InterHand2.6M image


def _ramp() -> torch.Tensor:
    """(3, H, W) image whose channels 0/1 hold the pixel-centre x/y divided by W/H: bilinear
    interpolation of it at a continuous point (x, y) returns (x/W, y/H) exactly."""
    xs = (torch.arange(W, dtype=torch.float64) + 0.5) / W
    ys = (torch.arange(H, dtype=torch.float64) + 0.5) / H
    return torch.stack([xs.expand(H, W), ys[:, None].expand(H, W), torch.zeros(H, W, dtype=torch.float64)])


def _bilinear(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """Sample (C, h, w) at continuous (x, y) with pixel centres at i + 0.5 (own implementation)."""
    fx, fy = x - 0.5, y - 0.5
    x0, y0 = int(math.floor(fx)), int(math.floor(fy))
    ax, ay = fx - x0, fy - y0
    return ((1 - ax) * (1 - ay) * img[:, y0, x0] + ax * (1 - ay) * img[:, y0, x0 + 1]
            + (1 - ax) * ay * img[:, y0 + 1, x0] + ax * ay * img[:, y0 + 1, x0 + 1])


def test_crop_equals_crop_intrinsics_at_pixel_centres() -> None:
    K = intrinsics(1261.5, 1262.0, 167.3, 256.1).double()
    box = torch.tensor([61.7, 143.2, 171.9, 171.9], dtype=torch.float64)
    S = 48
    crop = warp_to_crop(_ramp(), K, crop_intrinsics(K, box, S), S).numpy()
    # known answer: crop pixel centre (a + 0.5) shows source x0 + (a + 0.5) * w / S
    c = (torch.arange(S, dtype=torch.float64) + 0.5) * box[2] / S
    np.testing.assert_allclose(crop[0] * W, (box[0] + c).expand(S, S).numpy(), atol=1e-9)
    np.testing.assert_allclose(crop[1] * H, (box[1] + c)[:, None].expand(S, S).numpy(), atol=1e-9)


@pytest.mark.parametrize("angle_deg", [0.0, 17.0, -40.0, 180.0])
def test_rotated_crop_shows_points_at_their_projection(angle_deg: float) -> None:
    """A camera-frame point X appears in the crop at project(Rz X, K_crop) and in the source at
    project(X, K): the crop sampled there must hold the source position (ramp values)."""
    K = intrinsics(1261.5, 1262.0, 167.3, 256.1).double()
    box = torch.tensor([40.0, 120.0, 220.0, 220.0], dtype=torch.float64)
    S = 64
    Kc = crop_intrinsics(K, box, S)
    Rz = rot_z(math.radians(angle_deg))
    crop = warp_to_crop(_ramp(), K, Kc, S, Rz).numpy()
    g = torch.Generator().manual_seed(1)
    checked = 0
    for _ in range(200):
        X = torch.tensor([0.0, 0.0, 1000.0], dtype=torch.float64) + torch.randn(3, generator=g, dtype=torch.float64) * 60
        p = project((Rz @ X)[None], Kc, eps=0.0)[0]
        q = project(X[None], K, eps=0.0)[0]
        inside_crop = (p > 1.0).all() and (p < S - 1.0).all()
        inside_src = 1.0 < q[0] < W - 1.0 and 1.0 < q[1] < H - 1.0
        if inside_crop and inside_src:
            v = _bilinear(crop, float(p[0]), float(p[1]))
            np.testing.assert_allclose(v[:2] * [W, H], q.numpy(), atol=1e-6)
            checked += 1
    assert checked > 50


def test_out_of_image_is_filled_with_a_constant() -> None:
    from handflow.data.crop import FILL_VALUE

    K = intrinsics(1000.0, 1000.0, 167.0, 256.0).double()
    box = torch.tensor([-400.0, -400.0, 200.0, 200.0], dtype=torch.float64)  # entirely left/above the image
    crop = warp_to_crop(torch.rand(3, H, W, dtype=torch.float64), K, crop_intrinsics(K, box, 16), 16)
    assert torch.allclose(crop, torch.full_like(crop, FILL_VALUE))


@pytest.fixture
def fixture(tmp_path):
    return tmp_path, write_fixture(tmp_path)


def test_augmented_items_show_the_dots_at_joints_2d(fixture) -> None:
    from handflow.data import InterHandDataset

    root, truth = fixture
    S = 96
    ds = InterHandDataset(root, "test", S, augment=True, seed=5, visibility="none")
    plain = InterHandDataset(root, "test", S, visibility="none")
    moved, checked = 0, 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            it = ds[i]
            t = truth[it["meta"]["image_id"]]
            v = it["joint_valid"]
            assert torch.allclose(project(it["joints_cam"].double(), it["K"].double()), it["joints_2d"].double(), atol=1e-3)
            # rotating the camera about its axis keeps depths and distances
            np.testing.assert_allclose(it["joints_cam"][v, 2].numpy(), t["cam"][v.numpy(), 2], atol=1e-2)
            moved += int(not torch.allclose(it["joints_2d"], plain.annotation(i)["joints_2d"], atol=0.5))
            img = it["image"].mean(0)
            sw, sh = (334, 512) if it["meta"]["camera"] == "400026" else (512, 334)
            for j in torch.nonzero(v).flatten().tolist():
                x, y = it["joints_2d"][j].floor().long().tolist()
                su, sv = t["uv"][j]
                if 2 <= x < S - 2 and 2 <= y < S - 2 and 8 <= su < sw - 8 and 8 <= sv < sh - 8:
                    checked += 1
                    assert img[y - 1 : y + 2, x - 1 : x + 2].max() > 0.6, (epoch, i, j)
    assert moved >= 8 and checked > 100


def test_augmentation_is_a_function_of_seed_index_epoch(fixture) -> None:
    from handflow.data import InterHandDataset

    root, _ = fixture
    a = InterHandDataset(root, "test", 64, augment=True, seed=11, visibility="none")
    b = InterHandDataset(root, "test", 64, augment=True, seed=11, visibility="none")
    c = InterHandDataset(root, "test", 64, augment=True, seed=12, visibility="none")
    for ds in (a, b, c):
        ds.set_epoch(2)
    x, y, z = a[1], b[1], c[1]
    assert torch.equal(x["image"], y["image"]) and torch.equal(x["K"], y["K"])
    assert not torch.equal(x["K"], z["K"])
    assert not torch.equal(a[1]["K"], a[2]["K"] if a[2]["meta"]["camera"] == a[1]["meta"]["camera"] else a[3]["K"])


def test_worker_init_uses_one_thread() -> None:
    from handflow.data.datamodule import worker_init

    before = torch.get_num_threads()
    try:
        worker_init(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


leaves = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False),
                   st.text(alphabet=st.characters(codec="utf-8"), max_size=6))
values = st.recursive(leaves, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=4), ch, max_size=4),
                      max_leaves=12)


@settings(max_examples=120, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=5), st.dictionaries(st.text(max_size=5), values, max_size=4), max_size=4),
       chunk=st.integers(1, 9), indent=st.sampled_from([None, 0, 2]))
def test_json_stream_walk_equals_json_loads(tmp_path_factory, doc, chunk, indent) -> None:
    from handflow.data.ih_json import JsonStream

    p = tmp_path_factory.mktemp("js") / "a.json"
    p.write_text(json.dumps(doc, indent=indent, ensure_ascii=False), encoding="utf-8")
    old = JsonStream.CHUNK
    JsonStream.CHUNK = chunk
    try:
        with JsonStream(p) as s:
            out = {k1: {k2: s.value() for k2 in s.object_keys()} for k1 in s.object_keys()}
    finally:
        JsonStream.CHUNK = old
    assert out == json.loads(p.read_text(encoding="utf-8"))


def test_json_stream_reports_truncation(tmp_path) -> None:
    from handflow.data.ih_json import AnnotationError, JsonStream

    p = tmp_path / "InterHand2.6M_test_joint_3d.json"
    p.write_text(json.dumps({"3": {"1": [1, 2, 3], "2": [4, 5, 6]}})[:-6])
    with pytest.raises(AnnotationError, match="InterHand2.6M_test_joint_3d.json.*corrupt JSON"):
        with JsonStream(p) as s:
            for _ in s.object_keys():
                for _ in s.object_keys():
                    s.value()


def test_single_hand_frames_render_the_one_mesh(fixture, tmp_path, monkeypatch) -> None:
    """A right-only frame (``"left": null``) renders the right mesh alone, so the right hand's
    self-occlusion counts; the left hand (no parameters) keeps visible = valid (False here)."""
    import handflow.render.visibility as V
    from handflow.data import InterHandDataset

    root, _ = fixture
    calls = []

    def fake(meshes, joints, K, size, **kw):
        calls.append([m.hand_id for m in meshes])
        return [torch.arange(len(j)) % 2 == 0 for j in joints]  # a known pattern per mesh

    monkeypatch.setattr(V, "joint_visibility", fake)
    ds = InterHandDataset(root, "test", 64, hand_model="openhand", visibility="render", cache_dir=tmp_path / "c")
    pattern = torch.arange(21) % 2 == 0
    for i in range(len(ds)):
        a = ds.annotation(i)
        if a["joint_valid"][21:].any():
            assert calls[-1] == [0, 1]
            expect = torch.cat([pattern, pattern])
        else:
            assert calls[-1] == [0] and not a["has_params"]
            expect = torch.cat([pattern, torch.zeros(21, dtype=torch.bool)])
        inside = ((a["joints_2d"] >= 0) & (a["joints_2d"] < 64)).all(-1)
        assert torch.equal(a["visible"], expect & inside & a["joint_valid"])


def test_parameters_of_another_hand_model_are_refused(tmp_path) -> None:
    """A synthetic set names its hand model; reading its parameters with another model
    would give wrong hands silently, so it is an error."""
    from handflow.data import InterHandDataset

    write_fixture(tmp_path)
    p = tmp_path / "annotations/test/InterHand2.6M_test_MANO_NeuralAnnot.json"
    d = json.loads(p.read_text())
    for frames in d.values():
        for hands in frames.values():
            for h in hands.values():
                if h is not None:
                    h["hand_model"] = "mano"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="'mano' parameters but hand_model is 'openhand'"):
        InterHandDataset(tmp_path, "test", 64, hand_model="openhand", visibility="none")
    ds = InterHandDataset(tmp_path, "test", 64, visibility="none")  # MANO without files: no parameters, no error
    assert ds.index.manifest["hand_model"] == "mano" and ds.hand_model is None
    assert not ds.annotation(0)["has_params"] and ds.annotation(0)["y"].abs().sum() == 0


def test_datamodule_passes_mano_path_and_cache_dir(tmp_path) -> None:
    pytest.importorskip("handflow.testing.mano")
    from handflow.data.datamodule import InterHandDataModule
    from handflow.testing.mano import write_fake_mano

    write_fixture(tmp_path / "ih")
    mano = write_fake_mano(tmp_path / "mano")
    dm = InterHandDataModule(tmp_path / "ih", 64, 2, hand_model="mano", mano_path=mano["right"].parent,
                             augment=False, cache_dir=tmp_path / "cache")
    ds = dm.dataset("test")
    assert ds.hand_model.name == "mano" and (tmp_path / "cache" / "test" / "manifest.json").exists()
