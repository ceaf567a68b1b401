"""Rendering of hand meshes: RGB, metric depth, hand id, part id and face id per pixel.

>>> import torch
>>> from handflow.render import Mesh, Renderer
>>> v = torch.tensor([[-20.0, -20, 300], [20, -20, 300], [0, 20, 300]])  # one triangle, camera frame, mm
>>> f = torch.tensor([[0, 1, 2]])
>>> K = torch.tensor([[200.0, 0, 64], [0, 200, 64], [0, 0, 1]])
>>> r = Renderer(128, 128)                       # "auto": moderngl/EGL, else PyTorch
>>> out = r.render([Mesh(vertices=v, faces=f, color=(0.8, 0.6, 0.5), hand_id=0)], K)
>>> out.rgb.shape, out.depth.shape, out.hand_id.shape   # (H,W,3) uint8, (H,W) mm, (H,W) long
(torch.Size([128, 128, 3]), torch.Size([128, 128]), torch.Size([128, 128]))
>>> float(out.depth[64, 64]), int(out.hand_id[64, 64]), int(out.hand_id[0, 0])  # background: -1
(300.0, 0, -1)

Two backends share one definition of every output: :mod:`handflow.render.gl` (moderngl on
a headless EGL context, the fast path) and :mod:`handflow.render.raster` (a pure-PyTorch
z-buffer, the fallback and the test oracle). ``backend="auto"`` falls back to PyTorch with
one logged warning per process when EGL is unavailable. Pixel convention and frames:
``docs/conventions.md``; visibility rule: :mod:`handflow.render.visibility`.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import Tensor

from handflow.errors import MissingExtraError
from handflow.render.gl import GLRasterizer
from handflow.render.raster import Fragments, rasterize
from handflow.render.shading import random_light, random_skin_tone, shade, vertex_normals
from handflow.render.types import Light, Mesh, RenderOutput, concat_meshes

__all__ = ["Renderer", "Mesh", "Light", "RenderOutput", "Fragments", "rasterize", "random_light", "random_skin_tone"]

log = logging.getLogger(__name__)
_WARNED: set[int] = set()
BACKENDS = ("auto", "gl", "torch")


class Renderer:
    """Renders meshes under a pinhole camera.

    Args:
        width, height: image size in pixels (any size; 64-512 typical).
        backend: ``"auto"`` (GL if EGL works, else torch), ``"gl"`` or ``"torch"``.
    """

    def __init__(self, width: int, height: int, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown render backend {backend!r}: expected one of {BACKENDS}")
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self._gl = None
        if backend in ("auto", "gl"):
            try:
                self._gl = GLRasterizer(self.width, self.height)
            except Exception as e:
                if backend == "gl" and isinstance(e, ImportError) and e.name == "moderngl":
                    raise MissingExtraError("backend='gl' needs moderngl: install handflow[render] (pip install "
                                            "'handflow[render]') or use backend='torch'", name="moderngl") from None
                if backend == "gl":
                    raise RuntimeError(
                        f"the moderngl/EGL renderer is unavailable ({type(e).__name__}: {e}); install the EGL/Mesa "
                        "runtime (libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri) or use backend='torch'"
                    ) from e
                if os.getpid() not in _WARNED:
                    _WARNED.add(os.getpid())
                    log.warning("EGL rendering unavailable (%s: %s); falling back to the PyTorch rasterizer", type(e).__name__, e)
        self.backend = "gl" if self._gl is not None else "torch"

    def render(
        self,
        meshes: list[Mesh],
        K: Tensor,
        background: np.ndarray | Tensor | None = None,
        light: Light | None = None,
    ) -> RenderOutput:
        """Render ``meshes``.

        Args:
            meshes: meshes in the camera frame (mm).
            K: (3, 3) intrinsics in pixels of this image size.
            background: (H, W, 3) uint8 image behind the meshes (black if None).
            light: lighting (a fixed default if None).

        Returns:
            :class:`RenderOutput`.
        """
        if not meshes:
            raise ValueError("render: no meshes given")
        K = torch.as_tensor(K, dtype=torch.float32)
        if K.shape != (3, 3):
            raise ValueError(f"render: K must be (3, 3), got {tuple(K.shape)}")
        light = light or Light()
        H, W = self.height, self.width
        V, F, owner, colors, parts = concat_meshes(meshes)
        normals = vertex_normals(V, F)
        if self._gl is not None:
            rgb, depth, face_id = self._gl.draw(V, normals, colors, F, K, light)
        else:
            frags = rasterize(V, F, K, H, W)
            face_id, depth = frags.face_id[0], frags.depth[0].to(torch.float32)
            hit = face_id >= 0
            tri = F[face_id[hit]]
            b = frags.bary[0][hit][..., None]
            col = shade((normals[tri] * b).sum(1), (V[tri] * b).sum(1), (colors[tri] * b).sum(1), light)
            rgb = torch.zeros(H, W, 3, dtype=torch.uint8)
            rgb[hit] = (col * 255).round().to(torch.uint8)
        hit = face_id >= 0
        hand_ids = torch.tensor([m.hand_id for m in meshes], dtype=torch.long)
        face_part = parts[F[:, 0]]
        safe = face_id.clamp_min(0)
        hand_id = torch.where(hit, hand_ids[owner[safe]], torch.full_like(face_id, -1))
        part_id = torch.where(hit, face_part[safe], torch.full_like(face_id, -1))
        if background is not None:
            bg = torch.as_tensor(np.asarray(background), dtype=torch.uint8)
            if bg.shape != (H, W, 3):
                raise ValueError(f"render: background must be ({H}, {W}, 3) uint8, got {tuple(bg.shape)}")
            rgb = torch.where(hit[..., None], rgb, bg)
        return RenderOutput(rgb=rgb, depth=torch.where(hit, depth, torch.zeros_like(depth)), hand_id=hand_id,
                            part_id=part_id, face_id=face_id, backend=self.backend)
