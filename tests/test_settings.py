"""One settings system for every step (issue #19): every schema round-trips through YAML, errors
name the key (and the close ones), fingerprints are stable and sensitive, old checkpoints load,
and the command-line options of synth / multihands / train agree with their schemas."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

import pytest

from handflow.config import (
    PRESETS,
    Config,
    ConfigError,
    build,
    fingerprint,
    from_yaml,
    load_config,
    parse_shard,
    saved_config,
    schema_fields,
    settings_of,
    to_dict,
    to_yaml,
)
from handflow.data.augment import AugmentConfig
from handflow.data.synth.settings import SynthConfig
from handflow.multihands.engine import EngineConfig
from handflow.multihands.generate import GenerateConfig
from handflow.multihands.perturb import PerturbConfig

SCHEMAS = (Config, SynthConfig, GenerateConfig, PerturbConfig, EngineConfig, AugmentConfig)


def _examples() -> list[Any]:
    return [*(load_config(p) for p in PRESETS), load_config("cpu", ["loss.enabled=[nll,3d]", "train.devices=0,1"]),
            *(cls() for cls in SCHEMAS),
            SynthConfig(frames=30, cameras=4, image_size=64, seed=3, splits=("train", "test"), test_frames=5,
                        train_cameras=2),
            build(GenerateConfig, overrides=["pixel_threshold=3.5", "perturb.finger=0.4"]),
            EngineConfig(prior_thresholds={"right": -3.0, "left": -4.5})]


@pytest.mark.parametrize("obj", _examples(), ids=lambda o: type(o).__name__)
def test_every_schema_round_trips_through_yaml_and_json(obj: Any) -> None:
    text = to_yaml(obj)
    back = from_yaml(text, type(obj))
    assert back == obj and type(back) is type(obj)
    assert build(type(obj), [(json.loads(json.dumps(to_dict(obj))), "json")]) == obj
    assert set(schema_fields(type(obj))) <= {k for k in _flat(to_dict(obj))} | _dict_fields(type(obj))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _dict_fields(cls: type) -> set[str]:
    return {k for k, t in schema_fields(cls).items() if getattr(t, "__origin__", None) is dict}


@pytest.mark.parametrize("cls, override, message", [
    (Config, "loss.w_dett=1", "config: unknown key 'loss.w_dett' (did you mean 'loss.w_det'?); known in loss: ["),
    (Config, "train.w_det=1", "config: unknown key 'train.w_det' (did you mean 'loss.w_det'?); known in train: ["),
    (Config, "los.w_det=1", "config: unknown section 'los' (did you mean 'loss'?); known in the top level: ["),
    (SynthConfig, "frame=3", "config: unknown key 'frame' (did you mean 'frames'?); known in the top level: ["),
    (GenerateConfig, "perturb.fingr=0.1", "config: unknown key 'perturb.fingr' (did you mean 'perturb.finger'?)"),
    (GenerateConfig, "finger=0.1", "config: unknown key 'finger' (did you mean 'perturb.finger'?)"),
])
def test_an_unknown_key_is_named_with_the_close_ones(cls: type, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build(cls, overrides=[override])
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_an_unknown_key_in_a_yaml_file_is_named(tmp_path) -> None:
    y = tmp_path / "s.yaml"
    y.write_text("frames: 10\ncamera: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'camera' \(did you mean 'cameras'\?\)"):
        from_yaml(y.read_text(), SynthConfig)
    y.write_text("model:\n  backbon: resnet34\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model.backbon' \(did you mean 'model.backbone'"):
        load_config(str(y))


@pytest.mark.parametrize("cls, override, message", [
    (Config, "train.max_steps=many", "config: train.max_steps='many' is not a valid int"),
    (Config, "data.augment=maybe", "config: data.augment='maybe' is not a valid bool (true/false)"),
    (Config, "loss.w_nll=null", "config: loss.w_nll may not be null (expected float)"),
    (Config, "loss=1", "config: 'loss' is a section; override one of its keys (loss.<key>=...)"),
    (SynthConfig, "frames=2.5", "config: frames=2.5 is not a valid int (not a whole number)"),
    (GenerateConfig, "perturb.finger=wide", "config: perturb.finger='wide' is not a valid float"),
    (SynthConfig, "frames", "config override 'frames' must look like key=value"),
    (GenerateConfig, "num", "config override 'num' must look like section.key=value"),
])
def test_a_wrong_type_names_key_value_and_type(cls: type, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build(cls, overrides=[override])
    assert str(e.value) == message


def test_schema_checks_are_config_errors() -> None:
    """The schemas' own range checks (``__post_init__``) come out as one-line ConfigErrors."""
    with pytest.raises(ConfigError, match="prior_quantile must be in"):
        build(GenerateConfig, overrides=["prior_quantile=1.5"])
    with pytest.raises(ConfigError, match="unknown split 'bogus'"):
        build(SynthConfig, overrides=["splits=train,bogus"])
    with pytest.raises(ConfigError, match="--image-size must be at least 16"):
        build(SynthConfig, overrides=["image_size=8"])


def test_a_checkpoint_from_before_a_key_existed_loads(tmp_path) -> None:
    """A checkpoint file whose stored config lacks keys added since (one with a
    :data:`LEGACY_DEFAULTS` value, others without) loads: the legacy key takes the value it was
    trained with, the others today's defaults; the shipped lifting model's config loads too."""
    from pathlib import Path

    import torch

    import handflow
    from handflow.config import LEGACY_DEFAULTS
    from handflow.models.checkpoint import read_checkpoint
    from handflow.safeio import load_torch_file

    d = to_dict(load_config("cpu", ["train.seed=5"]))
    for section, keys in LEGACY_DEFAULTS.items():
        for k in keys:
            del d[section][k]
    for newer in (("data", "packed"), ("model", "keypoint_width"), ("loss", "sample_3d_scale")):
        del d[newer[0]][newer[1]]
    path = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": {"config": d}, "state_dict": {}}, path)
    _, cfg = read_checkpoint(path)
    assert all(getattr(getattr(cfg, s), k) == v for s, keys in LEGACY_DEFAULTS.items() for k, v in keys.items())
    assert cfg.loss.joints3d_root_relative is False  # trained in the camera frame, not today's default
    assert cfg.train.seed == 5 and cfg.data.packed is None and cfg.model.keypoint_width == Config().model.keypoint_width
    d["loss"]["w_dett"] = 1.0  # a key no handflow wrote: refused, named
    with pytest.raises(ConfigError, match="unknown key 'loss.w_dett'"):
        saved_config(d)
    asset = Path(handflow.__file__).parent / "assets" / "lifting_flow.pt"
    stored = load_torch_file(asset)["hyper_parameters"]["config"]
    assert saved_config(stored).model.backbone == "keypoints"


def _changed(value: Any, typ: Any) -> Any:
    """Another valid value of a field."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.0625 if value < 0.9 else value / 2  # stays in [0, 1) where it was
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, (list, tuple)):
        return list(value[:1])
    if isinstance(value, dict):
        return {k: v + 1 for k, v in value.items()}
    assert value is None, (value, typ)
    return ["nll"] if "list" in str(typ) else 3


@pytest.mark.parametrize("obj", [Config(), SynthConfig(), GenerateConfig(), EngineConfig(), AugmentConfig()],
                         ids=lambda o: type(o).__name__)
def test_the_fingerprint_changes_with_every_field(obj: Any) -> None:
    cls, base = type(obj), fingerprint(obj)
    for key, typ in schema_fields(cls).items():
        d = to_dict(obj)
        node, *path = [d, *key.split(".")]
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = _changed(node[path[-1]], typ)
        other = build(cls, [(d, "changed")])
        assert fingerprint(other) != base, key


def test_the_fingerprint_is_the_same_in_another_process() -> None:
    objs = {"cpu": load_config("cpu"), "synth": SynthConfig(frames=30, test_frames=4), "mh": GenerateConfig()}
    code = ("from handflow.config import fingerprint, load_config; from handflow.data.synth.settings import SynthConfig; "
            "from handflow.multihands.generate import GenerateConfig; "
            "print(fingerprint(load_config('cpu')), fingerprint(SynthConfig(frames=30, test_frames=4)), "
            "fingerprint(GenerateConfig()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert r.stdout.split() == [fingerprint(o) for o in objs.values()]
    # records written before this settings system keep their fingerprint (resume still matches)
    from handflow.fingerprint import settings_fingerprint

    assert fingerprint(GenerateConfig()) == settings_fingerprint(dataclasses.asdict(GenerateConfig()))
    assert settings_of(SynthConfig()) == {"frames": 200, "cameras": 16, "image_size": 256, "seed": 0,
                                          "hand_model": "openhand", "splits": ["train", "val", "test"],
                                          "format_version": 1}


def test_one_parse_shard() -> None:
    from handflow.multihands.generate import parse_shard as mh_parse_shard

    assert parse_shard("2/4") == (2, 4) and mh_parse_shard is parse_shard
    for bad, msg in (("3/2", "need 0 <= i < n"), ("x", "must look like i/n")):
        with pytest.raises(ConfigError, match=msg):
            parse_shard(bad)


def test_stored_settings_are_checked_by_one_helper(tmp_path) -> None:
    from handflow.errors import SettingsMismatch
    from handflow.fingerprint import check_or_record, check_stored, matches_stored, settings_fingerprint, stored_settings

    s = settings_of(SynthConfig(frames=10))
    s11, fp, fp11 = {**s, "frames": 11}, settings_fingerprint(s), settings_fingerprint({**s, "frames": 11})
    assert check_stored(None, s, what="part 3", fix="use another --out") is False
    assert check_stored(stored_settings(s), s, what="part 3", fix="use another --out") is True
    with pytest.raises(SettingsMismatch, match=rf"^part 3 was written with frames=10, fingerprint={fp} \(now 11, {fp11}\): "
                                               r"use another --out$"):
        check_stored(stored_settings(s), s11, what="part 3", fix="use another --out")
    with pytest.raises(SettingsMismatch, match=rf"^part 3 was written with fingerprint={fp} \(now {fp11}\): f$"):
        check_stored({"fingerprint": fp}, s11, what="part 3", fix="f")  # the settings themselves not stored
    # facts of the input that must hold too (MultiHands: the split's number of images)
    meta = {**stored_settings(s), "num_images": 8}
    assert check_stored(meta, s, what="part 3", fix="f", expected={"num_images": 8}) is True
    with pytest.raises(SettingsMismatch, match=r"^part 3 was written with num_images=8 \(now 9\): f$"):
        check_stored(meta, s, what="part 3", fix="f", expected={"num_images": 9})
    # without raising; metadata of before fingerprints match on their settings
    assert matches_stored(stored_settings(s), s) and not matches_stored(stored_settings(s), s11)
    assert not matches_stored(None, s) and matches_stored({"config": s}, s) and not matches_stored({"config": s}, s11)
    rec = tmp_path / ".settings.json"
    assert check_or_record(rec, s, what="out", fix="f", record=False) is False and not rec.exists()
    assert check_or_record(rec, s, what="out", fix="f") is False and rec.exists()
    assert check_or_record(rec, s, what="out", fix="f", found={"shards": 2}, expected={"shards": 2}) is True
    with pytest.raises(SettingsMismatch, match=r"with shards=2 \(now 4\)"):
        check_or_record(rec, s, what="out", fix="f", found={"shards": 2}, expected={"shards": 4})


# --------------------------------------------------------------------------- the command line
def _commands() -> dict[str, Any]:
    import typer

    from handflow.cli import app

    root = typer.main.get_command(app)
    return {"synth": root.commands["synth"], "multihands": root.commands["multihands"], "train": root.commands["train"]}


@pytest.mark.parametrize("name, schema", [("synth", SynthConfig), ("multihands", GenerateConfig), ("train", Config)])
def test_every_option_is_a_setting_or_a_run_option_with_the_schema_default(name: str, schema: type) -> None:
    import importlib

    from handflow.cli.options import override_text

    module = importlib.import_module(f"handflow.cli.{name}")
    settings, run = module.SETTINGS_OPTIONS, module.RUN_OPTIONS
    leaves = schema_fields(schema)
    params = {p.name: p for p in _commands()[name].params if p.name != "help"}
    assert set(params) == set(settings) | set(run) and not set(settings) & set(run)
    assert set(settings.values()) <= set(leaves), set(settings.values()) - set(leaves)
    assert not {o for o in run if o in leaves}, "a setting declared as a run option"
    default = schema()
    for option, key in settings.items():
        value = params[option].default
        if value is None:  # unset: the schema's (or the preset's) value stands
            continue
        assert build(schema, overrides=[override_text(key, value)]) == default, (option, value)


def test_the_options_given_and_set_overrides_reach_the_settings(tmp_path, monkeypatch) -> None:
    """defaults <- --config FILE <- the options given <- --set; an option left at its default
    does not override the file."""
    from typer.testing import CliRunner

    from handflow.cli import app
    from handflow.multihands import generate as mh_generate

    seen: dict[str, Any] = {}

    def fake_generate(out, split, cfg, targets, **kw):
        seen["cfg"] = cfg
        raise KeyboardInterrupt  # stop here: the settings are what is tested

    monkeypatch.setattr(mh_generate, "dataset_targets", lambda *a: [])
    monkeypatch.setattr(mh_generate, "generate", fake_generate)
    y = tmp_path / "mh.yaml"
    y.write_text("rounds: 3\nimage_size: 64\nperturb:\n  finger: 0.5\n")
    CliRunner().invoke(app, ["multihands", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(y),
                             "--num", "7", "--set", "perturb.betas=0.25", "--set", "seed=9"])
    cfg = seen["cfg"]
    assert (cfg.num, cfg.rounds, cfg.image_size, cfg.seed, cfg.proposals_per_image) == (7, 3, 64, 9, 96)
    assert (cfg.perturb.finger, cfg.perturb.betas) == (0.5, 0.25)
    r = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "s"), "--set", "frame=3"])
    assert r.exit_code == 1 and "unknown key 'frame' (did you mean 'frames'?)" in r.output
    r = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "s"), "--shard", "3/2"])
    assert r.exit_code == 2 and "need 0 <= i < n" in r.output
