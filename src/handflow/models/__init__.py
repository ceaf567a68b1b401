"""Models: HandFlowNet and the baselines, all behind :class:`HandPoseModel`."""

from __future__ import annotations

from handflow.config import Config, ConfigError
from handflow.models.base import HandPoseModel, decode_joints
from handflow.models.handflownet import HandFlowNet

__all__ = ["HandPoseModel", "HandFlowNet", "MODEL_REGISTRY", "build_model", "model_class", "decode_joints"]

#: model kind -> class; baselines register themselves here
MODEL_REGISTRY: dict[str, type[HandPoseModel]] = {"flow": HandFlowNet}


def model_class(kind: str) -> type[HandPoseModel]:
    """The class of model ``kind`` (``flow`` or a baseline); raises :class:`~handflow.config.ConfigError` if unknown."""
    if kind not in MODEL_REGISTRY:
        # imported here, not at the top: handflow.baselines imports this package
        import handflow.baselines  # noqa: F401  (the baselines register themselves)
    if kind not in MODEL_REGISTRY:
        raise ConfigError(f"config: unknown model kind {kind!r} (model.kind, --model); known {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[kind]


def build_model(cfg: Config) -> HandPoseModel:
    """Instantiate ``cfg.model.kind``."""
    return model_class(cfg.model.kind)(cfg)
