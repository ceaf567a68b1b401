"""One config system: presets, YAML, dotted overrides, type checks, clear errors."""

from __future__ import annotations

import pytest

from handflow.config import LOSS_TERMS, PRESETS, Config, ConfigError, from_dict, load_config, to_dict


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_instantiates_and_round_trips(preset: str) -> None:
    cfg = load_config(preset)
    assert from_dict(to_dict(cfg)) == cfg
    from handflow.models import build_model

    if preset == "cpu":
        assert cfg.model.backbone == "resnet18" and cfg.data.image_size == 128
        assert cfg.train.accelerator == "cpu" and cfg.train.max_minutes <= 30
    else:
        assert cfg.model.backbone == "resnet50" and cfg.data.image_size == 224 and cfg.data.batch_size == 64
        assert cfg.train.precision.endswith("mixed") and cfg.train.accelerator == "gpu"
    model = build_model(cfg)  # every preset builds its network
    assert model.backbone.dim == (512 if preset == "cpu" else 2048)


def test_overrides_and_errors(tmp_path) -> None:
    cfg = load_config("cpu", ["loss.w_det=0", "train.devices=2", "data.augment=false", "train.max_minutes=null"])
    assert cfg.loss.w_det == 0.0 and cfg.train.devices == 2 and cfg.data.augment is False and cfg.train.max_minutes is None
    assert isinstance(cfg.loss.w_det, float)
    cfg = load_config("cpu", ["train.devices=auto", "train.lr=1e-4", "data.root=123", "data.mano_path=~/mano"])
    assert cfg.train.devices == "auto" and cfg.train.lr == 1e-4 and cfg.data.root == "123" and cfg.data.mano_path == "~/mano"
    with pytest.raises(ConfigError, match="unknown key"):
        load_config("cpu", ["loss.w_typo=1"])
    with pytest.raises(ConfigError, match="unknown section"):
        load_config("cpu", ["losss.w_det=1"])
    with pytest.raises(ConfigError, match="is a section"):
        load_config("cpu", ["loss=1"])
    with pytest.raises(ConfigError, match="train.max_steps.*not a valid int"):
        load_config("cpu", ["train.max_steps=many"])
    with pytest.raises(ConfigError, match="not a whole number"):
        load_config("cpu", ["train.max_steps=2.5"])
    with pytest.raises(ConfigError, match="not a valid bool"):
        load_config("cpu", ["data.augment=maybe"])
    with pytest.raises(ConfigError, match="may not be null"):
        load_config("cpu", ["loss.w_nll=null"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("cpu", ["loss.w_det"])
    with pytest.raises(ConfigError, match="resnet101"):
        load_config("cpu", ["model.backbone=resnet101"])
    with pytest.raises(ConfigError, match="w_det"):
        load_config("cpu", ["loss.w_det=-1"])
    with pytest.raises(ConfigError, match="mano_path"):
        load_config("cpu", ["data.hand_model=mano"])
    y = tmp_path / "c.yaml"
    y.write_text("model:\n  backbone: resnet34\nsurprise: 1\n")
    with pytest.raises(ConfigError, match="surprise"):
        load_config(str(y))
    y.write_text("model:\n  backbone: resnet34\ntrain:\n  lr: 0.001\n")
    cfg = load_config(str(y), ["train.seed=3"])
    assert cfg.model.backbone == "resnet34" and cfg.train.lr == 0.001 and cfg.train.seed == 3
    assert cfg.loss == Config().loss  # unspecified sections keep the defaults
    y.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(str(y))
    with pytest.raises(FileNotFoundError, match="preset"):
        load_config("nonexistent")


def test_loss_switches() -> None:
    cfg = load_config("cpu")
    assert all(cfg.loss.active(t) for t in LOSS_TERMS)
    off = load_config("cpu", ["loss.w_theta=0"]).loss
    assert not off.active("theta") and off.weight("theta") == 0 and off.active("nll")
    only = load_config("cpu", ["loss.enabled=[nll,3d]"]).loss
    assert [t for t in LOSS_TERMS if only.active(t)] == ["nll", "3d"]
    assert only.weight("3d") == cfg.loss.w_3d
    assert load_config("cpu", ["loss.enabled=rot"]).loss.enabled == ["rot"]
    with pytest.raises(ConfigError, match="unknown term"):
        load_config("cpu", ["loss.enabled=[nll,dett]"])
    with pytest.raises(ConfigError, match="unknown loss term"):
        cfg.loss.weight("kl")


def test_a_saved_config_without_newer_keys_keeps_how_it_was_trained() -> None:
    """A checkpoint written before ``loss.joints3d_root_relative`` existed was trained in the
    camera frame; today's default is wrist-relative. Loading it must not change its training."""
    from handflow.config import LEGACY_DEFAULTS, saved_config

    cfg = load_config("cpu")
    assert cfg.loss.joints3d_root_relative is True
    d = to_dict(cfg)
    del d["loss"]["joints3d_root_relative"]
    old = saved_config(d)
    assert old.loss.joints3d_root_relative is LEGACY_DEFAULTS["loss"]["joints3d_root_relative"] is False
    assert old.loss.w_3d == cfg.loss.w_3d and old.model == cfg.model
    assert saved_config(to_dict(cfg)) == cfg  # a complete config is unchanged
    del d["loss"]
    assert saved_config(d).loss.joints3d_root_relative is False
