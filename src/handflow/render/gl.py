"""moderngl renderer on a headless EGL context (the fast path; Mesa llvmpipe on CPU).

One OpenGL context per process, created lazily on first use (forked DataLoader or
multiprocessing workers each create their own). Buffers and framebuffers are kept per
image size and rewritten for every frame. Outputs: shaded RGBA8, metric camera z (float32
attachment, 0 = background) and the face index + 1 (float32 attachment, exact below 2²⁴).
Everything else (hand id, part id) is derived from the face index by the caller, so both
backends share one definition.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from handflow.render.types import Light

__all__ = ["GLRasterizer", "gl_projection", "egl_available"]

NEAR_MM, FAR_MM = 10.0, 20000.0

_VS = """
#version 330
uniform mat4 P;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
out vec3 v_pos;
out vec3 v_normal;
out vec3 v_color;
void main() {
    v_pos = in_pos;
    v_normal = in_normal;
    v_color = in_color;
    gl_Position = P * vec4(in_pos, 1.0);
}
"""
_FS = """
#version 330
uniform vec3 light_dir;
uniform vec3 light_color;
uniform float ambient;
uniform float diffuse;
uniform float specular;
uniform float shininess;
in vec3 v_pos;
in vec3 v_normal;
in vec3 v_color;
layout(location = 0) out vec4 f_color;
layout(location = 1) out float f_depth;
layout(location = 2) out float f_face;
void main() {
    vec3 n = normalize(v_normal);
    vec3 view = normalize(-v_pos);
    if (dot(n, view) < 0.0) n = -n;
    vec3 l = normalize(light_dir);
    float lam = max(dot(n, l), 0.0);
    vec3 h = normalize(l + view);
    float spec = pow(max(dot(n, h), 0.0), shininess);
    vec3 rgb = v_color * light_color * (ambient + diffuse * lam) + specular * spec * light_color;
    f_color = vec4(clamp(rgb, 0.0, 1.0), 1.0);
    f_depth = v_pos.z;
    f_face = float(gl_PrimitiveID + 1);
}
"""


def gl_projection(K: np.ndarray, width: int, height: int, near: float = NEAR_MM, far: float = FAR_MM) -> np.ndarray:
    """OpenCV intrinsics (x right, y down, z forward) -> GL clip matrix whose framebuffer rows
    read back in image order (row 0 = top)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    return np.array(
        [
            [2 * fx / width, 0, 2 * cx / width - 1, 0],
            [0, 2 * fy / height, 2 * cy / height - 1, 0],
            [0, 0, (far + near) / (far - near), -2 * far * near / (far - near)],
            [0, 0, 1, 0],
        ],
        np.float32,
    )


_CTX: dict[int, object] = {}


def _preload_torch_extensions() -> None:
    """Load torchvision's native libraries before the first EGL context: importing
    torchvision *after* Mesa's EGL driver is loaded segfaults (seen with Mesa 22.3 llvmpipe and
    torchvision 0.29); loading it first is safe. A process that renders and then trains (the
    demo) would otherwise crash on its first ``import lightning``."""
    # lazy: only before the first EGL context (see above)
    try:
        import torchvision.ops  # noqa: F401
    except ImportError:
        pass


def _context() -> Any:
    # lazy: moderngl is the [render] extra
    import moderngl

    pid = os.getpid()
    if pid not in _CTX:
        _preload_torch_extensions()
        _CTX.clear()  # a forked child must not reuse the parent's context
        _CTX[pid] = moderngl.create_context(standalone=True, backend="egl", libgl="libGL.so.1", libegl="libEGL.so.1")
    return _CTX[pid]


def egl_available() -> bool:
    """True when a headless EGL OpenGL 3.3 context can be created in this process."""
    try:
        _context()
        return True
    except Exception:
        return False


class GLRasterizer:
    """Draws one set of concatenated meshes per call. Raises if EGL is unavailable."""

    def __init__(self, width: int, height: int) -> None:
        # lazy: moderngl is the [render] extra
        import moderngl

        self.ctx = _context()
        self.width, self.height = width, height
        self.prog = self.ctx.program(vertex_shader=_VS, fragment_shader=_FS)
        self.fbo = self.ctx.framebuffer(
            color_attachments=[
                self.ctx.renderbuffer((width, height), 4),
                self.ctx.renderbuffer((width, height), 1, dtype="f4"),
                self.ctx.renderbuffer((width, height), 1, dtype="f4"),
            ],
            depth_attachment=self.ctx.depth_renderbuffer((width, height)),
        )
        self._moderngl = moderngl
        self.vbo = self.ibo = self.vao = None
        self._sizes = (0, 0)

    def _buffers(self, nv: int, nf: int) -> None:
        if self._sizes != (nv, nf):
            for b in (self.vao, self.vbo, self.ibo):
                if b is not None:
                    b.release()
            self.vbo = self.ctx.buffer(reserve=nv * 9 * 4)
            self.ibo = self.ctx.buffer(reserve=nf * 3 * 4)
            self.vao = self.ctx.vertex_array(
                self.prog, [(self.vbo, "3f 3f 3f", "in_pos", "in_normal", "in_color")], index_buffer=self.ibo,
                index_element_size=4)
            self._sizes = (nv, nf)

    def draw(self, verts: Tensor, normals: Tensor, colors: Tensor, faces: Tensor, K: Tensor,
             light: Light) -> tuple[Tensor, Tensor, Tensor]:
        """verts/normals/colors (V,3), faces (F,3), K (3,3) ->
        (rgb (H,W,3) uint8, depth (H,W) float32, face_id (H,W) long, -1 = background)."""
        H, W = self.height, self.width
        self._buffers(len(verts), len(faces))
        data = torch.cat([verts, normals, colors], 1).to(torch.float32).contiguous().numpy()
        self.vbo.write(data.tobytes())
        self.ibo.write(faces.to(torch.int32).contiguous().numpy().tobytes())
        self.prog["P"].write(gl_projection(K.double().numpy(), W, H).T.copy().tobytes())
        self.prog["light_dir"].value = tuple(float(x) for x in light.direction)
        self.prog["light_color"].value = tuple(float(x) for x in light.color)
        for k in ("ambient", "diffuse", "specular", "shininess"):
            self.prog[k].value = float(getattr(light, k))
        self.fbo.use()
        self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self.ctx.enable(self._moderngl.DEPTH_TEST)
        self.ctx.disable(self._moderngl.CULL_FACE)
        self.vao.render(self._moderngl.TRIANGLES)
        rgb = np.frombuffer(self.fbo.read(components=3, attachment=0), np.uint8).reshape(H, W, 3)
        depth = np.frombuffer(self.fbo.read(components=1, attachment=1, dtype="f4"), np.float32).reshape(H, W)
        face = np.frombuffer(self.fbo.read(components=1, attachment=2, dtype="f4"), np.float32).reshape(H, W)
        return torch.from_numpy(rgb.copy()), torch.from_numpy(depth.copy()), torch.from_numpy(face.round().astype(np.int64) - 1)
