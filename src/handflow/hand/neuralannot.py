"""InterHand2.6M NeuralAnnot parameters <-> camera-frame hand parameters.

``InterHand2.6M_<split>_MANO_NeuralAnnot.json`` stores, per frame and hand, MANO-style
``pose`` (48 axis-angle values: global rotation, then 15 finger joints **relative to the
model's mean pose** ``hands_mean``), ``shape`` (10 betas) and ``trans`` (3 values, **metres**)
in the **world** frame (``reference/formats.md`` section 1.8). Posing follows MANO: the
global rotation pivots on the shaped rest wrist ``J0(β)`` of the model's native frame and
``trans`` is added afterwards, so

``wrist_world = J0(β) + 1000 · trans`` (mm), ``R_global_cam = camrot · R_global_world``,
``root_cam = camrot · (wrist_world − campos)``.

handflow's hand models put the wrist at the origin, so the camera-frame hand is
``model(rotmats, betas, side).vertices + root_cam`` (the root-pivot correction).
"""

from __future__ import annotations

import torch
from torch import Tensor

from handflow.constants import NUM_MANO_JOINTS, Side, check_side
from handflow.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from handflow.hand.base import HandModel

__all__ = ["neuralannot_to_camera", "camera_to_neuralannot", "M_TO_MM"]

M_TO_MM = 1000.0


def _check(name: str, x: Tensor, shape: tuple[int, ...]) -> None:
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(f"{name} must be (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")


def neuralannot_to_camera(
    pose: Tensor, shape: Tensor, trans: Tensor, camrot: Tensor, campos: Tensor, model: HandModel, side: Side
) -> tuple[Tensor, Tensor, Tensor]:
    """World-frame NeuralAnnot parameters -> camera-frame ``(rotmats, betas, root_cam)``.

    Args:
        pose: (B, 48) axis-angle, finger part mean-relative.
        shape: (B, 10) betas.
        trans: (B, 3) metres, world frame.
        camrot: (B, 3, 3) world->camera rotation.
        campos: (B, 3) camera centre, world mm.
        model: the hand model the parameters belong to.
        side: ``"right"`` or ``"left"``.

    Returns:
        rotmats (B, 16, 3, 3) with the global orientation in the camera frame, betas (B, 10),
        root_cam (B, 3) camera-frame wrist in mm.
    """
    check_side(side)
    for n, x, s in (("pose", pose, (48,)), ("shape", shape, (10,)), ("trans", trans, (3,)), ("camrot", camrot, (3, 3)),
                    ("campos", campos, (3,))):
        _check(n, x, s)
    B = pose.shape[0]
    fingers = pose[:, 3:].reshape(B, NUM_MANO_JOINTS - 1, 3) + model.pose_mean(side).to(pose)
    R_world = axis_angle_to_matrix(pose[:, :3])
    rotmats = torch.cat([(camrot @ R_world)[:, None], axis_angle_to_matrix(fingers)], 1)
    wrist_world = model.rest_wrist(shape, side).to(pose) + M_TO_MM * trans
    root_cam = ((wrist_world - campos)[:, None] @ camrot.transpose(-1, -2))[:, 0]
    return rotmats, shape, root_cam


def camera_to_neuralannot(
    rotmats: Tensor, betas: Tensor, root_cam: Tensor, camrot: Tensor, campos: Tensor, model: HandModel, side: Side
) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of :func:`neuralannot_to_camera`: ``(pose (B,48), shape (B,10), trans (B,3) m)``."""
    check_side(side)
    for n, x, s in (("rotmats", rotmats, (16, 3, 3)), ("betas", betas, (10,)), ("root_cam", root_cam, (3,)),
                    ("camrot", camrot, (3, 3)), ("campos", campos, (3,))):
        _check(n, x, s)
    B = rotmats.shape[0]
    R_world = camrot.transpose(-1, -2) @ rotmats[:, 0]
    fingers = matrix_to_axis_angle(rotmats[:, 1:]) - model.pose_mean(side).to(rotmats)
    pose = torch.cat([matrix_to_axis_angle(R_world), fingers.reshape(B, -1)], 1)
    wrist_world = (root_cam[:, None] @ camrot)[:, 0] + campos
    trans = (wrist_world - model.rest_wrist(betas, side).to(rotmats)) / M_TO_MM
    return pose, betas, trans
