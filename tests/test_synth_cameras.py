"""Per-split cameras of ``handflow synth`` (issue #17): more training poses for the same images."""

from __future__ import annotations

import json

import pytest
import torch

from handflow.data.synth import generate as gen
from handflow.data.synth import ih_writer as W
from handflow.data.synth.rerun import SETTINGS_FILE
from handflow.errors import SettingsMismatch

BASE = dict(frames=10, cameras=3, image_size=64, seed=5)
PER_SPLIT = dict(train_cameras=1, val_cameras=2)


@pytest.fixture(scope="module")
def backends():
    from test_synth import _real_backends_or_standin

    torch.set_num_threads(1)
    return _real_backends_or_standin()


@pytest.fixture(scope="module")
def pair(tmp_path_factory, backends):
    """The same plan written with 3 cameras everywhere and with 1/2/3 cameras for train/val/test."""
    base, split = tmp_path_factory.mktemp("base"), tmp_path_factory.mktemp("split")
    gen.generate(base, gen.SynthConfig(**BASE), backends=backends, progress=False)
    res = gen.generate(split, gen.SynthConfig(**BASE, **PER_SPLIT), backends=backends, progress=False)
    return base, split, res["summary"]


def test_defaults_leave_the_settings_unchanged():
    plain = gen.SynthConfig(**BASE)
    assert plain.to_json() == gen.SynthConfig(**BASE, train_cameras=3, val_cameras=3, test_cameras=3).to_json()
    assert not any(k.endswith("_cameras") for k in plain.to_json())
    assert plain.id_stride == 3 and all(plain.cameras_for(s) == 3 for s in ("train", "val", "test"))
    cfg = gen.SynthConfig(**BASE, train_cameras=2, test_cameras=12)
    assert cfg.to_json()["train_cameras"] == 2 and cfg.to_json()["test_cameras"] == 12 and "val_cameras" not in cfg.to_json()
    assert cfg.id_stride == 12 and gen.SynthConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="--train-cameras"):
        gen.SynthConfig(**BASE, train_cameras=0)


def test_per_split_cameras_write_that_many_views(pair):
    base, split, summary = pair
    for s, n in (("train", 1), ("val", 2), ("test", 3)):
        cams = json.loads(W.split_files(split, s)["camera"].read_text())
        assert all(len(c["focal"]) == n for c in cams.values()), s
        data = json.loads(W.split_files(split, s)["data"].read_text())
        assert {im["camera"] for im in data["images"]} <= {str(400001 + k) for k in range(n)}
        ids = [im["id"] for im in data["images"]]
        assert len(set(ids)) == len(ids)
        assert summary["splits"][s]["frames"] == json.loads((base / "synth_summary.json").read_text())["splits"][s]["frames"]
    assert summary["cameras_per_split"] == {"train": 1, "val": 2, "test": 3}
    rec = json.loads((split / SETTINGS_FILE).read_text())["settings"]
    assert rec["train_cameras"] == 1 and rec["val_cameras"] == 2 and "test_cameras" not in rec


def test_a_split_with_the_default_count_keeps_its_bytes(pair):
    base, split, _ = pair
    files = sorted(p.relative_to(base) for p in (base / "images" / "test").rglob("*.jpg"))
    files += [W.split_files(base, "test")[k].relative_to(base) for k in ("data", "camera", "joint_3d", "extra")]
    assert files and all((base / f).read_bytes() == (split / f).read_bytes() for f in files)


def test_other_per_split_cameras_are_refused(pair, backends):
    _, split, _ = pair
    with pytest.raises(SettingsMismatch, match="train_cameras=1"):
        gen.generate(split, gen.SynthConfig(**BASE, train_cameras=2, val_cameras=2), backends=backends, progress=False)


def test_cli_has_the_options():
    from typer.testing import CliRunner

    from handflow.cli import app

    r = CliRunner().invoke(app, ["synth", "--help"], terminal_width=200)
    assert r.exit_code == 0
    for opt in ("--train-cameras", "--val-cameras", "--test-cameras"):
        assert opt in r.output
