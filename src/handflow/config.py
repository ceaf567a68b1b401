"""The one config system of handflow: nested dataclasses, YAML presets, dotted overrides.

>>> cfg = load_config("cpu", ["loss.w_det=0", "train.max_steps=200"])
>>> cfg.model.backbone
'resnet18'

Presets live in ``handflow/configs/<name>.yaml`` (``cpu``: ResNet-18 at 128 px for 2 CPU
cores; ``paper``: ResNet-50 at 224 px, batch 64, GPU). A YAML file path works too. Every
checkpoint stores ``to_dict(cfg)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

import yaml

__all__ = ["Config", "ModelConfig", "LossConfig", "DataConfig", "TrainConfig", "load_config", "to_dict", "from_dict", "PRESETS"]

PRESETS = ("cpu", "paper")


@dataclass
class ModelConfig:
    """Network. ``kind``: ``flow`` (HandFlowNet) or a baseline (``deterministic``,
    ``gaussian``, ``mcdropout``, ``cvae``)."""

    kind: str = "flow"
    backbone: str = "resnet18"
    pretrained_path: str | None = None
    flow_steps: int = 4
    flow_hidden: int = 512
    flow_blocks: int = 2
    scale_bound: float = 2.0
    dropout: float = 0.2  # mcdropout baseline
    latent_dim: int = 32  # cvae baseline


@dataclass
class LossConfig:
    """Loss weights (0 switches a term off; docs/training.md explains the values)."""

    w_nll: float = 0.2
    w_det: float = 0.05
    w_theta: float = 0.1
    w_3d: float = 1.0
    w_2d: float = 2.0
    w_rot: float = 0.05
    num_samples: int = 2
    nll_noise: float = 0.005
    theta_seed: int = 0
    sample_3d_scale: float = 0.1  # weight of the sample terms relative to the z=0 term


@dataclass
class DataConfig:
    root: str = "data_synth"
    image_size: int = 128
    batch_size: int = 32
    num_workers: int = 0
    augment: bool = True
    hand_model: str = "openhand"
    mano_path: str | None = None
    multihands: str | None = None
    multihands_max: int = 8


@dataclass
class TrainConfig:
    max_steps: int = 3000
    max_minutes: float | None = None
    lr: float = 3e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    seed: int = 0
    out_dir: str = "runs/handflow"
    log_every: int = 10
    val_every: int = 500
    ckpt_every: int = 200
    threads: int = 2


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (for YAML and checkpoints)."""
    return dataclasses.asdict(cfg)


def _coerce(value: Any, typ: Any, where: str) -> Any:
    if value is None:
        return None
    name = getattr(typ, "__name__", str(typ))
    s = str(typ)
    if "None" in s and value in ("None", "null", "none"):
        return None
    try:
        if typ is bool or s == "bool":
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if typ is int or s == "int":
            return int(value)
        if typ is float or s == "float":
            return float(value)
        if "float" in s and "None" in s:
            return float(value)
        if "int" in s and "str" in s:  # int | str (devices)
            try:
                return int(value)
            except (TypeError, ValueError):
                return str(value)
        return value if not isinstance(value, str) or "str" in s else value
    except (TypeError, ValueError):
        raise ValueError(f"config: {where}={value!r} is not a valid {name}") from None


def from_dict(d: dict[str, Any], cls: type = Config, where: str = "") -> Any:
    """Build a (nested) dataclass from a dict; unknown keys raise a clear error."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"config: unknown key(s) {sorted(unknown)} in {where or cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for k, v in d.items():
        t = hints[k]
        key = f"{where}.{k}" if where else k
        kwargs[k] = from_dict(v or {}, t, key) if dataclasses.is_dataclass(t) else _coerce(v, t, key)
    return cls(**kwargs)


def _set(cfg: Any, dotted: str, value: str) -> None:
    parts = dotted.split(".")
    obj = cfg
    for p in parts[:-1]:
        if not hasattr(obj, p) or not dataclasses.is_dataclass(getattr(obj, p)):
            raise ValueError(f"config: unknown section {p!r} in override {dotted!r}")
        obj = getattr(obj, p)
    leaf = parts[-1]
    if leaf not in {f.name for f in dataclasses.fields(obj)}:
        raise ValueError(f"config: unknown key {dotted!r}; known in this section: {[f.name for f in dataclasses.fields(obj)]}")
    parsed = yaml.safe_load(value) if value not in ("",) else None
    setattr(obj, leaf, _coerce(parsed if not isinstance(parsed, (dict, list)) else value, get_type_hints(type(obj))[leaf], dotted))


def load_config(preset_or_yaml: str = "cpu", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a preset name or a YAML file, then apply ``key.sub=value`` overrides."""
    if preset_or_yaml in PRESETS:
        text = resources.files("handflow.configs").joinpath(f"{preset_or_yaml}.yaml").read_text()
    else:
        p = Path(preset_or_yaml)
        if not p.exists():
            raise FileNotFoundError(f"config {preset_or_yaml!r} is neither a preset {PRESETS} nor an existing YAML file")
        text = p.read_text()
    cfg = from_dict(yaml.safe_load(text) or {})
    for o in overrides:
        if "=" not in o:
            raise ValueError(f"config override {o!r} must look like section.key=value")
        k, v = o.split("=", 1)
        _set(cfg, k.strip(), v.strip())
    return cfg
