"""Models: HandFlowNet and the baselines, all behind :class:`HandPoseModel`."""

from __future__ import annotations

from handflow.config import Config
from handflow.models.base import HandPoseModel, decode_joints
from handflow.models.handflownet import HandFlowNet

__all__ = ["HandPoseModel", "HandFlowNet", "MODEL_REGISTRY", "build_model", "decode_joints"]

#: model kind -> class; baselines register themselves here
MODEL_REGISTRY: dict[str, type[HandPoseModel]] = {"flow": HandFlowNet}


def build_model(cfg: Config) -> HandPoseModel:
    """Instantiate ``cfg.model.kind``."""
    if cfg.model.kind not in MODEL_REGISTRY:
        import handflow.baselines  # noqa: F401  (the baselines register themselves)
    if cfg.model.kind not in MODEL_REGISTRY:
        raise ValueError(f"unknown model kind {cfg.model.kind!r}: known {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[cfg.model.kind](cfg)
