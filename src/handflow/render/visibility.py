"""Per-joint visibility from meshes (used by ``L_2D``, RR* and MultiHands).

**Rule.** Joint ``j`` of mesh ``m`` with camera-frame position ``X`` (depth ``z``) projecting
to pixel ``(u, v)`` is *visible* when

1. it projects inside the image (``0 ≤ u < W``, ``0 ≤ v < H``) and lies in front of the
   camera, and
2. in the 3×3 pixel neighbourhood of ``(⌊u⌋, ⌊v⌋)`` at least one pixel is covered by mesh
   ``m`` itself (its front-most surface belongs to ``m``: hand ownership) **and** that
   surface is not in front of the joint by more than ``tol_mm``:
   ``depth ≥ z − tol_mm``.

Joints lie *inside* the hand, under about a finger radius (8-12 mm) of tissue, and the
wrist and knuckles under half a palm thickness; ``tol_mm = 15`` (``DEFAULT_TOL_MM``) accepts
that while rejecting a joint hidden behind another part of the same hand (a finger folded
behind the palm puts the palm ≥ 20 mm in front of it) or behind the other hand
(ownership fails). The 3×3 window keeps thin fingers visible at low resolution, where a
joint's own pixel may fall just off the finger's silhouette.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handflow.render.raster import rasterize
from handflow.render.types import Mesh, RenderOutput, concat_meshes

__all__ = ["joint_visibility", "joint_visibility_batch", "DEFAULT_TOL_MM"]

DEFAULT_TOL_MM = 15.0
_OFFSETS = torch.tensor([(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def _visibility_from_maps(owner: Tensor, depth: Tensor, joints: Tensor, joint_mesh: Tensor, K: Tensor, tol_mm: float) -> Tensor:
    """Shared rule.

    Args:
        owner: (B, H, W) long, mesh index of the front-most surface, -1 = background.
        depth: (B, H, W) its depth, mm.
        joints: (B, N, 3) camera-frame joints.
        joint_mesh: (N,) long, mesh index of each joint.
        K: (B, 3, 3).

    Returns:
        (B, N) bool.
    """
    B, H, W = owner.shape
    z = joints[..., 2]
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    zs = z.clamp_min(1e-6)
    u = joints[..., 0] / zs * fx + cx
    v = joints[..., 1] / zs * fy + cy
    inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    iu, iv = u.floor().long(), v.floor().long()
    off = _OFFSETS.to(joints.device)
    pu = (iu[..., None] + off[:, 0]).clamp(0, W - 1)  # (B, N, 9)
    pv = (iv[..., None] + off[:, 1]).clamp(0, H - 1)
    b = torch.arange(B, device=joints.device)[:, None, None]
    own = owner[b, pv, pu] == joint_mesh[None, :, None]
    front = depth[b, pv, pu] >= (z[..., None] - tol_mm)
    return inside & (own & front).any(-1)


def _joint_mesh(counts: list[int], device: torch.device) -> Tensor:
    return torch.cat([torch.full((c,), m, dtype=torch.long, device=device) for m, c in enumerate(counts)])


def joint_visibility(
    meshes: list[Mesh],
    joints: list[Tensor],
    K: Tensor,
    size: tuple[int, int],
    render: RenderOutput | None = None,
    tol_mm: float = DEFAULT_TOL_MM,
) -> list[Tensor]:
    """Visibility of each mesh's joints in one image (rule in the module docstring).

    Args:
        meshes: the scene's meshes (camera frame, mm).
        joints: per mesh, (J_m, 3) camera-frame joints.
        K: (3, 3) intrinsics.
        size: ``(H, W)``.
        render: a :class:`RenderOutput` of exactly these meshes (its ``face_id`` and
            ``depth`` are reused); rasterized with PyTorch when None.
        tol_mm: depth tolerance.

    Returns:
        per mesh, (J_m,) bool.
    """
    if len(meshes) != len(joints):
        raise ValueError(f"joint_visibility: {len(meshes)} meshes but {len(joints)} joint sets")
    H, W = size
    K = torch.as_tensor(K, dtype=torch.float32)
    V, F, owner_of_face, _, _ = concat_meshes(meshes)
    if render is None:
        frags = rasterize(V, F, K, H, W)
        face_id, depth = frags.face_id[0], frags.depth[0].float()
    else:
        if render.face_id.shape != (H, W):
            raise ValueError(f"joint_visibility: render is {tuple(render.face_id.shape)}, size is {(H, W)}")
        face_id, depth = render.face_id, render.depth.float()
    owner = torch.where(face_id >= 0, owner_of_face[face_id.clamp_min(0)], torch.full_like(face_id, -1))
    J = torch.cat([torch.as_tensor(j, dtype=torch.float32).reshape(-1, 3) for j in joints])
    jm = _joint_mesh([len(j) for j in joints], J.device)
    vis = _visibility_from_maps(owner[None], depth[None], J[None], jm, K[None], tol_mm)[0]
    return list(vis.split([len(j) for j in joints]))


def _window_mask(joints: Tensor, query: Tensor, K: Tensor, H: int, W: int) -> Tensor:
    """(B, H, W) bool: the 3×3 windows (clamped like the rule) of the queried joints.
    joints (B, N, 3), query (B, N) bool, K (B, 3, 3)."""
    B = joints.shape[0]
    z = joints[..., 2].clamp_min(1e-6)
    u = joints[..., 0] / z * K[:, 0, 0, None] + K[:, 0, 2, None]
    v = joints[..., 1] / z * K[:, 1, 1, None] + K[:, 1, 2, None]
    big = float(max(H, W) + 2)
    iu, iv = u.clamp(-big, big).floor().long(), v.clamp(-big, big).floor().long()
    off = _OFFSETS.to(joints.device)
    pu = (iu[..., None] + off[:, 0]).clamp(0, W - 1)  # (B, N, 9)
    pv = (iv[..., None] + off[:, 1]).clamp(0, H - 1)
    b = torch.arange(B, device=joints.device)[:, None, None].expand_as(pu)
    q = query[..., None].expand_as(pu)
    mask = torch.zeros(B, H, W, dtype=torch.bool, device=joints.device)
    mask[b[q], pv[q], pu[q]] = True
    return mask


def joint_visibility_batch(
    vertices: Tensor | list[Tensor],
    faces: list[Tensor],
    joints: Tensor | list[Tensor],
    K: Tensor,
    size: tuple[int, int],
    tol_mm: float = DEFAULT_TOL_MM,
    query: Tensor | list[Tensor] | None = None,
) -> Tensor:
    """The same rule for B scenes of M meshes at once (PyTorch rasterizer, CPU or GPU).

    Args:
        vertices: (B, M, V, 3) or a list of M tensors (B, V_m, 3), camera frame mm.
        faces: list of M (F_m, 3) long (shared by the batch).
        joints: (B, M, J, 3) or a list of M tensors (B, J, 3).
        K: (B, 3, 3) intrinsics.
        size: ``(H, W)``.
        tol_mm: depth tolerance.
        query: optional (B, M, J) bool or a list of M (B, J): only these joints are needed;
            only their 3×3 windows are rasterized (same answers for them, several times
            faster; the other joints' answers are meaningless).

    Returns:
        (B, M, J) bool.
    """
    verts = list(vertices.unbind(1)) if isinstance(vertices, Tensor) else list(vertices)
    jts = list(joints.unbind(1)) if isinstance(joints, Tensor) else list(joints)
    if not (len(verts) == len(faces) == len(jts)):
        raise ValueError("joint_visibility_batch: vertices, faces and joints disagree on the mesh count M")
    H, W = size
    B = verts[0].shape[0]
    offsets, fs, owner_of_face = 0, [], []
    for m, (v, f) in enumerate(zip(verts, faces)):
        fs.append(f.to(v.device) + offsets)
        owner_of_face.append(torch.full((len(f),), m, dtype=torch.long, device=v.device))
        offsets += v.shape[1]
    V = torch.cat(verts, 1)
    F = torch.cat(fs)
    Jn = [j.shape[1] for j in jts]
    J = torch.cat(jts, 1)
    mask = None
    if query is not None:
        qs = list(query.unbind(1)) if isinstance(query, Tensor) else list(query)
        mask = _window_mask(J, torch.cat(qs, 1).to(J.device), K.to(J.dtype), H, W)
    frags = rasterize(V, F, K, H, W, pixel_mask=mask)
    ofc = torch.cat(owner_of_face)
    owner = torch.where(frags.face_id >= 0, ofc[frags.face_id.clamp_min(0)], torch.full_like(frags.face_id, -1))
    jm = _joint_mesh(Jn, J.device)
    vis = _visibility_from_maps(owner, frags.depth.to(J.dtype), J, jm, K.to(J.dtype), tol_mm)
    if len(set(Jn)) != 1:
        raise ValueError("joint_visibility_batch: every mesh needs the same joint count J to return (B, M, J)")
    return vis.reshape(B, len(jts), Jn[0])
