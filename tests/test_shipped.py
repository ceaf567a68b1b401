"""Shipped models (``handflow.models.shipped``, ``handflow.pretrained``) and fine-tuning from
weights (``model.init_from``): names and files, the weights-only export, a run that starts from
another run's whole network, and the refusals (unknown name, missing file, other architecture)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_cfg, tiny_train

import handflow
from handflow.config import ConfigError
from handflow.errors import InputError, MissingFileError
from handflow.models import shipped
from handflow.models.checkpoint import CheckpointMismatch, load_model
from handflow.models.shipped import HALF_MIN_NUMEL, SHIPPED, ShippedModel, export_weights, resolve_weights, shipped_path
from handflow.safeio import load_torch_file


@pytest.fixture(scope="module")
def image_ckpt(tiny_data, tmp_path_factory):
    return tiny_train(tiny_data, tmp_path_factory.mktemp("img") / "run", 2)


def test_unknown_and_missing_shipped_models_are_refused_in_one_line(monkeypatch) -> None:
    with pytest.raises(InputError, match=r"no shipped model named 'nope': choose one of \['synthetic', 'lifting'\]"):
        shipped_path("nope")
    with pytest.raises(InputError, match="no shipped model named"):
        handflow.pretrained("nope")
    monkeypatch.setitem(SHIPPED, "ghost", ShippedModel("no_such_file.pt", "image", "docs/training.md"))
    with pytest.raises(MissingFileError, match=r"shipped model 'ghost' .* is missing from this install") as e:
        shipped_path("ghost")
    assert "\n" not in str(e.value)


def test_resolve_weights_prefers_an_existing_path(tmp_path, monkeypatch) -> None:
    assert resolve_weights("lifting") == shipped_path("lifting")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lifting").write_bytes(b"")  # a file of that name in the working folder wins over the shipped model
    assert resolve_weights("lifting") == Path("lifting")
    assert resolve_weights(tmp_path / "x.ckpt") == tmp_path / "x.ckpt"  # unknown paths pass through (the reader names them)


def test_export_weights_is_small_safe_and_predicts_the_same(image_ckpt, tmp_path) -> None:
    out = export_weights(image_ckpt, tmp_path / "w.pt", note={"command": "test"})
    raw = torch.load(out, weights_only=True)  # plain data and tensors only
    assert raw["handflow"]["note"] == {"command": "test"} and "optimizer_states" not in raw
    again = torch.load(export_weights(out, tmp_path / "again.pt"), weights_only=True)  # a weights file re-exported
    assert raw["handflow"]["global_step"] == again["handflow"]["global_step"] == 2  # keeps its training step
    big = [k for k, v in raw["state_dict"].items() if k.startswith("model.") and v.numel() >= HALF_MIN_NUMEL]
    assert big and all(raw["state_dict"][k].dtype == torch.float16 for k in big)
    assert out.stat().st_size < 0.6 * image_ckpt.stat().st_size
    with zipfile.ZipFile(out) as z:  # records deflated; torch.load reads them as the stored ones
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    plain = torch.load(export_weights(image_ckpt, tmp_path / "plain.pt", compress=False), weights_only=True)
    assert plain["state_dict"].keys() == raw["state_dict"].keys()
    assert all(torch.equal(plain["state_dict"][k], v) for k, v in raw["state_dict"].items())
    a, _ = load_model(image_ckpt)
    b, _ = load_model(out)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        za, zb = a.predict(x, 0, None)["z0"], b.predict(x, 0, None)["z0"]
    assert (za - zb).abs().max() < 0.05 * za.abs().max()  # float16 weights: the same network up to rounding


def test_a_failed_export_leaves_no_file(image_ckpt, tmp_path, monkeypatch) -> None:
    """Export writes beside its target and renames at the end: a failure while deflating leaves
    neither the target nor a temporary file that a later run could read."""
    def broken(self, *args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", broken)
    with pytest.raises(OSError, match="simulated"):
        export_weights(image_ckpt, tmp_path / "w.pt")
    assert list(tmp_path.iterdir()) == []


def _network(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_torch_file(path)["state_dict"].items() if k.startswith("model.")}


def test_init_from_starts_the_whole_network_and_training_continues(tiny_data, image_ckpt, tmp_path) -> None:
    """A run with ``model.init_from`` (a weights file) begins at that network: backbone, flow,
    normalizer and ActNorm statistics (nothing refitted on the new data); training then moves it."""
    from handflow.training.module import HandFlowModule
    from handflow.training.runner import init_network

    weights = export_weights(image_ckpt, tmp_path / "w.pt")
    cfg = tiny_cfg(tiny_data, tmp_path / "zero", 1, **{"model.init_from": str(weights)})
    module = HandFlowModule(cfg)
    assert init_network(module, cfg) == weights
    src = _network(weights)
    got = {f"model.{k}": v.float() for k, v in module.model.state_dict().items()}
    assert set(src) == set(got)
    for k in src:
        torch.testing.assert_close(got[k], src[k], rtol=0, atol=1e-6, msg=k)
    flags = [k for k in got if k.endswith("initialized")]
    assert flags and all(bool(got[k]) for k in flags)  # ActNorm marked initialised: not refitted on the new data
    moved = _network(tiny_train(tiny_data, tmp_path / "two", 2, **{"model.init_from": str(weights)}))
    assert any(not torch.equal(moved[k], src[k]) for k in src if "backbone" in k)


def test_init_from_refuses_another_architecture_naming_the_key(tiny_data, image_ckpt, tmp_path) -> None:
    from handflow.training import train

    cfg = tiny_cfg(tiny_data, tmp_path / "other", 1, **{"model.init_from": str(image_ckpt), "model.flow_hidden": 32})
    with pytest.raises(CheckpointMismatch, match=r"model\.flow_hidden") as e:
        train(cfg, enable_progress_bar=False)
    assert "\n" not in str(e.value)
    with pytest.raises(MissingFileError):
        train(tiny_cfg(tiny_data, tmp_path / "missing", 1, **{"model.init_from": str(tmp_path / "none.pt")}),
              enable_progress_bar=False)


def test_init_from_and_backbone_checkpoint_together_are_refused(tiny_data, tmp_path) -> None:
    with pytest.raises(ConfigError, match="give one of them"):
        tiny_cfg(tiny_data, tmp_path, 1, **{"model.init_from": "synthetic", "model.backbone_checkpoint": "x.ckpt"})


def test_demo_falls_back_to_scratch_without_the_shipped_model(monkeypatch) -> None:
    from handflow.demo import FULL, FULL_SCRATCH, QUICK, demo_settings

    assert demo_settings(quick=True)[0] is QUICK
    assert demo_settings(from_scratch=True)[0] is FULL_SCRATCH
    monkeypatch.setitem(SHIPPED, "synthetic", ShippedModel("no_such_file.pt", "image", "docs/training.md"))
    s, why = demo_settings()
    assert s is FULL_SCRATCH and "missing from this install" in why
    monkeypatch.setattr(shipped, "shipped_path", lambda name: Path("image_synthetic.pt"))
    assert demo_settings()[0] is FULL and FULL.init_from == "synthetic"


def test_cli_export_and_predict_from_the_weights(image_ckpt, tiny_data, tmp_path) -> None:
    from typer.testing import CliRunner

    from handflow.cli.app import app

    out = tmp_path / "w.pt"
    bad = CliRunner().invoke(app, ["export", "--checkpoint", str(image_ckpt), "--out", str(out), "--note", "oops"])
    assert bad.exit_code == 1 and "is not KEY=VALUE" in bad.output and not out.exists()
    ok = CliRunner().invoke(app, ["export", "--checkpoint", str(image_ckpt), "--out", str(out), "--note", "command=make x"])
    assert ok.exit_code == 0, ok.output
    assert load_torch_file(out)["handflow"]["note"] == {"command": "make x"}
    image = next((tiny_data / "images" / "test").rglob("*.jpg"))
    r = CliRunner().invoke(app, ["predict", "--checkpoint", str(out), "--images", str(image), "--out", str(tmp_path / "p"),
                                 "--samples", "2", "--no-html"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p" / "index.csv").is_file()


def test_the_shipped_image_model_loads_small_and_predicts() -> None:
    path = shipped_path("synthetic")
    assert path.stat().st_size <= 25_000_000  # issue #17: at most 25 MB in git
    raw = torch.load(path, weights_only=True)
    assert "optimizer_states" not in raw and raw["handflow"]["note"]["command"].startswith("handflow synth")
    predictor = handflow.pretrained("synthetic")
    assert predictor.cfg.model.backbone == "resnet18" and predictor.cfg.data.image_size == 128
    out = predictor(torch.rand(2, 3, 96, 128), samples=3)
    assert out.sample_joints.shape == (2, 3, 42, 3) and torch.isfinite(out.sample_joints).all()


def test_cli_predict_without_a_checkpoint_uses_the_shipped_model(tiny_data, tmp_path) -> None:
    from typer.testing import CliRunner

    from handflow.cli.app import app

    image = next((tiny_data / "images" / "test").rglob("*.jpg"))
    r = CliRunner().invoke(app, ["predict", "--images", str(image), "--out", str(tmp_path / "p"), "--samples", "2",
                                 "--no-html"])
    assert r.exit_code == 0, r.output
    assert "using the shipped image model 'synthetic'" in r.output and (tmp_path / "p" / "index.csv").is_file()
