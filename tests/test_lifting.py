"""Lifting 2D keypoints (handflow.lifting): crop convention, validation, API, command, shipped model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_train

from handflow.constants import NUM_JOINTS
from handflow.errors import InputError, MissingFileError
from handflow.geometry.camera import project
from handflow.lifting import (
    LIFTING_MODEL,
    crop_geometry,
    lifting_command,
    load_lifting_model,
    predict_from_keypoints,
    read_keypoints_file,
)
from handflow.models.shipped import export_weights, shipped_path

DOCS_EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "lifting_example.json"


@pytest.fixture(scope="module")
def kp_ckpt(tiny_data, tmp_path_factory):
    kw = {"model.backbone": "keypoints", "model.keypoint_width": 32}
    return tiny_train(tiny_data, tmp_path_factory.mktemp("kp") / "run", 2, **kw)


def _full_image_view(tiny_data, i: int = 0):
    """Full-image keypoints, visibility = validity, full K and the dataset item of test image i."""
    from handflow.data import InterHandDataset

    ds = InterHandDataset(tiny_data, "test", 64, hand_model="openhand", load_images=False)
    it = ds[i]
    K = ds._camera(i)[0]
    return project(it["joints_cam"].double(), K, eps=0.0), it["joint_valid"], K, it


def test_crop_geometry_is_the_dataset_crop(tiny_data) -> None:
    uv, valid, K, it = _full_image_view(tiny_data)
    box, Kc, j2d = crop_geometry(uv[None], valid[None], K[None], 64)
    torch.testing.assert_close(Kc[0].float(), it["K"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(j2d[0][valid].float(), it["joints_2d"][valid], rtol=1e-5, atol=1e-3)


def test_predict_from_keypoints_api(tiny_data, kp_ckpt) -> None:
    uv, valid, K, it = _full_image_view(tiny_data)
    conf = valid.double() * 0.9
    a = predict_from_keypoints(kp_ckpt, uv[None], conf[None], K=K, samples=4, seed=3)
    b = predict_from_keypoints(kp_ckpt, uv, conf, focal=[K[0, 0], K[1, 1]], princpt=[K[0, 2], K[1, 2]], samples=4, seed=3)
    assert len(a) == 1 and a[0].sample_joints.shape == (4, NUM_JOINTS, 3) and a[0].z0_params.shape == (218,)
    assert torch.isfinite(a[0].z0_joints).all() and a[0].crop.shape == (3, 64, 64)
    torch.testing.assert_close(a[0].sample_joints, b[0].sample_joints)  # K and focal + princpt agree; seeded
    # the z = 0 estimate is the model on the same (noise-free) evidence the dataset gives
    from handflow.models import decode_joints
    from handflow.models.keypoint_encoder import build_evidence

    module = load_lifting_model(kp_ckpt)
    vis = valid
    ev = build_evidence(it["joints_2d"][None], vis[None], torch.ones_like(vis)[None], it["K"][None], 64)
    z0 = decode_joints(module.model.predict(ev, 0)["z0"], it["K"][None], 64, module.hand_model)[0]
    torch.testing.assert_close(a[0].z0_joints, z0, rtol=1e-4, atol=1e-2)


def test_bad_inputs_are_refused_in_one_line(tiny_data, kp_ckpt, tmp_path) -> None:
    uv, valid, K, _ = _full_image_view(tiny_data)
    conf = valid.double()
    cases = [
        (dict(keypoints=uv[:21][None], visibility=conf[:21][None], K=K), "42"),
        (dict(keypoints=torch.where(torch.arange(42)[:, None] == 3, torch.nan, uv)[None], visibility=conf[None], K=K), "NaN"),
        (dict(keypoints=uv[None], visibility=conf[None]), "no camera"),
        (dict(keypoints=uv[None], visibility=(conf * 2)[None], K=K), r"\[0, 1\]"),
        (dict(keypoints=uv[None], visibility=torch.zeros(1, 42), K=K), "no joint"),
    ]
    for kw, msg in cases:
        with pytest.raises(InputError, match=msg) as e:
            predict_from_keypoints(kp_ckpt, samples=2, **kw)
        assert "\n" not in str(e.value)
    doc = {"hand_order": "openpose", "images": [{"name": "a", "keypoints": [[0, 0, 1]] * 42, "focal": 500, "princpt": [0, 0]}]}
    (tmp_path / "k.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="unknown hand_order"):
        read_keypoints_file(tmp_path / "k.json")
    with pytest.raises(MissingFileError):
        read_keypoints_file(tmp_path / "none.json")
    image_model = tiny_train(tiny_data, tmp_path / "img", 1)
    with pytest.raises(InputError, match="image model"):
        load_lifting_model(image_model)


def test_lifting_command_writes_the_image_outputs(tiny_data, kp_ckpt, tmp_path) -> None:
    uv, valid, K, _ = _full_image_view(tiny_data)
    rows = [[float(u), float(v), float(c)] for (u, v), c in zip(uv.tolist(), valid.double().tolist())]
    doc = {"K": K.tolist(), "images": [{"name": "first", "keypoints": rows},
                                        {"name": "second", "keypoints": rows, "focal": [float(K[0, 0])] * 2,
                                         "princpt": [float(K[0, 2]), float(K[1, 2])]}]}
    (tmp_path / "k.json").write_text(json.dumps(doc))
    lines = lifting_command(tmp_path / "k.json", kp_ckpt, tmp_path / "out", samples=3, seed=0, html=False)
    assert len(lines) == 2 and lines[0].startswith("first") and "spread" in lines[0]
    z = np.load(tmp_path / "out" / "first.npz")
    assert z["sample_joints"].shape == (3, NUM_JOINTS, 3) and (tmp_path / "out" / "second.png").is_file()


def test_docs_example_parses() -> None:
    inputs = read_keypoints_file(DOCS_EXAMPLE)
    assert inputs and all(i.keypoints.shape == (NUM_JOINTS, 2) for i in inputs)


def test_exported_weights_load_safely_and_predict_the_same(tiny_data, kp_ckpt, tmp_path) -> None:
    from handflow.safeio import load_torch_file

    out = export_weights(kp_ckpt, tmp_path / "w.pt", note={"test": 1})
    torch.load(out, weights_only=True)  # plain data and tensors only
    assert load_torch_file(out)["handflow"]["note"] == {"test": 1}
    uv, valid, K, _ = _full_image_view(tiny_data)
    a = predict_from_keypoints(kp_ckpt, uv, valid, K=K, samples=2)
    b = predict_from_keypoints(out, uv, valid, K=K, samples=2)
    assert (a[0].z0_joints - b[0].z0_joints).abs().max() < 5.0  # float16 weights: same model up to rounding


def test_shipped_model(tiny_data) -> None:
    path = shipped_path(LIFTING_MODEL)
    assert path.stat().st_size < 5_000_000
    inputs = read_keypoints_file(DOCS_EXAMPLE)
    p = predict_from_keypoints(None, inputs[0].keypoints, inputs[0].confidence, K=inputs[0].K, samples=5)[0]
    assert torch.isfinite(p.sample_joints).all() and 100 < float(p.z0_joints[20, 2]) < 10_000  # wrist in front of the camera


def test_cli_predict_keypoints_with_the_shipped_model(tmp_path) -> None:
    """``handflow predict --keypoints FILE`` lifts the documented example with the shipped model;
    image options are refused with it, and an image run refuses a lifting checkpoint in one line."""
    from pathlib import Path

    from typer.testing import CliRunner

    from handflow.cli import app

    root = Path(__file__).resolve().parents[1]
    example, shipped = root / "docs" / "lifting_example.json", root / "src" / "handflow" / "assets" / "lifting_flow.pt"
    r = CliRunner().invoke(app, ["predict", "--keypoints", str(example), "--out", str(tmp_path / "lift"), "--samples", "4",
                                 "--no-html"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "lift").glob("*.npz"))) == len([ln for ln in r.output.splitlines() if "wrist depth" in ln]) > 0
    bad = CliRunner().invoke(app, ["predict", "--keypoints", str(example), "--focal", "500", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "drop --focal" in " ".join(bad.output.split())
    img = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (64, 48), (120, 90, 60)).save(img)
    wrong = CliRunner().invoke(app, ["predict", "--checkpoint", str(shipped), "--images", str(img), "--out", str(tmp_path / "y")])
    assert wrong.exit_code == 1 and "--keypoints FILE" in wrong.output
