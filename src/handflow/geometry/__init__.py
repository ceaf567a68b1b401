"""Batched geometry: rotations (6D, axis-angle), pinhole cameras, crops, root parameterization."""

from handflow.geometry.camera import (
    camera_to_world,
    crop_intrinsics,
    crop_points,
    intrinsics,
    project,
    square_bbox,
    unproject,
    world_to_camera,
)
from handflow.geometry.root import root_to_uvs, uvs_to_root
from handflow.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rot6d,
    rot6d_orthonormality_residual,
    rot6d_to_matrix,
    skew,
)

__all__ = [
    "axis_angle_to_matrix",
    "camera_to_world",
    "crop_intrinsics",
    "crop_points",
    "intrinsics",
    "matrix_to_axis_angle",
    "matrix_to_rot6d",
    "project",
    "root_to_uvs",
    "rot6d_orthonormality_residual",
    "rot6d_to_matrix",
    "skew",
    "square_bbox",
    "unproject",
    "uvs_to_root",
    "world_to_camera",
]
