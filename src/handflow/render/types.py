"""Data types of the renderer."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Mesh", "Light", "RenderOutput"]


@dataclass
class Mesh:
    """A triangle mesh in the camera frame.

    Attributes:
        vertices: (V, 3) camera-frame mm (OpenCV: x right, y down, z forward).
        faces: (F, 3) long, outward winding (either winding rasterizes).
        color: (3,) RGB in [0, 1] (e.g. a skin tone).
        part_labels: (V,) long part id per vertex (e.g. MANO joint 0-15) or None.
        hand_id: integer id written to :attr:`RenderOutput.hand_id` (0 right, 1 left).
    """

    vertices: Tensor
    faces: Tensor
    color: Tensor | tuple[float, float, float] = (0.85, 0.65, 0.52)
    part_labels: Tensor | None = None
    hand_id: int = 0


@dataclass
class Light:
    """Directional light + ambient term; directions in the camera frame (towards the light)."""

    direction: tuple[float, float, float] = (0.3, -0.5, -1.0)
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: float = 0.35
    diffuse: float = 0.65
    specular: float = 0.12
    shininess: float = 24.0


@dataclass
class RenderOutput:
    """Per-pixel render of H×W pixels.

    Attributes:
        rgb: (H, W, 3) uint8.
        depth: (H, W) float32 camera z in mm, 0 = background.
        hand_id: (H, W) long, the front-most mesh's ``hand_id``, -1 = background.
        part_id: (H, W) long, part label of the nearest vertex of the hit face, -1 = background
            (or meshes without part labels).
        face_id: (H, W) long index into the concatenated faces of all meshes, -1 = background.
    """

    rgb: Tensor
    depth: Tensor
    hand_id: Tensor
    part_id: Tensor
    face_id: Tensor
    backend: str = field(default="torch")

    @property
    def mask(self) -> Tensor:
        """(H, W) bool foreground."""
        return self.face_id >= 0


def concat_meshes(meshes: list[Mesh]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Concatenate meshes: vertices (V,3) float32, faces (F,3), per-face mesh index (F,),
    per-vertex colour (V,3), per-vertex part (V,) (-1 if unlabelled)."""
    verts, faces, owner, colors, parts = [], [], [], [], []
    offset = 0
    for m, mesh in enumerate(meshes):
        v = torch.as_tensor(mesh.vertices, dtype=torch.float32).reshape(-1, 3)
        f = torch.as_tensor(mesh.faces, dtype=torch.long).reshape(-1, 3)
        if f.numel() and (int(f.max()) >= len(v) or int(f.min()) < 0):
            raise ValueError(f"mesh {m}: face indices out of range for {len(v)} vertices")
        if not torch.isfinite(v).all():
            raise ValueError(f"mesh {m}: vertices contain NaN or inf")
        verts.append(v)
        faces.append(f + offset)
        owner.append(torch.full((len(f),), m, dtype=torch.long))
        colors.append(torch.as_tensor(mesh.color, dtype=torch.float32).reshape(1, 3).expand(len(v), 3))
        parts.append(torch.as_tensor(mesh.part_labels, dtype=torch.long) if mesh.part_labels is not None
                     else torch.full((len(v),), -1, dtype=torch.long))
        offset += len(v)
    return torch.cat(verts), torch.cat(faces), torch.cat(owner), torch.cat(colors), torch.cat(parts)
