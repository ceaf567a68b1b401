"""``openhand``: the embedded, openly licensed hand model (default backend).

A procedural adult right hand (no data files) with MANO's 16-joint tree and joint order,
10 shape parameters, a closed watertight surface (~2.6k vertices) and linear blend
skinning. Rest frame and rotation semantics match MANO's right hand (fingers towards −x,
thumb side +z, palm towards −y, flexion ≈ positive rotation about +z), so MANO-style
rotation parameters mean the same motion. Details and the anatomical axes:
``docs/openhand.md``.

Examples:
    >>> import torch
    >>> model = OpenHand()
    >>> out = model(torch.eye(3).expand(4, 16, 3, 3), torch.zeros(4, 10), side="right")  # rotmats (B,16,3,3), betas (B,10)
    >>> out.vertices.shape, out.joints.shape        # (B, V, 3), (B, 21, 3) mm
    (torch.Size([4, 2578, 3]), torch.Size([4, 21, 3]))
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from handflow.constants import MANO21_TO_IH, MANO_PARENTS, Side, check_side
from handflow.hand.base import HandModel, HandOutput, PosePrior, lbs, mirror_rotmats
from handflow.hand.openhand_mesh import THUMB_PALMAR, anatomical_axes, build_template
from handflow.hand.openhand_prior import OpenHandPrior

__all__ = ["OpenHand", "anatomical_axes", "HAND_LENGTH_MM", "THUMB_PALMAR"]  # the axes live in openhand_mesh

#: the left hand is the right hand mirrored in x
_MIRROR = (-1.0, 1.0, 1.0)

#: nominal hand length at β = 0: wrist joint to the middle fingertip surface point, mm
HAND_LENGTH_MM = 185.0


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

    def joints(self, rotmats: Tensor, betas: Tensor, side: Side = "right") -> Tensor:
        """Joints only, (B, 16, 3, 3), (B, 10) -> (B, 21, 3) mm: the kinematic joints and the five
        fingertip vertices, skinned without the rest of the mesh (about an order of magnitude
        cheaper than the forward pass, equal to its ``joints``; tested). Inputs are not
        validated (the hot path of decoding and MultiHands)."""
        mirror = check_side(side) == "left"
        R = mirror_rotmats(rotmats) if mirror else rotmats
        dt = R.dtype
        b = betas.to(dt)
        tips = self.tip_vertices
        v_tips = self.v_template[tips].to(dt) + torch.einsum("vkl,bl->bvk", self.shapedirs[tips].to(dt), b)
        j_rest = self.j_template.to(dt) + torch.einsum("jkl,bl->bjk", self.j_shapedirs.to(dt), b)
        v, j = lbs(v_tips, j_rest, R, MANO_PARENTS, self.weights[tips])
        out = torch.cat([j, v], 1)[:, self._ih_order]
        return out * torch.tensor(_MIRROR, dtype=dt, device=out.device) if mirror else out

    def _forward_right(self, rotmats: Tensor, betas: Tensor) -> HandOutput:
        betas = betas.to(rotmats.dtype)
        v_shaped, j_rest = self.shaped(betas)
        verts, joints = lbs(v_shaped, j_rest, rotmats, MANO_PARENTS, self.weights)
        # wrist joint (rest position = origin for every β) stays at the origin
        mano21 = torch.cat([joints, verts[:, self.tip_vertices]], 1)
        return HandOutput(verts, mano21[:, self._ih_order])
