"""Models: HandFlowNet and the baselines, all behind :class:`HandPoseModel`."""

from __future__ import annotations

from handflow.config import Config, ConfigError
from handflow.models.base import HandPoseModel, decode_joints
from handflow.models.baselines import CVAEModel, DeterministicModel, GaussianModel, MCDropoutModel
from handflow.models.handflownet import HandFlowNet

__all__ = ["HandPoseModel", "HandFlowNet", "MODEL_REGISTRY", "build_model", "model_class", "decode_joints"]

#: model kind -> class, one entry per ``handflow.config.MODEL_KINDS`` (explicit: nothing registers on import)
MODEL_REGISTRY: dict[str, type[HandPoseModel]] = {
    "flow": HandFlowNet,
    "deterministic": DeterministicModel,
    "gaussian": GaussianModel,
    "mcdropout": MCDropoutModel,
    "cvae": CVAEModel,
}


def model_class(kind: str) -> type[HandPoseModel]:
    """The class of model ``kind`` (``flow`` or a baseline); raises :class:`~handflow.config.ConfigError` if unknown."""
    if kind not in MODEL_REGISTRY:
        raise ConfigError(f"config: unknown model kind {kind!r} (model.kind, --model); known {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[kind]


def build_model(cfg: Config) -> HandPoseModel:
    """Instantiate ``cfg.model.kind``."""
    return model_class(cfg.model.kind)(cfg)
