"""``handflow.load_model`` -> :class:`~handflow.predictor.Predictor` (issue #18 s.2): a plain
``nn.Module`` loaded without Lightning, batched (one backbone pass per batch) with per-image
boxes and cameras, typed batched results; ``handflow.predict`` and ``handflow predict`` go
through it in batches; the HTML views share one plotly.js per folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_train
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import handflow
import handflow.predictor
from handflow.cli import app
from handflow.constants import PARAM_DIM
from handflow.errors import InputError
from handflow.geometry.camera import crop_intrinsics, intrinsics
from handflow.inference import Camera, iter_predictions, plan_images
from handflow.predictor import BatchPrediction, Predictor

SIDE = 64


@pytest.fixture(scope="module")
def ckpt(tiny_data, tmp_path_factory) -> Path:
    return tiny_train(tiny_data, tmp_path_factory.mktemp("predictor_run"), steps=1)


@pytest.fixture(scope="module")
def predictor(ckpt) -> Predictor:
    return handflow.load_model(ckpt)


def _image(path: Path, W: int = SIDE, H: int = SIDE, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
    return path


class _Counter:
    """Counts forward calls of a module and the batch size of each."""

    def __init__(self, module: nn.Module) -> None:
        self.sizes: list[int] = []
        self.handle = module.register_forward_hook(lambda m, args, out: self.sizes.append(args[0].shape[0]))

    def close(self) -> None:
        self.handle.remove()


# ----------------------------------------------------------------------------- loading
def test_load_model_is_a_plain_module_with_the_trained_weights(ckpt, predictor) -> None:
    import handflow.training

    assert isinstance(predictor, nn.Module) and not predictor.training
    assert "lightning" not in " ".join(c.__module__ for c in type(predictor).__mro__)
    module, _ = handflow.training.load_checkpoint(ckpt)
    for (k, a), (k2, b) in zip(predictor.model.state_dict().items(), module.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert predictor.image_size == SIDE and predictor.device == torch.device("cpu")


def test_checkpoint_mismatch_moved_and_reexported() -> None:
    from handflow.models.checkpoint import CheckpointMismatch
    from handflow.training import CheckpointMismatch as FromTraining
    from handflow.training.runner import CheckpointMismatch as FromTrain

    assert CheckpointMismatch is FromTraining is FromTrain


def test_save_round_trips_through_both_loaders(predictor, tmp_path) -> None:
    import handflow.training

    path = predictor.save(tmp_path / "weights.ckpt")
    again = handflow.load_model(path)
    module, cfg = handflow.training.load_checkpoint(path)  # the training loader reads it too
    x = torch.rand(2, 3, SIDE, SIDE)
    torch.testing.assert_close(again(x, samples=0).z0_params, predictor(x, samples=0).z0_params)
    torch.testing.assert_close(module.model.z0(x), predictor.model.z0(x))


def test_foreign_file_is_refused_in_one_line(tmp_path) -> None:
    from handflow.models.checkpoint import CheckpointMismatch

    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointMismatch, match="not a handflow checkpoint") as e:
        handflow.load_model(tmp_path / "foreign.ckpt")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- batched results
def test_batch_equals_one_image_at_a_time(predictor, tmp_path) -> None:
    """Three images of different sizes, each with its own box and camera, in one batch: the
    backbone runs once and each z = 0 estimate equals that image's alone."""
    paths = [_image(tmp_path / "a.png", 80, 60, 1), _image(tmp_path / "b.png", 64, 64, 2), _image(tmp_path / "c.png", 50, 90, 3)]
    boxes = [(10, 5, 40, 30), None, (0, 20, 50, 50)]
    cameras = [{"K": [[70.0, 0, 35], [0, 75, 28], [0, 0, 1]]}, None, Camera(focal=(99.0, 99.0))]
    count = _Counter(predictor.model.backbone)
    try:
        out = predictor(paths, boxes=boxes, cameras=cameras, samples=4, meshes=True)
    finally:
        count.close()
    assert count.sizes == [3]
    assert isinstance(out, BatchPrediction) and len(out) == 3
    assert out.z0_params.shape == (3, PARAM_DIM) and out.sample_params.shape == (3, 4, PARAM_DIM)
    assert out.z0_joints.shape == (3, 42, 3) and out.sample_joints.shape == (3, 4, 42, 3)
    assert out.K_crop.shape == (3, 3, 3) and out.crops.shape == (3, 3, SIDE, SIDE)
    V = predictor.hand_model(torch.eye(3).expand(1, 16, 3, 3), torch.zeros(1, 10), "right").vertices.shape[1]
    assert {k: tuple(v.shape) for k, v in out.meshes.items()} == {"right": (3, 5, V, 3), "left": (3, 5, V, 3)}
    K_a = torch.tensor([[70.0, 0, 35], [0, 75, 28], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(out.K[0], K_a)
    square = torch.tensor([10.0, 0, 40, 40], dtype=torch.float64)  # (10, 5, 40, 30) widened about its centre
    torch.testing.assert_close(out.K_crop[0], crop_intrinsics(K_a, square, SIDE).float())
    torch.testing.assert_close(out.K[2], intrinsics(99.0, 99.0, 25.0, 45.0).double())
    assert out.focal_is_default.tolist() == [False, True, False]
    for i, (p, b, c) in enumerate(zip(paths, boxes, cameras)):
        alone = predictor([p], boxes=[b], cameras=[c], samples=0)
        torch.testing.assert_close(alone.z0_joints[0], out.z0_joints[i], atol=1e-3, rtol=1e-4)
        one = out[i]
        assert one.path == p and torch.equal(one.sample_joints, out.sample_joints[i]) and one.meshes["left"].shape == (5, V, 3)


def test_tensor_batches_and_lists(predictor) -> None:
    x = torch.rand(2, 3, 70, 90)
    a = predictor(x, samples=2, seed=5)
    b = predictor([x[0], x[1]], samples=2, seed=5)
    torch.testing.assert_close(a.sample_params, b.sample_params)  # same seed, same batch: same samples
    assert not torch.equal(predictor(x, samples=2, seed=6).sample_params, a.sample_params)
    assert a.paths == [None, None]
    preds = handflow.predict(predictor, x, samples=2, seed=5, batch_size=2)
    torch.testing.assert_close(torch.stack([p.sample_params for p in preds]), a.sample_params)


@pytest.mark.parametrize("bad, message", [(torch.rand(2, 3, 32, 32) * 2, "image tensor 1|image tensor 0"),
                                          (torch.rand(2, 2, 3, 32, 32), "\\(B, 3, H, W\\)")])
def test_bad_batches_are_refused(predictor, bad, message) -> None:
    with pytest.raises(InputError, match=message):
        predictor(bad, samples=0)


def test_batch_size_is_checked(predictor, tmp_path) -> None:
    with pytest.raises(InputError, match="batch_size must be a whole number >= 1"):
        handflow.predict(predictor, torch.rand(3, SIDE, SIDE), batch_size=0)


# ----------------------------------------------------------------------------- predict and the CLI in batches
def test_predict_runs_the_backbone_once_per_batch_and_yields_each_batch_when_done(predictor, tmp_path) -> None:
    paths = [_image(tmp_path / f"{k}.png", seed=k) for k in range(5)]
    count = _Counter(predictor.model.backbone)
    try:
        preds = handflow.predict(predictor, paths, samples=3, batch_size=2)
        assert count.sizes == [2, 2, 1] and len(preds) == 5
        count.sizes.clear()
        jobs, _ = plan_images(paths)
        it = iter_predictions(predictor, jobs, 3, batch_size=2)
        next(it)
        assert count.sizes == [2]  # the first result comes before the second batch runs
        rest = list(it)
        assert count.sizes == [2, 2, 1] and len(rest) == 4
    finally:
        count.close()
    for p, q in zip(preds, handflow.predict(predictor, paths, samples=3, batch_size=5)):
        torch.testing.assert_close(p.z0_joints, q.z0_joints, atol=1e-3, rtol=1e-4)  # z = 0: independent of the batch


def test_cli_predicts_in_batches_without_lightning_loader(ckpt, tmp_path, monkeypatch) -> None:
    import handflow.training

    monkeypatch.setattr(handflow.training, "load_checkpoint", lambda *a, **k: pytest.fail("the CLI must not need Lightning"))
    for k in range(3):
        _image(tmp_path / "in" / f"{k}.jpg", seed=k)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"no image")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["predict", "--checkpoint", str(ckpt), "--images", str(tmp_path / "in"), "--out", str(out),
                                 "--samples", "2", "--batch-size", "2", "--no-html"])
    assert r.exit_code == 1, r.output  # the broken file is skipped and named; the rest written
    assert "skipped" in r.output and "broken.jpg" in r.output
    assert sorted(p.name for p in out.glob("*.npz")) == ["0.npz", "1.npz", "2.npz"]


@pytest.mark.parametrize("extra, message", [(("--batch-size", "0"), "--batch-size must be a whole number >= 1"),
                                            (("--focal", "nan"), "--focal must be a positive finite number")])
def test_cli_refuses_before_the_model_loads(extra, message, ckpt, tmp_path, monkeypatch) -> None:
    calls: list = []
    monkeypatch.setattr(handflow.predictor, "load_model", lambda *a, **k: calls.append(a))
    r = CliRunner().invoke(app, ["predict", "--checkpoint", str(ckpt), "--images", str(_image(tmp_path / "x.jpg")),
                                 "--out", str(tmp_path / "out"), *extra])
    assert r.exit_code != 0 and message in r.output and not calls


# ----------------------------------------------------------------------------- HTML views
def test_html_views_share_one_plotly_library(predictor, tmp_path) -> None:
    from handflow.inference import write_predictions
    from handflow.viz.predictions import PLOTLY_JS

    x = torch.rand(2, 3, SIDE, SIDE)
    preds = handflow.predict(predictor, x, samples=3)
    write_predictions(preds, tmp_path / "out", predictor)
    pages = sorted((tmp_path / "out").glob("*.html"))
    assert len(pages) == 2 and [p.name for p in (tmp_path / "out").glob("*.js")] == [PLOTLY_JS]
    assert (tmp_path / "out" / PLOTLY_JS).stat().st_size > 1_000_000
    for page in pages:
        text = page.read_text()
        assert page.stat().st_size < 200_000 and f'src="{PLOTLY_JS}"' in text
