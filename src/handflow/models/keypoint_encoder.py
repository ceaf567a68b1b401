"""The keypoint-evidence protocol: 2D joints + visibility + crop camera -> a context vector.

With ``model.backbone=keypoints`` every model (HandFlowNet and the baselines) is conditioned
on the 2D evidence of its image instead of image features (docs/evaluation.md, "Keypoint
evidence"; docs/lifting.md). The evidence of one image is a vector of
:data:`EVIDENCE_DIM` = 42·2 + 42 + 42 + 4 numbers:

==================  =====  ===============================================================
``uv``              42·2   crop-frame 2D joints normalised to [-1, 1] (``2u/S − 1``), with
                           Gaussian noise of σ px *at 128 px* (σ·S/128 px at crop side S, i.e.
                           ``2σ/128`` in normalised units) on the visible joints; the
                           coordinates of the joints that are not visible are 0
``visible``         42     1 for a joint visible in the image (``visible`` of the dataset)
``valid``           42     1 for a joint with a valid annotation (``joint_valid``)
``camera``          4      crop camera in normalised crop units: ``log(2 fx/S)``,
                           ``log(2 fy/S)``, ``2 cx/S − 1``, ``2 cy/S − 1``
==================  =====  ===============================================================

Noise: in training from a generator seeded by ``(train.seed, global_step)``
(:func:`training_noise`), so a resumed run sees the draws of an uninterrupted one; at
evaluation a fixed function of ``(image_id, seed)`` (:func:`image_noise`), so every model is
scored on the same evidence. Lifting (``handflow.lifting``) adds no noise.

:class:`KeypointEncoder` (a small MLP) replaces the ResNet :class:`~handflow.models.backbone.Backbone`;
like it, it exposes ``dim``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from handflow.constants import NUM_JOINTS

__all__ = ["KEYPOINTS", "EVIDENCE_DIM", "NOISE_REFERENCE_SIZE", "NOISE_SALT", "KeypointEncoder", "build_evidence",
           "batch_evidence", "image_noise", "training_noise"]

#: ``model.backbone`` value of the keypoint-evidence protocol
KEYPOINTS = "keypoints"
#: camera entries of the evidence vector
CAMERA_DIM = 4
#: length of one image's evidence vector
EVIDENCE_DIM = NUM_JOINTS * 2 + NUM_JOINTS + NUM_JOINTS + CAMERA_DIM
#: ``data.keypoint_noise_px`` is given at this crop side; at crop side S it is scaled by S / 128
NOISE_REFERENCE_SIZE = 128
#: added to the training generator's seed so that the evidence noise is not the sampling stream
NOISE_SALT = 7_919
#: seed of image ``i`` at evaluation seed ``s``: ``s * _EVAL_STRIDE + i``
_EVAL_STRIDE = 1_000_000_007


def build_evidence(joints_2d: Tensor, visible: Tensor, joint_valid: Tensor, K: Tensor, size: int,
                   noise_px: float = 0.0, noise: Tensor | None = None) -> Tensor:
    """The evidence vectors of B images (module docstring).

    Args:
        joints_2d: (B, 42, 2) crop pixels (InterHand order).
        visible: (B, 42) bool, joints visible in the image.
        joint_valid: (B, 42) bool, joints with a valid annotation.
        K: (B, 3, 3) crop intrinsics (pixels of the S × S crop).
        size: crop side S in pixels.
        noise_px: σ in pixels at a 128 px crop (scaled by S / 128).
        noise: (B, 42, 2) standard-normal draws (:func:`training_noise`, :func:`image_noise`);
            None or ``noise_px = 0``: no noise.

    Returns:
        (B, EVIDENCE_DIM) float32.
    """
    vis = visible.bool()
    uv = 2.0 * joints_2d.float() / size - 1.0
    if noise is not None and noise_px > 0:
        uv = uv + (2.0 * noise_px / NOISE_REFERENCE_SIZE) * noise.to(uv)
    uv = torch.where(vis[..., None], uv, uv.new_zeros(()))
    Kf = K.float()
    cam = torch.stack([torch.log(2.0 * Kf[:, 0, 0] / size), torch.log(2.0 * Kf[:, 1, 1] / size),
                       2.0 * Kf[:, 0, 2] / size - 1.0, 2.0 * Kf[:, 1, 2] / size - 1.0], -1)
    return torch.cat([uv.flatten(1), vis.float(), joint_valid.float().to(uv.device), cam.to(uv.device)], 1)


def training_noise(batch_size: int, seed: int, step: int) -> Tensor:
    """(B, 42, 2) standard-normal draws of training step ``step`` of a run seeded ``seed``."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + int(step) + NOISE_SALT)
    return torch.randn(batch_size, NUM_JOINTS, 2, generator=g)


def image_noise(image_ids: Tensor | list[int], seed: int = 0) -> Tensor:
    """(B, 42, 2) standard-normal draws, a fixed function of each image id and ``seed``
    (independent of the batch an image lands in)."""
    ids = [int(i) for i in (image_ids.tolist() if isinstance(image_ids, Tensor) else image_ids)]
    out = torch.empty(len(ids), NUM_JOINTS, 2)
    for b, i in enumerate(ids):
        out[b] = torch.randn(NUM_JOINTS, 2, generator=torch.Generator().manual_seed(int(seed) * _EVAL_STRIDE + i))
    return out


def batch_evidence(batch: dict[str, Any], size: int, noise_px: float, noise: Tensor | None) -> Tensor:
    """:func:`build_evidence` of a collated dataset batch (keys ``joints_2d``, ``visible``,
    ``joint_valid``, ``K``) -> (B, EVIDENCE_DIM)."""
    return build_evidence(batch["joints_2d"], batch["visible"], batch["joint_valid"], batch["K"], size, noise_px, noise)


class KeypointEncoder(nn.Module):
    """Evidence (B, EVIDENCE_DIM) -> context (B, width): an MLP of ``depth`` SiLU layers
    with LayerNorm (no batch statistics: train and eval behave alike).

    Args:
        width: hidden width and output size ``dim``.
        depth: hidden layers.
    """

    def __init__(self, width: int = 512, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = EVIDENCE_DIM
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.LayerNorm(width), nn.SiLU()]
            d = width
        self.net = nn.Sequential(*layers)
        self.name = KEYPOINTS
        self.dim = width

    def forward(self, evidence: Tensor) -> Tensor:
        """evidence (B, EVIDENCE_DIM) -> (B, dim)."""
        if evidence.dim() != 2 or evidence.shape[1] != EVIDENCE_DIM:
            raise ValueError(f"keypoint evidence must be (B, {EVIDENCE_DIM}), got {tuple(evidence.shape)} "
                             "(handflow.models.keypoint_encoder.build_evidence)")
        return self.net(evidence)
