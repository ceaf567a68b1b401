"""Common interface of every image -> two-hand-distribution model (flow and baselines)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal, overload

import torch
from torch import Tensor, nn

from handflow.config import Config
from handflow.constants import PARAM_DIM
from handflow.hand.base import HandModel
from handflow.models.backbone import Backbone
from handflow.models.keypoint_encoder import KEYPOINTS, KeypointEncoder
from handflow.params import ParamNormalizer, unpack

__all__ = ["HandPoseModel", "decode_joints"]


@overload
def decode_joints(y: Tensor, K: Tensor, size: int, hand_model: HandModel, vertices: Literal[False] = False) -> Tensor: ...
@overload
def decode_joints(y: Tensor, K: Tensor, size: int, hand_model: HandModel,
                  vertices: Literal[True]) -> tuple[Tensor, dict[str, Tensor]]: ...
@overload
def decode_joints(y: Tensor, K: Tensor, size: int, hand_model: HandModel,
                  vertices: bool) -> Tensor | tuple[Tensor, dict[str, Tensor]]: ...
def decode_joints(y: Tensor, K: Tensor, size: int, hand_model: HandModel,
                  vertices: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Physical parameters -> camera-frame joints.

    Args:
        y: (B, 218) or (B, S, 218).
        K: (B, 3, 3) crop intrinsics.
        size: crop side.
        hand_model: a :class:`~handflow.hand.HandModel`.
        vertices: also return per side the camera-frame vertices.

    Returns:
        joints (B, [S,] 42, 3) mm [, {side: vertices (B, [S,] V, 3)}].

    Without ``vertices`` only the joints are posed (:meth:`handflow.hand.HandModel.joints`:
    ``openhand`` skins only the fingertip vertices; same joints, several times cheaper; used by
    training, prediction and evaluation).
    """
    lead = y.shape[:-1]
    Kb = K if y.dim() == 2 else K[:, None].expand(*lead, 3, 3)
    p = unpack(y.reshape(-1, PARAM_DIM), Kb.reshape(-1, 3, 3), size)
    joints, verts = [], {}
    for side in ("right", "left"):
        hp = p[side]
        betas = hp.betas.to(hp.rotmats.dtype)
        if vertices:
            out = hand_model(hp.rotmats, betas, side)
            joints.append(out.joints + hp.root[:, None])
            verts[side] = (out.vertices + hp.root[:, None]).reshape(*lead, -1, 3)
        else:
            joints.append(hand_model.joints(hp.rotmats, betas, side) + hp.root[:, None])
    J = torch.cat(joints, 1).reshape(*lead, 42, 3)
    return (J, verts) if vertices else J


class HandPoseModel(nn.Module):
    """Backbone + a head giving a distribution over the 218 standardized parameters.

    Subclasses implement :meth:`z0_std`, :meth:`sample_std` and :meth:`head_losses`.
    Every model stores the normalizer (training statistics) and its config.
    ``config_fields`` names the :class:`~handflow.config.ModelConfig` fields, besides the
    backbone, that a checkpoint of this kind must share with a config that resumes it.
    """

    kind: str = "base"
    config_fields: tuple[str, ...] = ()

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.model.backbone == KEYPOINTS:  # keypoint-evidence protocol: no image (docs/lifting.md)
            self.backbone: nn.Module = KeypointEncoder(cfg.model.keypoint_width)
        else:
            self.backbone = Backbone(cfg.model.backbone, cfg.model.pretrained_path, cfg.model.context)
        self.normalizer = ParamNormalizer()
        if cfg.model.freeze_backbone:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> HandPoseModel:
        """As :meth:`nn.Module.train`, but a frozen backbone stays in eval mode (its BatchNorm
        statistics are part of what is frozen)."""
        super().train(mode)
        if self.cfg.model.freeze_backbone:
            self.backbone.eval()
        return self

    @property
    def uses_keypoints(self) -> bool:
        """True for the keypoint-evidence protocol (``model.backbone=keypoints``): the input of
        :meth:`features` and :meth:`predict` is the evidence (B, E), not images."""
        return self.cfg.model.backbone == KEYPOINTS

    def features(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) images, or (B, E) keypoint evidence with ``model.backbone=keypoints``
        (:func:`~handflow.models.keypoint_encoder.build_evidence`) -> (B, C); run once per image."""
        if self.cfg.model.freeze_backbone:
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images)

    @abstractmethod
    def z0_std(self, feats: Tensor) -> Tensor:
        """(B, C) -> the single deterministic estimate (B, 218), standardized."""

    @abstractmethod
    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, C) -> (B, n, 218) standardized samples."""

    @abstractmethod
    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """Model-specific likelihood terms. y_std (B, N, 218) annotations, y_mask (B, N)."""

    def initialize(self, feats: Tensor, y_std: Tensor) -> None:
        """Data-dependent init on a first batch (flow: ActNorm). Default: nothing."""

    # physical-unit conveniences ------------------------------------------------
    def z0(self, feats: Tensor) -> Tensor:
        """(B, C) -> (B, 218) physical parameters."""
        return self.normalizer.denormalize(self.z0_std(feats))

    def sample(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, C) -> (B, n, 218) physical parameters."""
        return self.normalizer.denormalize(self.sample_std(feats, n, generator))

    def estimate_and_sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(B, C) -> (z0 (B, 218), samples (B, n, 218)) standardized. Models override this to
        share work between the two (HandFlowNet: one flow pass)."""
        return self.z0_std(feats), self.sample_std(feats, n, generator)

    @torch.no_grad()
    def predict(self, images: Tensor, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Backbone once per image (images (B, 3, S, S), or evidence (B, E) with
        ``model.backbone=keypoints``), then the z = 0 estimate (B, 218) and ``n`` samples
        (B, n, 218), physical."""
        return self.predict_features(self.features(images), n, generator)

    @torch.no_grad()
    def predict_features(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """(B, C) features -> ``{"z0": (B, 218), "samples": (B, n, 218)}`` physical."""
        z0, samples = self.estimate_and_sample_std(feats, n, generator)
        return {"z0": self.normalizer.denormalize(z0), "samples": self.normalizer.denormalize(samples)}
