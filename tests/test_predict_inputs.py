"""``handflow predict`` and ``handflow.predict`` (issue #15): nothing lost (distinct output names,
a manifest, unreadable files skipped, no NaN written), inputs refused before the model loads,
image decoding (16-bit, EXIF orientation), 0 samples for every model kind, full intrinsics and
per-image boxes / cameras."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_train
from PIL import Image
from typer.testing import CliRunner

import handflow
import handflow.training
from handflow.cli import app
from handflow.errors import CorruptFileError, HandflowError, InputError, ModelOutputError
from handflow.geometry.camera import crop_intrinsics, intrinsics
from handflow.inference import MANIFEST, Camera, load_image, output_names, read_per_image

SIDE = 64  # the tiny model's crop side and the test images' side


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def ckpt(tiny_data, tmp_path_factory) -> Path:
    """One tiny flow checkpoint (one training step) shared by the module."""
    return tiny_train(tiny_data, tmp_path_factory.mktemp("predict_run"), steps=1)


@pytest.fixture(scope="module")
def module(ckpt):
    return handflow.training.load_checkpoint(ckpt)[0]


def _image(path: Path, W: int = SIDE, H: int = SIDE, seed: int = 0) -> Path:
    """A random RGB image file of W × H pixels."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
    return path


def _run(*args: str) -> object:
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def _text(r) -> str:
    """Everything a CLI run said, including an error that the top-level handler did not print."""
    return r.output + ("" if r.exception is None or isinstance(r.exception, SystemExit) else str(r.exception))


def _manifest(out: Path) -> list[dict[str, str]]:
    with (out / MANIFEST).open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def no_model_load(monkeypatch) -> list:
    """Fails the test if the CLI loads a checkpoint; returns the list of attempted loads."""
    calls: list = []

    def refuse(*a, **k):
        calls.append(a)
        raise AssertionError("no model may be loaded")

    import handflow.predictor

    # the CLI loads through handflow.predictor.load_model (no Lightning); the training loader is guarded too
    monkeypatch.setattr(handflow.predictor, "load_model", refuse)
    monkeypatch.setattr(handflow.training, "load_checkpoint", refuse)
    return calls


def _cli(ckpt: Path, out: Path, *images: Path, extra: tuple = ()) -> object:
    return _run("--checkpoint", ckpt, "--out", out, *[a for p in images for a in ("--images", p)], "--samples", "2",
                "--no-html", *extra)


# ----------------------------------------------------------------------------- nothing lost
def test_same_stem_inputs_get_distinct_names_and_a_manifest(ckpt, tmp_path) -> None:
    a, b = _image(tmp_path / "a" / "photo.jpg", seed=1), _image(tmp_path / "b" / "photo.jpg", seed=2)
    png = _image(tmp_path / "a" / "photo.png", seed=3)
    out = tmp_path / "out"
    r = _cli(ckpt, out, tmp_path / "a", b)
    assert r.exit_code == 0, _text(r)
    rows = _manifest(out)
    assert [row["input"] for row in rows] == [str(a), str(png), str(b)]
    names = [row["name"] for row in rows]
    assert len(set(names)) == 3 and all(row["status"] == "ok" for row in rows)
    for n in names:
        assert (out / f"{n}.npz").is_file() and (out / f"{n}.png").is_file()
    assert sorted(names) == ["a_photo_jpg", "a_photo_png", "b_photo"]


def test_output_names() -> None:
    p = Path
    assert output_names([p("x/a.jpg"), p("x/b.jpg")]) == ["a", "b"]  # unique stems are kept
    assert output_names([p("a/photo.jpg"), p("b/photo.jpg")]) == ["a_photo", "b_photo"]
    assert output_names([p("photo.jpg"), p("photo.png")]) == ["photo_jpg", "photo_png"]
    case = output_names([p("a/Photo.jpg"), p("a/photo.jpg")])
    assert len({n.casefold() for n in case}) == 2  # distinct on case-insensitive disks too
    taken = output_names([p("a/photo.jpg"), p("b/photo.jpg"), p("c/a_photo.jpg")])
    assert len({n.casefold() for n in taken}) == 3 and taken[:2] == ["a_photo", "b_photo"]
    assert output_names([None, None]) == ["image0000", "image0001"]


def test_unreadable_file_is_skipped_and_the_rest_written(ckpt, tmp_path) -> None:
    good = _image(tmp_path / "in" / "good.jpg")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "in" / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    r = _cli(ckpt, out, tmp_path / "in", tmp_path / "missing.jpg")
    assert r.exit_code == 1, _text(r)
    assert (out / "good.npz").is_file() and (out / "good.png").is_file()
    text = _text(r)
    for name in ("broken.jpg", "empty.png", "missing.jpg"):
        line = next(ln for ln in text.splitlines() if name in ln)
        assert line.startswith("skipped") and ": " in line
    rows = {Path(row["input"]).name: row for row in _manifest(out)}
    assert rows[good.name]["status"] == "ok"
    assert {rows[n]["status"] for n in ("broken.jpg", "empty.png", "missing.jpg")} == {"skipped"}
    assert "cannot read image" in rows["broken.jpg"]["reason"] and "no such file" in rows["missing.jpg"]["reason"]


def test_non_finite_model_output_writes_nothing(ckpt, tmp_path) -> None:
    """A diverged checkpoint (NaN statistics): every image is an error, no file is written."""
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    ck["state_dict"]["model.normalizer.mean"][:] = float("nan")
    bad = tmp_path / "diverged.ckpt"
    torch.save(ck, bad)
    img = _image(tmp_path / "in" / "x.jpg")
    out = tmp_path / "out"
    r = _cli(bad, out, img)
    assert r.exit_code == 1 and "non-finite" in _text(r)
    assert not list(out.glob("*.npz")) and not list(out.glob("*.png"))
    assert _manifest(out)[0]["status"] == "skipped"
    with pytest.raises(ModelOutputError, match="non-finite"):
        handflow.predict(bad, [img], samples=2)


# ----------------------------------------------------------------------------- refused before the model loads
@pytest.mark.parametrize("focal", ["nan", "inf", "-inf", "0", "-5"])
def test_bad_focal_is_refused_before_the_model_loads(focal, ckpt, tmp_path, no_model_load) -> None:
    out = tmp_path / "out"
    r = _cli(ckpt, out, _image(tmp_path / "x.jpg"), extra=("--focal", focal))
    assert r.exit_code != 0 and "--focal must be a positive finite number of pixels" in _text(r)
    assert not no_model_load and not list(out.glob("*.npz"))


@pytest.mark.parametrize("bbox, message", [("nan,0,10,10", "--bbox must be"), ("0,0,inf,10", "--bbox must be"),
                                           ("0,0,0,10", "--bbox must be"), ("0,0,10,-3", "--bbox must be"),
                                           ("1,2,3", "--bbox must be x,y,w,h"), ("500,500,20,20", "lies outside")])
def test_bad_box_is_refused_before_the_model_loads(bbox, message, ckpt, tmp_path, no_model_load) -> None:
    out = tmp_path / "out"
    r = _cli(ckpt, out, _image(tmp_path / "x.jpg"), extra=("--bbox", bbox))
    assert r.exit_code != 0 and message in _text(r)
    assert not no_model_load and not list(out.glob("*.npz"))


@pytest.mark.parametrize("extra, message", [(("--samples", "-1"), "--samples must be a whole number >= 0"),
                                            (("--meshes", "stl"), "--meshes must be one of obj, ply, glb"),
                                            (("--principal", "nan,3"), "--principal must be"),
                                            (("--principal", "1000,10"), "lies outside")])
def test_bad_options_are_refused_before_anything_is_written(extra, message, ckpt, tmp_path, no_model_load) -> None:
    out = tmp_path / "out"
    r = _cli(ckpt, out, _image(tmp_path / "x.jpg"), extra=extra)
    assert r.exit_code != 0 and message in _text(r)
    assert not no_model_load and not list(out.glob("*.npz")) and not list(out.glob("*.png"))


@pytest.mark.parametrize("size, message", [((8, 40), "at least 16 px a side"), ((200, 20), "at most 8:1")])
def test_tiny_or_elongated_images_are_refused(size, message, module, ckpt, tmp_path, no_model_load) -> None:
    img = _image(tmp_path / "odd.png", *size)
    r = _cli(ckpt, tmp_path / "out", img)
    assert r.exit_code == 1 and message in _text(r) and not no_model_load
    with pytest.raises(InputError, match=message):
        handflow.predict(module, [img], samples=0)
    with pytest.raises(InputError, match=message):
        handflow.predict(module, torch.rand(3, size[1], size[0]), samples=0)


@pytest.mark.parametrize("bad, message", [(torch.rand(3, 32, 32) * 255, "outside \\[0, 1\\]"),
                                          (torch.rand(3, 32, 32) - 0.5, "outside \\[0, 1\\]"),
                                          ((torch.rand(3, 32, 32) * 255).to(torch.uint8), "floating-point"),
                                          (torch.full((3, 32, 32), float("nan")), "NaN"),
                                          (torch.rand(32, 32), "\\(3, H, W\\)")])
def test_api_refuses_bad_tensors(bad, message, module) -> None:
    with pytest.raises(InputError, match=message) as e:
        handflow.predict(module, bad, samples=0)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"focal": float("nan")}, "focal must be a positive finite"), ({"focal": 0}, "focal must be a positive finite"),
    ({"bbox": (0, 0, float("inf"), 3)}, "bbox must be"), ({"bbox": (100, 100, 5, 5)}, "lies outside"),
    ({"samples": -3}, "samples must be a whole number >= 0"),
    ({"K": [[50, 1, 32], [0, 50, 32], [0, 0, 1]]}, "no skew"), ({"K": [[50, 0, 32], [0, 50, 32], [0, 0, 2]]}, "0,0,1"),
    ({"K": [[50, 0, 32], [3, 50, 32], [0, 0, 1]]}, "upper-triangular"),
    ({"K": [[-50, 0, 32], [0, 50, 32], [0, 0, 1]]}, "positive focal"),
    ({"K": [[50, 0, 32], [0, float("nan"), 32], [0, 0, 1]]}, "finite"), ({"K": [[50, 0], [0, 50]]}, "3x3"),
    ({"K": [[50, 0, 32], [0, 50, 32], [0, 0, 1]], "focal": 50}, "drop"),
    ({"boxes": {"x.png": (0, 0, -1, 4)}}, "boxes.*x.png.* must be x, y, w, h"), ({"cameras": {"x.png": {"focal": -1}}}, "focal"),
])
def test_api_refuses_bad_arguments_before_the_model_loads(kwargs, message, tmp_path) -> None:
    img = _image(tmp_path / "x.png")
    with pytest.raises(InputError, match=message) as e:
        handflow.predict(tmp_path / "no_such.ckpt", [img], **kwargs)  # a checkpoint that would fail to load
    assert "\n" not in str(e.value)


def test_api_unreadable_image_is_a_corrupt_file_error(module, tmp_path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(CorruptFileError, match="bad.jpg"):
        handflow.predict(module, [bad], samples=0)


# ----------------------------------------------------------------------------- decoding
def test_sixteen_bit_png_is_scaled_by_its_bit_depth(module, tmp_path) -> None:
    level = 0.2
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((SIDE, SIDE), round(level * 65535), dtype=np.uint16)).save(path)
    assert Image.open(path).mode in ("I;16", "I")  # Pillow < 10.3 (the lower bound is 10.0) opens it as mode I
    torch.testing.assert_close(load_image(path), torch.full((3, SIDE, SIDE), level), atol=1e-4, rtol=0)
    crop = handflow.predict(module, [path], samples=0)[0].crop
    assert abs(float(crop.mean()) - level) < 0.01  # was ~1.0 (clipped at 255)


def test_exif_orientation_is_applied(module, tmp_path) -> None:
    """An image stored landscape with EXIF orientation 6 (rotate 90° clockwise) is predicted as
    the portrait image that viewers show."""
    rng = np.random.default_rng(4)
    stored = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))  # 48 wide, 32 high
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged = tmp_path / "tagged.png"
    stored.save(tagged, exif=exif)
    upright = tmp_path / "upright.png"
    stored.transpose(Image.Transpose.ROTATE_270).save(upright)  # what viewers show: 32 wide, 48 high
    assert load_image(tagged).shape == (3, 48, 32)
    torch.testing.assert_close(load_image(tagged), load_image(upright))
    a, b = handflow.predict(module, [tagged, upright], samples=0)
    torch.testing.assert_close(a.crop, b.crop)
    torch.testing.assert_close(a.z0_joints, b.z0_joints)


# ----------------------------------------------------------------------------- samples = 0
@pytest.mark.parametrize("kind", ["flow", "deterministic", "gaussian", "mcdropout", "cvae"])
def test_zero_samples_gives_the_estimate_only_for_every_kind(kind) -> None:
    from handflow.config import load_config
    from handflow.constants import PARAM_DIM
    from handflow.models import build_model

    m = build_model(load_config("cpu", [f"model.kind={kind}", f"data.image_size={SIDE}", "model.flow_hidden=32"])).eval()
    m.normalizer.fit(torch.randn(64, PARAM_DIM, generator=torch.Generator().manual_seed(0)))
    images = torch.rand(2, 3, SIDE, SIDE)
    out = m.predict(images, 0, torch.Generator().manual_seed(0))
    assert out["samples"].shape == (2, 0, PARAM_DIM) and torch.isfinite(out["z0"]).all()
    torch.testing.assert_close(out["z0"], m.predict(images, 3, torch.Generator().manual_seed(0))["z0"])


def test_zero_samples_api_and_cli(module, ckpt, tmp_path) -> None:
    img = _image(tmp_path / "x.jpg")
    p = handflow.predict(module, [img], samples=0)[0]
    assert p.sample_joints.shape == (0, 42, 3) and p.sample_params.shape[0] == 0 and torch.isfinite(p.z0_joints).all()
    out = tmp_path / "out"
    r = _run("--checkpoint", ckpt, "--images", img, "--out", out, "--samples", "0")
    assert r.exit_code == 0, _text(r)
    assert (out / "x.npz").is_file() and (out / "x.png").is_file() and not (out / "x.html").exists()
    assert np.load(out / "x.npz")["sample_joints"].shape == (0, 42, 3)


# ----------------------------------------------------------------------------- cameras and boxes
def _expected_K_crop(K: torch.Tensor, box: tuple[float, float, float, float]) -> torch.Tensor:
    x, y, w, h = box
    s = max(w, h)
    return crop_intrinsics(K, torch.tensor([x + w / 2 - s / 2, y + h / 2 - s / 2, s, s], dtype=torch.float64), SIDE).float()


def test_bbox_and_focal_keep_working(module, tmp_path) -> None:
    img = _image(tmp_path / "x.jpg", 80, 60)
    p = handflow.predict(module, [img], samples=1, bbox=(10, 5, 40, 30), focal=90.0)[0]
    K = intrinsics(90.0, 90.0, 40.0, 30.0).double()
    assert p.focal == 90.0 and not p.focal_is_default
    torch.testing.assert_close(p.K, K)
    torch.testing.assert_close(p.K_crop, _expected_K_crop(K, (10, 5, 40, 30)))
    d = handflow.predict(module, [img], samples=1)[0]
    assert d.focal == 80.0 and d.focal_is_default


def test_principal_point_and_K(module, tmp_path) -> None:
    img = _image(tmp_path / "x.jpg", 80, 60)
    K = [[70.0, 0, 35.0], [0, 75.0, 28.0], [0, 0, 1]]
    a = handflow.predict(module, [img], samples=0, K=K)[0]
    torch.testing.assert_close(a.K, torch.tensor(K, dtype=torch.float64))
    b = handflow.predict(module, [img], samples=0, focal=(70.0, 75.0), principal=(35.0, 28.0))[0]
    torch.testing.assert_close(a.K_crop, b.K_crop)
    torch.testing.assert_close(a.z0_joints, b.z0_joints)
    c = handflow.predict(module, [img], samples=0, K={"focal": [70.0, 75.0], "princpt": [35.0, 28.0]})[0]
    torch.testing.assert_close(a.K, c.K)


def test_cli_camera_file_and_principal(ckpt, module, tmp_path) -> None:
    img = _image(tmp_path / "x.jpg", 80, 60)
    K = [[70.0, 0, 35.0], [0, 75.0, 28.0], [0, 0, 1]]
    expect = handflow.predict(module, [img], samples=0, K=K)[0]
    for i, cam in enumerate(({"K": K}, {"focal": [70.0, 75.0], "princpt": [35.0, 28.0], "campos": [0, 0, 0]})):
        (tmp_path / f"cam{i}.json").write_text(json.dumps(cam))
        out = tmp_path / f"out{i}"
        r = _run("--checkpoint", ckpt, "--images", img, "--out", out, "--samples", "0", "--camera", tmp_path / f"cam{i}.json")
        assert r.exit_code == 0, _text(r)
        np.testing.assert_allclose(np.load(out / "x.npz")["K"], K)
        np.testing.assert_allclose(np.load(out / "x.npz")["z0_joints"], expect.z0_joints.numpy(), rtol=1e-5, atol=1e-4)
    out = tmp_path / "out_p"
    r = _run("--checkpoint", ckpt, "--images", img, "--out", out, "--samples", "0", "--focal", "70", "--principal", "35,28")
    assert r.exit_code == 0, _text(r)
    np.testing.assert_allclose(np.load(out / "x.npz")["K"], [[70, 0, 35], [0, 70, 28], [0, 0, 1]])
    (tmp_path / "skew.json").write_text(json.dumps({"K": [[70, 2, 35], [0, 75, 28], [0, 0, 1]]}))
    r = _run("--checkpoint", ckpt, "--images", img, "--out", tmp_path / "o", "--camera", tmp_path / "skew.json")
    assert r.exit_code != 0 and "skew" in _text(r)
    r = _run("--checkpoint", ckpt, "--images", img, "--out", tmp_path / "o", "--camera", tmp_path / "cam0.json", "--focal", "5")
    assert r.exit_code != 0 and "--camera gives the whole camera" in _text(r)


def _per_image_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    return (_image(tmp_path / "in" / "a" / "one.jpg", 80, 60, 1), _image(tmp_path / "in" / "b" / "one.jpg", 80, 60, 2),
            _image(tmp_path / "in" / "two.jpg", 80, 60, 3))


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_cli_per_image_boxes_and_cameras(fmt, ckpt, module, tmp_path) -> None:
    a, b, two = _per_image_inputs(tmp_path)
    if fmt == "json":
        spec = tmp_path / "per.json"
        spec.write_text(json.dumps({"a/one.jpg": {"bbox": [10, 5, 40, 30], "K": [[70, 0, 35], [0, 75, 28], [0, 0, 1]]},
                                    str(b): {"focal": [90, 90]}, "nowhere.jpg": {"bbox": [0, 0, 5, 5]}}))
    else:
        spec = tmp_path / "per.csv"
        spec.write_text("image,x,y,w,h,fx,fy,cx,cy\na/one.jpg,10,5,40,30,70,75,35,28\n"
                        f"{b},,,,,90,,,\nnowhere.jpg,0,0,5,5,,,,\n")
    out = tmp_path / "out"
    r = _run("--checkpoint", ckpt, "--images", tmp_path / "in" / "a", "--images", b, "--images", two, "--out", out,
             "--samples", "0", "--no-html", "--per-image", spec, "--bbox", "0,0,60,60")
    assert r.exit_code == 0, _text(r)
    assert "nowhere.jpg" in _text(r) and "name no input image" in _text(r)  # reported, not fatal
    rows = {row["input"]: row["name"] for row in _manifest(out)}
    K_a = torch.tensor([[70.0, 0, 35], [0, 75, 28], [0, 0, 1]], dtype=torch.float64)
    npz = np.load(out / f"{rows[str(a)]}.npz")
    np.testing.assert_allclose(npz["K"], K_a.numpy())
    np.testing.assert_allclose(npz["K_crop"], _expected_K_crop(K_a, (10, 5, 40, 30)).numpy(), rtol=1e-6)
    K_b = intrinsics(90.0, 90.0, 40.0, 30.0).double()  # own focal, default principal point, the global box
    np.testing.assert_allclose(np.load(out / f"{rows[str(b)]}.npz")["K_crop"], _expected_K_crop(K_b, (0, 0, 60, 60)).numpy(),
                               rtol=1e-6)
    K_two = intrinsics(80.0, 80.0, 40.0, 30.0).double()  # no entry: the global options
    np.testing.assert_allclose(np.load(out / "two.npz")["K_crop"], _expected_K_crop(K_two, (0, 0, 60, 60)).numpy(), rtol=1e-6)
    # the same through the API, from the same file
    per = read_per_image(spec)
    with pytest.warns(UserWarning, match="nowhere.jpg"):
        preds = handflow.predict(module, [tmp_path / "in" / "a", b, two], samples=0, bbox=(0, 0, 60, 60),
                                 boxes=per.boxes, cameras=per.cameras)
    np.testing.assert_allclose(preds[0].K_crop.numpy(), npz["K_crop"], rtol=1e-6)


@pytest.mark.parametrize("content, suffix, message", [
    ({"one.jpg": {"bbox": [0, 0, 5]}}, "json", "bbox must be"),
    ({"one.jpg": {"box": [0, 0, 5, 5]}}, "json", "unknown keys"),
    ({"one.jpg": {"K": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "focal": 3}}, "json", "both"),
    ({"one.jpg": {"focal": "wide"}}, "json", "focal must be"),
    ([1, 2], "json", "JSON object"),
    ("image,x,y,w,h\none.jpg,0,0,5,\n", "csv", "only some of x, y, w, h"),
    ("image,x,y,w,h\none.jpg,0,0,5,nan\n", "csv", "must be"),
    ("name,x\none.jpg,1\n", "csv", "header"),
    ("image,fx\none.jpg,1\none.jpg,2\n", "csv", "more than once"),
    ('{"one.jpg": {"bbox": [0, 0, 5, 5]}, "one.jpg": {"bbox": [0, 0, 6, 6]}}', "json", "more than once"),
    ("{not json", "json", "not readable JSON"),
])
def test_bad_per_image_files_are_refused(content, suffix, message, ckpt, tmp_path, no_model_load) -> None:
    spec = tmp_path / f"per.{suffix}"
    spec.write_text(content if isinstance(content, str) else json.dumps(content))
    img = _image(tmp_path / "one.jpg")
    r = _run("--checkpoint", ckpt, "--images", img, "--out", tmp_path / "out", "--per-image", spec)
    assert r.exit_code != 0 and message in _text(r) and not no_model_load
    with pytest.raises(HandflowError, match=message) as e:
        read_per_image(spec)
    assert "\n" not in str(e.value)


def test_ambiguous_per_image_key_is_refused(module, tmp_path) -> None:
    a, b, _ = _per_image_inputs(tmp_path)
    with pytest.raises(InputError, match="'one.jpg' names 2 images"):
        handflow.predict(module, [a, b], samples=0, boxes={"one.jpg": (0, 0, 10, 10)})
    p = handflow.predict(module, [a, b], samples=0, boxes={"one.jpg": (0, 0, 10, 10), "b/one.jpg": (5, 5, 20, 20)},
                         cameras=[Camera(focal=(50.0, 50.0)), None])  # the longer key wins for b; a sequence per image
    torch.testing.assert_close(p[1].box, torch.tensor([5.0, 5, 20, 20], dtype=torch.float64))
    torch.testing.assert_close(p[0].box, torch.tensor([0.0, 0, 10, 10], dtype=torch.float64))
    assert p[0].focal == 50.0 and p[1].focal_is_default


def test_the_no_model_load_guard_sees_the_cli_load(ckpt, tmp_path, no_model_load) -> None:
    """The guard above is live: a valid command does try to load the model through it."""
    r = _cli(ckpt, tmp_path / "out", _image(tmp_path / "x.jpg"))
    assert r.exit_code != 0 and len(no_model_load) == 1


def test_a_model_that_does_not_load_leaves_no_pending_rows(tmp_path) -> None:
    """The manifest never promises results that never come."""
    bad = tmp_path / "empty.ckpt"
    bad.write_bytes(b"")
    out = tmp_path / "out"
    r = _cli(bad, out, _image(tmp_path / "x.jpg"))
    assert r.exit_code == 1 and "cannot read checkpoint" in _text(r)
    rows = (out / "index.csv").read_text().splitlines()[1:]
    assert len(rows) == 1 and ",skipped,not predicted: the model did not load (CorruptFileError)" in rows[0]
