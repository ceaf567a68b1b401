"""One config system: presets, YAML, dotted overrides, clear errors."""

from __future__ import annotations

import pytest

from handflow.config import PRESETS, from_dict, load_config, to_dict


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_instantiates_and_round_trips(preset: str) -> None:
    cfg = load_config(preset)
    assert from_dict(to_dict(cfg)) == cfg
    from handflow.models import build_model

    if preset == "cpu":
        assert cfg.model.backbone == "resnet18" and cfg.data.image_size == 128
        build_model(cfg)
    else:
        assert cfg.model.backbone == "resnet50" and cfg.data.image_size == 224 and cfg.data.batch_size == 64


def test_overrides_and_errors(tmp_path) -> None:
    cfg = load_config("cpu", ["loss.w_det=0", "train.devices=2", "data.augment=false", "train.max_minutes=null"])
    assert cfg.loss.w_det == 0.0 and cfg.train.devices == 2 and cfg.data.augment is False and cfg.train.max_minutes is None
    with pytest.raises(ValueError, match="unknown key"):
        load_config("cpu", ["loss.w_typo=1"])
    with pytest.raises(ValueError, match="not a valid"):
        load_config("cpu", ["train.max_steps=many"])
    with pytest.raises(ValueError, match="section.key=value"):
        load_config("cpu", ["loss.w_det"])
    y = tmp_path / "c.yaml"
    y.write_text("model:\n  backbone: resnet34\nsurprise: 1\n")
    with pytest.raises(ValueError, match="surprise"):
        load_config(str(y))
    with pytest.raises(FileNotFoundError, match="preset"):
        load_config("nonexistent")
