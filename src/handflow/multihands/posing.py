"""Posing many two-hand proposals fast (the engine's hot path).

For backends built like ``openhand`` (linear shape blend shapes, LBS, joints = kinematic
joints + skinned fingertip vertices, left hand = mirrored right hand) two shortcuts apply:

* :func:`pose_joints` is the backend's :meth:`~handflow.hand.HandModel.joints` (``openhand``
  skins only the five fingertip vertices; the cheap criteria need joints only);
* :func:`pose_meshes` skins the whole mesh with one GEMM of the skinning weights against the
  per-joint transforms and three fused multiply-adds, in a vertex-major layout (2–3× faster
  than the generic ``lbs`` on CPU, which builds a per-vertex 3×3 matrix and multiplies it with
  a batched matmul of tiny matrices).

Both equal the model's own forward pass (tested, float32 round-off). Any other backend
(``mano`` with its own left-hand model) falls back to ``model(...)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handflow.constants import MANO21_TO_IH, MANO_PARENTS, SIDES
from handflow.hand.base import HandModel, HandOutput, mirror_rotmats
from handflow.multihands.perturb import TwoHandState

__all__ = ["pose_joints", "pose_meshes", "pose_two_hands", "joints_two_hands", "has_fast_path"]

_MIRROR = (-1.0, 1.0, 1.0)


def has_fast_path(model: HandModel) -> bool:
    """True for backends whose joints are LBS joints + skinned tip vertices and whose left hand
    is the default mirror (``openhand``); others fall back to the full forward pass."""
    need = ("v_template", "shapedirs", "j_template", "j_shapedirs", "weights", "tip_vertices")
    return (getattr(model, "name", None) == "openhand" and not hasattr(model, "posedirs")
            and all(hasattr(model, a) for a in need) and type(model)._forward_left is HandModel._forward_left)


def _rest_joints(model: HandModel, b: Tensor) -> Tensor:
    dt = b.dtype
    return model.j_template.to(dt) + torch.einsum("jkl,bl->bjk", model.j_shapedirs.to(dt), b)


def pose_joints(model: HandModel, rotmats: Tensor, betas: Tensor, side: str) -> Tensor:
    """Joints only: (P, 21, 3) mm, wrist at the origin; the backend's own cheap path
    (:meth:`handflow.hand.HandModel.joints`, ``openhand``: only the fingertips are skinned)."""
    return model.joints(rotmats, betas, side)


#: proposals skinned together: keeps the (V, chunk, 12) skinning transforms cache-sized
#: (0.09 vs 0.16 ms per hand at chunk 128 vs 2000, openhand, one CPU thread)
MESH_CHUNK = 128


def pose_meshes(model: HandModel, rotmats: Tensor, betas: Tensor, side: str) -> HandOutput:
    """Full mesh and joints, like ``model(rotmats, betas, side)`` (wrist at the origin).

    Args:
        rotmats: (P, 16, 3, 3); betas: (P, 10); side: ``"right"`` or ``"left"``.
    """
    if not has_fast_path(model) or rotmats.shape[0] == 0:
        return model(rotmats, betas, side=side)
    if rotmats.shape[0] > MESH_CHUNK:
        parts = [_pose_meshes(model, rotmats[s : s + MESH_CHUNK], betas[s : s + MESH_CHUNK], side)
                 for s in range(0, rotmats.shape[0], MESH_CHUNK)]
        return HandOutput(torch.cat([p.vertices for p in parts]), torch.cat([p.joints for p in parts]))
    return _pose_meshes(model, rotmats, betas, side)


def _pose_meshes(model: HandModel, rotmats: Tensor, betas: Tensor, side: str) -> HandOutput:
    mirror = side == "left"
    R = mirror_rotmats(rotmats) if mirror else rotmats
    P, J = R.shape[:2]
    dt = R.dtype
    b = betas.to(dt)
    V = model.v_template.shape[0]
    # vertex-major rest shape (V, P, 3)
    vt = (model.shapedirs.to(dt).reshape(V * 3, -1) @ b.T).reshape(V, 3, P).transpose(1, 2)
    vt = vt + model.v_template.to(dt)[:, None]
    jr = _rest_joints(model, b)
    rot_g: list[Tensor] = []
    pos_g: list[Tensor] = []
    for j in range(J):
        p = MANO_PARENTS[j]
        if p < 0:
            rot_g.append(R[:, j])
            pos_g.append(jr[:, j])
        else:
            rot_g.append(rot_g[p] @ R[:, j])
            pos_g.append(pos_g[p] + (rot_g[p] @ (jr[:, j] - jr[:, p])[..., None])[..., 0])
    Rg, tg = torch.stack(rot_g, 1), torch.stack(pos_g, 1)
    t_skin = tg - (Rg @ jr[..., None])[..., 0]
    T = torch.cat([Rg.transpose(-1, -2).flatten(2), t_skin], -1)  # (P, J, 12): 3 columns, translation
    A = (model.weights.to(dt) @ T.transpose(0, 1).reshape(J, P * 12)).reshape(V, P, 12)
    verts = A[..., 9:12].clone()
    for c in range(3):
        verts.addcmul_(A[..., 3 * c : 3 * c + 3], vt[..., c : c + 1])
    verts = verts.transpose(0, 1)
    joints = torch.cat([tg, verts[:, model.tip_vertices]], 1)[:, list(MANO21_TO_IH)]
    if mirror:
        sign = torch.tensor(_MIRROR, dtype=dt, device=verts.device)
        verts, joints = verts * sign, joints * sign
    return HandOutput(verts, joints)


def pose_two_hands(model: HandModel, state: TwoHandState) -> tuple[Tensor, dict[str, HandOutput]]:
    """Pose both hands (full meshes) in the camera frame.

    Returns:
        joints (P, 42, 3) mm and per side the camera-frame :class:`HandOutput`.
    """
    outs = {
        side: pose_meshes(model, state.rotmats[:, h], state.betas[:, h], side).translate(state.root[:, h])
        for h, side in enumerate(SIDES)
    }
    return torch.cat([outs["right"].joints, outs["left"].joints], 1), outs


def joints_two_hands(model: HandModel, state: TwoHandState) -> Tensor:
    """Camera-frame joints of both hands without the meshes: (P, 42, 3) mm."""
    return torch.cat(
        [pose_joints(model, state.rotmats[:, h], state.betas[:, h], side) + state.root[:, h, None]
         for h, side in enumerate(SIDES)], 1)
