"""The hand-model interface shared by every backend, and a functional LBS core.

A hand model maps per-joint rotations and shape to a mesh and 21 joints:

Examples:
    >>> import torch
    >>> from handflow.hand import load_hand_model
    >>> model = load_hand_model("openhand")
    >>> rotmats, betas = torch.eye(3).expand(2, 16, 3, 3), torch.zeros(2, 10)   # (B,16,3,3), (B,10)
    >>> out = model(rotmats, betas, side="right")
    >>> out.vertices.shape   # (B,V,3) mm, wrist joint at the origin
    torch.Size([2, 2578, 3])
    >>> out.joints.shape, out.joints[0, 20].tolist()   # (B,21,3) mm, InterHand2.6M order (wrist = index 20)
    (torch.Size([2, 21, 3]), [0.0, 0.0, 0.0])

Rotations are MANO-style: ``rotmats[:, 0]`` is the global orientation, ``rotmats[:, 1:]``
the 15 finger joints in MANO order, each relative to its parent, all expressed in the
wrist's rest frame (MANO has no per-joint anatomical frames).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from handflow.constants import NUM_BETAS, NUM_MANO_JOINTS, Side, check_side

__all__ = ["HandOutput", "HandModel", "PosePrior", "lbs", "mirror_rotmats", "MIRROR"]

#: reflection x -> -x that maps a right hand onto a left hand
MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))


@dataclass
class HandOutput:
    """Posed hand.

    Attributes:
        vertices: (B, V, 3) mm.
        joints: (B, 21, 3) mm, InterHand2.6M order.
    """

    vertices: Tensor
    joints: Tensor

    def translate(self, t: Tensor) -> HandOutput:
        """Shift by ``t`` (B, 3) mm, e.g. a camera-frame wrist position."""
        return HandOutput(self.vertices + t[:, None], self.joints + t[:, None])


def mirror_rotmats(rotmats: Tensor) -> Tensor:
    """Conjugate by the x-reflection: ``M R M`` (*, 3, 3). Maps left-hand rotations to the
    right hand's convention and back (axis-angle ``(x, y, z) -> (x, −y, −z)``)."""
    sign = torch.tensor([-1.0, 1.0, 1.0], dtype=rotmats.dtype, device=rotmats.device)
    return rotmats * sign[:, None] * sign[None, :]


def lbs(
    v_shaped: Tensor,
    joints_rest: Tensor,
    rotmats: Tensor,
    parents: tuple[int, ...],
    weights: Tensor,
    pose_offsets: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Linear blend skinning (functional core shared by all backends).

    Args:
        v_shaped: (B, V, 3) rest-pose vertices after shape blend shapes.
        joints_rest: (B, J, 3) rest joint positions (rotation pivots).
        rotmats: (B, J, 3, 3) local rotations, root first.
        parents: length-J parent indices, ``parents[0] == -1``, parents before children.
        weights: (V, J) skinning weights (rows sum to 1).
        pose_offsets: optional (B, V, 3) pose-corrective offsets added before skinning.

    Returns:
        ``(vertices (B, V, 3), joints (B, J, 3))`` posed, the root joint staying at its
        rest position.
    """
    B, J = rotmats.shape[:2]
    if joints_rest.shape[1] != J or len(parents) != J:
        raise ValueError("lbs: joints_rest, rotmats and parents disagree on the joint count")
    v = v_shaped if pose_offsets is None else v_shaped + pose_offsets
    # global transforms G_j = G_parent @ [R_j | J_j - J_parent]
    rot_g: list[Tensor] = []
    pos_g: list[Tensor] = []
    for j in range(J):
        p = parents[j]
        if p < 0:
            rot_g.append(rotmats[:, j])
            pos_g.append(joints_rest[:, j])
        else:
            rot_g.append(rot_g[p] @ rotmats[:, j])
            pos_g.append(pos_g[p] + (rot_g[p] @ (joints_rest[:, j] - joints_rest[:, p])[..., None])[..., 0])
    Rg = torch.stack(rot_g, 1)  # (B, J, 3, 3)
    tg = torch.stack(pos_g, 1)  # (B, J, 3) posed joints
    # skinning transform maps rest points: x -> Rg (x - J_rest) + tg
    t_skin = tg - (Rg @ joints_rest[..., None])[..., 0]  # (B, J, 3)
    A = torch.einsum("vj,bjkl->bvkl", weights.to(v.dtype), Rg)  # (B, V, 3, 3)
    t = torch.einsum("vj,bjk->bvk", weights.to(v.dtype), t_skin)
    verts = (A @ v[..., None])[..., 0] + t
    return verts, tg


class PosePrior(nn.Module, ABC):
    """Prior over the 15 finger-joint rotations of one hand."""

    @abstractmethod
    def log_prob(self, rotmats: Tensor, side: Side = "right") -> Tensor:
        """rotmats (B, 15, 3, 3) MANO order -> (B,) log-likelihood (up to a constant)."""

    @abstractmethod
    def sample(self, n: int, side: Side = "right", generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` natural articulations: (n, 15, 3, 3)."""


class HandModel(nn.Module, ABC):
    """Common interface of the ``openhand`` and ``mano`` backends.

    Attributes:
        name: backend id written into datasets and checkpoints (``"openhand"``, ``"mano"``).
        faces: (F, 3) long, right hand, outward winding. Use :meth:`faces_for` for the left.
        part_labels: (V,) long, the MANO joint (0-15) that dominates each vertex's skinning.
        pose_prior: :class:`PosePrior` of this backend.
    """

    name: str
    pose_prior: PosePrior

    @property
    @abstractmethod
    def faces(self) -> Tensor: ...

    @property
    @abstractmethod
    def part_labels(self) -> Tensor: ...

    @property
    def num_vertices(self) -> int:
        return int(self.part_labels.shape[0])

    def faces_for(self, side: Side) -> Tensor:
        """(F, 3) faces with outward winding for ``side`` (mirroring flips the winding)."""
        return self.faces if check_side(side) == "right" else self.faces.flip(-1)

    def pose_mean(self, side: Side = "right") -> Tensor:
        """(15, 3) axis-angle mean pose added to *mean-relative* finger poses (InterHand2.6M
        NeuralAnnot stores ``pose[3:] − hands_mean``). MANO: ``hands_mean``; openhand: zeros."""
        check_side(side)
        return torch.zeros(NUM_MANO_JOINTS - 1, 3)

    def rest_wrist(self, betas: Tensor, side: Side = "right") -> Tensor:
        """(B, 3) mm: the wrist (pivot of the global rotation) of the shaped rest mesh in the
        model's *native* coordinates, before the wrist is moved to the origin. Needed to
        convert world-frame NeuralAnnot parameters (``trans`` is added after posing about
        this pivot). Default: the origin."""
        check_side(side)
        return torch.zeros(betas.shape[0], 3, dtype=betas.dtype, device=betas.device)

    @abstractmethod
    def _forward_right(self, rotmats: Tensor, betas: Tensor) -> HandOutput:
        """Right hand, inputs validated; wrist joint at the origin."""

    def _forward_left(self, rotmats: Tensor, betas: Tensor) -> HandOutput:
        """Default left hand: the mirror image of the right hand."""
        out = self._forward_right(mirror_rotmats(rotmats), betas)
        sign = torch.tensor([-1.0, 1.0, 1.0], dtype=out.vertices.dtype, device=out.vertices.device)
        return HandOutput(out.vertices * sign, out.joints * sign)

    def joints(self, rotmats: Tensor, betas: Tensor, side: Side = "right") -> Tensor:
        """Joints only: (B, 16, 3, 3), (B, 10) -> (B, 21, 3) mm, wrist at the origin; equals
        ``self(rotmats, betas, side).joints``. Backends override it with a cheaper path
        (``openhand`` skins only the five fingertip vertices); decoding and training use it."""
        return self(rotmats, betas, side=side).joints

    def forward(self, rotmats: Tensor, betas: Tensor, side: Side = "right") -> HandOutput:
        """Pose one hand.

        Args:
            rotmats: (B, 16, 3, 3) global orientation + 15 joints, MANO joint order.
            betas: (B, 10) shape parameters.
            side: ``"right"`` or ``"left"``.

        Returns:
            :class:`HandOutput` with vertices (B, V, 3) and joints (B, 21, 3) in mm, the
            wrist joint (index 20) at the origin.
        """
        check_side(side)
        validate_inputs(rotmats, betas)
        return self._forward_right(rotmats, betas) if side == "right" else self._forward_left(rotmats, betas)


def validate_inputs(rotmats: Tensor, betas: Tensor) -> None:
    """Raise a clear error for wrong shapes, mismatched batch sizes or non-finite values."""
    if rotmats.dim() != 4 or rotmats.shape[1:] != (NUM_MANO_JOINTS, 3, 3):
        raise ValueError(f"rotmats must be (B, {NUM_MANO_JOINTS}, 3, 3), got {tuple(rotmats.shape)}")
    if betas.dim() != 2 or betas.shape[1] != NUM_BETAS:
        raise ValueError(f"betas must be (B, {NUM_BETAS}), got {tuple(betas.shape)}")
    if rotmats.shape[0] != betas.shape[0]:
        raise ValueError(f"batch sizes differ: rotmats {rotmats.shape[0]} vs betas {betas.shape[0]}")
    if not torch.isfinite(rotmats).all():
        raise ValueError("rotmats contain NaN or inf")
    if not torch.isfinite(betas).all():
        raise ValueError("betas contain NaN or inf")
