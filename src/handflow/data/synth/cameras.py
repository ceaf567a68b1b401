"""A dome of pinhole cameras looking at the hands, as in the InterHand2.6M capture studio.

Conventions (``docs/conventions.md``, ``reference/formats.md`` 1.4/1.7): world frame in mm
with **+z up**; each camera has ``camrot`` (3, 3) world→camera and ``campos`` (3,) its centre,
``X_cam = camrot (X − campos)``; the camera frame is OpenCV (x right, y down, z forward).
Intrinsics are ``focal = (fx, fy)`` and ``princpt = (cx, cy)`` in pixels of the stored
(square ``S × S``) image.

The dome covers the upper hemisphere and a band below the horizon (elevations
``ELEVATION_RANGE_DEG``), the azimuths follow the golden angle so any number of cameras is
spread evenly, every position gets a small jitter, and each camera gets a small random
roll about its optical axis. The focal length is chosen per camera so that a field of
``field_mm`` (random in ``FIELD_RANGE_MM``) at the dome's centre spans the image width:
hands are about the same size in every view whatever the camera's distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Camera",
    "dome_cameras",
    "look_at",
    "camera_name",
    "ELEVATION_RANGE_DEG",
    "RADIUS_RANGE_MM",
    "FIELD_RANGE_MM",
    "MAX_ROLL_DEG",
]

#: elevations of the dome cameras (degrees above the horizontal plane through the target)
ELEVATION_RANGE_DEG = (-30.0, 78.0)
#: camera distances to the dome's centre (mm)
RADIUS_RANGE_MM = (550.0, 1000.0)
#: width of the field of view at the target distance (mm); hands span ~150–350 mm
FIELD_RANGE_MM = (380.0, 520.0)
#: roll about the optical axis, uniform in ± this (degrees)
MAX_ROLL_DEG = 8.0
#: angular jitter of each camera position around its stratified slot (degrees)
POSITION_JITTER_DEG = 4.0
#: the real dataset names cameras with 6-digit strings such as ``"400026"``
CAMERA_NAME_BASE = 400001
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
WORLD_UP = (0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Camera:
    """One calibrated camera.

    Attributes:
        name: camera id (str, as in the real files, e.g. ``"400003"``).
        campos: (3,) float64 centre in world mm.
        camrot: (3, 3) float64 world→camera rotation (rows: camera x, y, z axes in world).
        focal: ``(fx, fy)`` pixels.
        princpt: ``(cx, cy)`` pixels.
    """

    name: str
    campos: Tensor
    camrot: Tensor
    focal: tuple[float, float]
    princpt: tuple[float, float]

    @property
    def K(self) -> Tensor:
        """(3, 3) float64 intrinsics."""
        fx, fy = self.focal
        cx, cy = self.princpt
        return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)

    def world_to_camera(self, X: Tensor) -> Tensor:
        """(*, N, 3) world mm -> (*, N, 3) camera mm, ``R (X − c)``."""
        R = self.camrot.to(X.dtype)
        return (X - self.campos.to(X.dtype)) @ R.T

    def to_json(self) -> dict[str, list]:
        """``{"campos": [3], "camrot": [[3]x3], "focal": [2], "princpt": [2]}`` (plain floats)."""
        return {
            "campos": [float(v) for v in self.campos.tolist()],
            "camrot": [[float(v) for v in row] for row in self.camrot.tolist()],
            "focal": [float(self.focal[0]), float(self.focal[1])],
            "princpt": [float(self.princpt[0]), float(self.princpt[1])],
        }


def camera_name(index: int) -> str:
    """Camera id string for the ``index``-th dome camera (``"400001"``, ``"400002"``, ...)."""
    if index < 0:
        raise ValueError(f"camera index must be >= 0, got {index}")
    return str(CAMERA_NAME_BASE + index)


def look_at(campos: Tensor, target: Tensor, roll: float = 0.0) -> Tensor:
    """World→camera rotation (3, 3) float64 of an OpenCV camera at ``campos`` (3,) looking
    at ``target`` (3,), image "up" (−y) as close to world +z as possible, then rolled by
    ``roll`` radians about the optical axis.

    Raises:
        ValueError: if the camera sits on the target or looks straight up/down.
    """
    c = campos.to(torch.float64)
    z = target.to(torch.float64) - c
    n = torch.linalg.norm(z)
    if n < 1e-9:
        raise ValueError("look_at: the camera centre coincides with the target")
    z = z / n
    down = -torch.tensor(WORLD_UP, dtype=torch.float64)
    y = down - (down @ z) * z
    ny = torch.linalg.norm(y)
    if ny < 1e-6:
        raise ValueError("look_at: the viewing direction is parallel to the world up axis (+z)")
    y = y / ny
    x = torch.linalg.cross(y, z)
    ca, sa = math.cos(roll), math.sin(roll)
    x, y = ca * x + sa * y, -sa * x + ca * y
    return torch.stack([x, y, z], 0)


def dome_cameras(
    n: int,
    image_size: int,
    generator: torch.Generator,
    target: Tensor | None = None,
) -> list[Camera]:
    """``n`` cameras on a dome around ``target`` (3,) world mm (default the origin).

    Args:
        n: number of cameras (>= 1).
        image_size: ``S``; images are ``S × S`` with the principal point near the centre.
        generator: torch RNG (one per capture: cameras differ slightly between captures).
        target: point every camera looks at.

    Returns:
        list of :class:`Camera`, names ``camera_name(0..n-1)``.
    """
    if n < 1:
        raise ValueError(f"need at least one camera, got {n}")
    if image_size < 8:
        raise ValueError(f"image size must be >= 8 px, got {image_size}")
    tgt = torch.zeros(3, dtype=torch.float64) if target is None else target.to(torch.float64)
    lo, hi = (math.sin(math.radians(e)) for e in ELEVATION_RANGE_DEG)
    u = torch.rand(n, 6, generator=generator, dtype=torch.float64)
    az0 = float(u[0, 5]) * 2 * math.pi
    cams: list[Camera] = []
    jit = math.radians(POSITION_JITTER_DEG)
    for k in range(n):
        s = lo + (hi - lo) * (k + 0.5) / n  # stratified in sin(elevation): equal-area bands
        elev = math.asin(s) + jit * (2 * float(u[k, 0]) - 1)
        elev = min(max(elev, math.radians(ELEVATION_RANGE_DEG[0])), math.radians(ELEVATION_RANGE_DEG[1]))
        az = az0 + k * GOLDEN_ANGLE + jit * (2 * float(u[k, 1]) - 1)
        radius = RADIUS_RANGE_MM[0] + (RADIUS_RANGE_MM[1] - RADIUS_RANGE_MM[0]) * float(u[k, 2])
        direction = torch.tensor(
            [math.cos(elev) * math.cos(az), math.cos(elev) * math.sin(az), math.sin(elev)], dtype=torch.float64
        )
        campos = tgt + radius * direction
        roll = math.radians(MAX_ROLL_DEG) * (2 * float(u[k, 3]) - 1)
        R = look_at(campos, tgt, roll)
        field = FIELD_RANGE_MM[0] + (FIELD_RANGE_MM[1] - FIELD_RANGE_MM[0]) * float(u[k, 4])
        f = image_size * radius / field
        c = image_size / 2.0
        cams.append(Camera(camera_name(k), campos, R, (f, f), (c, c)))
    return cams
