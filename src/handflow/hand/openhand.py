"""``openhand``: the embedded, openly licensed hand model (default backend).

A procedural adult right hand (no data files) with MANO's 16-joint tree and joint order,
10 shape parameters, a closed watertight surface (~2.6k vertices) and linear blend
skinning. Rest frame and rotation semantics match MANO's right hand (fingers towards −x,
thumb side +z, palm towards −y, flexion ≈ positive rotation about +z), so MANO-style
rotation parameters mean the same motion. Details and the anatomical axes:
``docs/openhand.md``.

>>> model = OpenHand()
>>> out = model(rotmats, betas, side="right")  # rotmats (B,16,3,3), betas (B,10)
>>> out.vertices.shape, out.joints.shape        # (B, V, 3), (B, 21, 3) mm
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from handflow.constants import FINGER_NAMES, MANO21_TO_IH, MANO_FINGERS, MANO_PARENTS, NUM_MANO_JOINTS
from handflow.hand.base import HandModel, HandOutput, PosePrior, lbs
from handflow.hand.openhand_mesh import PALM_NORMAL, build_template, rest_joints

__all__ = ["OpenHand", "anatomical_axes", "HAND_LENGTH_MM"]

def _unit_np(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


#: nominal hand length at β = 0: wrist joint to the middle fingertip surface point, mm
HAND_LENGTH_MM = 185.0


#: palmar direction of the thumb per level (CMC, MCP, IP): the CMC flexes towards the palm
#: (−y), the MCP and IP curl across it towards the fingers (−z), as the thumb nail faces
#: sideways
THUMB_PALMAR = (_unit_np((0.0, -1.0, -0.4)), _unit_np((0.0, -0.5, -1.0)), _unit_np((0.0, -0.5, -1.0)))


def anatomical_axes() -> Tensor:
    """(15, 3, 3) float64 anatomical frames of the 15 finger joints (MANO order 1..15) in the
    right hand's rest frame. Columns: ``[twist, spread, flex]``.

    * twist: the bone direction (joint -> child joint or tip);
    * flex: ``normalize(twist × palm_normal)`` (≈ +z for the four fingers): a positive
      rotation about it bends the finger towards the palm (−y);
    * spread: ``flex × twist`` mirrored so that a positive rotation moves the finger
      towards the thumb side (≈ +y for the fingers).

    For the thumb the palm normal is replaced by the thumb's own palmar direction
    (:data:`THUMB_PALMAR`), so positive flexion curls the thumb across the palm.
    """
    J, tips = rest_joints()
    frames = np.zeros((NUM_MANO_JOINTS - 1, 3, 3))
    for k, f in enumerate(FINGER_NAMES):
        js = MANO_FINGERS[f]
        for level, j in enumerate(js):
            normal = PALM_NORMAL if f != "thumb" else THUMB_PALMAR[level]
            end = J[js[level + 1]] if level < 2 else tips[k]
            twist = _unit(end - J[j])
            flex = _unit(np.cross(twist, normal))
            spread = np.cross(twist, flex)  # positive rotation towards the thumb side
            frames[j - 1] = np.stack([twist, spread, flex], 1)
    return torch.from_numpy(frames)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


class OpenHand(HandModel):
    """The open procedural hand. See the module docstring and ``docs/openhand.md``.

    Buffers (float32, moved with ``.to()``): ``v_template (V,3)``, ``shapedirs (V,3,10)``,
    ``j_template (16,3)``, ``j_shapedirs (16,3,10)``, ``weights (V,16)``.
    """

    name = "openhand"

    def __init__(self) -> None:
        super().__init__()
        T = build_template()

        def buf(name: str, a: np.ndarray, dtype: torch.dtype = torch.float32) -> None:
            self.register_buffer(name, torch.as_tensor(a, dtype=dtype), persistent=False)

        buf("v_template", T.vertices)
        buf("shapedirs", T.shapedirs)
        buf("j_template", T.joints)
        buf("j_shapedirs", T.joint_shapedirs)
        buf("weights", T.weights)
        buf("_faces", T.faces, torch.long)
        buf("_part_labels", T.weights.argmax(1), torch.long)
        buf("tip_vertices", T.tip_vertices, torch.long)
        buf("_ih_order", np.asarray(MANO21_TO_IH), torch.long)
        from handflow.hand.openhand_prior import OpenHandPrior

        self.pose_prior: PosePrior = OpenHandPrior()

    @property
    def faces(self) -> Tensor:
        return self._faces

    @property
    def part_labels(self) -> Tensor:
        return self._part_labels

    def shaped(self, betas: Tensor) -> tuple[Tensor, Tensor]:
        """Rest shape for ``betas`` (B, 10): ``(vertices (B, V, 3), joints (B, 16, 3))`` mm."""
        dt = betas.dtype
        v = self.v_template.to(dt) + torch.einsum("vkl,bl->bvk", self.shapedirs.to(dt), betas)
        j = self.j_template.to(dt) + torch.einsum("jkl,bl->bjk", self.j_shapedirs.to(dt), betas)
        return v, j

    def _forward_right(self, rotmats: Tensor, betas: Tensor) -> HandOutput:
        betas = betas.to(rotmats.dtype)
        v_shaped, j_rest = self.shaped(betas)
        verts, joints = lbs(v_shaped, j_rest, rotmats, MANO_PARENTS, self.weights)
        # wrist joint (rest position = origin for every β) stays at the origin
        mano21 = torch.cat([joints, verts[:, self.tip_vertices]], 1)
        return HandOutput(verts, mano21[:, self._ih_order])
