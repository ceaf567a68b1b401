"""Geometry: rotation round trips, orthonormality, projection/crop commutation (float64)."""

from __future__ import annotations

import math

import torch
from conftest import random_rotmats
from hypothesis import given, settings
from hypothesis import strategies as st

from handflow.geometry import (
    axis_angle_to_matrix,
    camera_to_world,
    crop_intrinsics,
    crop_points,
    intrinsics,
    matrix_to_axis_angle,
    matrix_to_rot6d,
    project,
    root_to_uvs,
    rot6d_orthonormality_residual,
    rot6d_to_matrix,
    square_bbox,
    unproject,
    uvs_to_root,
    world_to_camera,
)

f64 = torch.float64
finite = st.floats(-1e3, 1e3, allow_nan=False)
vec3 = st.tuples(finite, finite, finite)


def _is_rotation(R: torch.Tensor, tol: float = 1e-10) -> bool:
    eye = torch.eye(3, dtype=R.dtype)
    return bool(((R.transpose(-1, -2) @ R - eye).abs().max() < tol) and ((torch.linalg.det(R) - 1).abs().max() < tol))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_rot6d_round_trip(seed: int) -> None:
    R = random_rotmats(8, torch.Generator().manual_seed(seed))
    assert torch.allclose(rot6d_to_matrix(matrix_to_rot6d(R)), R, atol=1e-12)


def test_rot6d_layout_is_first_two_columns() -> None:
    R = random_rotmats(4)
    d6 = matrix_to_rot6d(R)
    assert torch.equal(d6[:, :3], R[:, :, 0]) and torch.equal(d6[:, 3:], R[:, :, 1])


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=6, max_size=6))
def test_rot6d_to_matrix_is_rotation_for_any_input(x: list[float]) -> None:
    d6 = torch.tensor(x, dtype=f64)
    a1, a2 = d6[:3], d6[3:]
    if a1.norm() < 1e-3 or torch.linalg.cross(a1, a2).norm() < 1e-3 * a1.norm() * a2.norm().clamp_min(1e-3):
        return  # degenerate input: Gram-Schmidt undefined
    R = rot6d_to_matrix(d6)
    assert _is_rotation(R, 1e-9)
    # first column is the normalized first vector
    assert torch.allclose(R[:, 0], a1 / a1.norm(), atol=1e-12)


def test_orthonormality_residual() -> None:
    R = random_rotmats(5)
    assert rot6d_orthonormality_residual(matrix_to_rot6d(R)).abs().max() < 1e-12
    d6 = matrix_to_rot6d(R) * 2.0
    res = rot6d_orthonormality_residual(d6)
    assert torch.allclose(res, 3 * torch.eye(2, dtype=f64).expand(5, 2, 2), atol=1e-12)


@settings(max_examples=300, deadline=None)
@given(vec3, st.floats(0.0, math.pi - 1e-6))
def test_axis_angle_round_trip(axis: tuple[float, float, float], angle: float) -> None:
    a = torch.tensor(axis, dtype=f64)
    if a.norm() < 1e-6:
        return
    aa = a / a.norm() * angle
    R = axis_angle_to_matrix(aa)
    assert _is_rotation(R, 1e-10)
    back = matrix_to_axis_angle(R)
    assert torch.allclose(axis_angle_to_matrix(back), R, atol=1e-9)
    if angle < math.pi - 1e-3:
        assert torch.allclose(back, aa, atol=1e-7)


def test_axis_angle_stable_near_zero_and_pi() -> None:
    tiny = torch.tensor([[1e-12, -2e-12, 3e-13], [0.0, 0.0, 0.0], [1e-7, 0, 0]], dtype=f64, requires_grad=True)
    R = axis_angle_to_matrix(tiny)
    assert torch.isfinite(R).all()
    R.sum().backward()
    assert torch.isfinite(tiny.grad).all()
    back = matrix_to_axis_angle(R.detach())
    assert torch.allclose(back, tiny.detach(), atol=1e-14)
    # exactly pi and just below pi about several axes
    for angle in (math.pi, math.pi - 1e-9, math.pi - 1e-5):
        for ax in ([1, 0, 0], [0, 1, 0], [0.3, -0.5, 0.8]):
            a = torch.tensor(ax, dtype=f64)
            aa = a / a.norm() * angle
            R = axis_angle_to_matrix(aa)
            back = matrix_to_axis_angle(R)
            assert torch.allclose(axis_angle_to_matrix(back), R, atol=1e-9)
            assert abs(back.norm().item() - angle) < 1e-6


def test_axis_angle_matches_matrix_exponential() -> None:
    from handflow.geometry import skew

    aa = torch.randn(64, 3, dtype=f64) * 1.5
    assert torch.allclose(axis_angle_to_matrix(aa), torch.linalg.matrix_exp(skew(aa)), atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_world_camera_round_trip_and_convention(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    R = random_rotmats(1, g)[0]
    c = torch.randn(3, generator=g, dtype=f64) * 1000
    X = torch.randn(10, 3, generator=g, dtype=f64) * 100
    Xc = world_to_camera(X, R, c)
    assert torch.allclose(Xc, (R @ (X - c).T).T, atol=1e-9)  # InterHand: X_cam = R (X - c)
    assert torch.allclose(camera_to_world(Xc, R, c), X, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(200, 3000), st.floats(200, 3000), st.floats(0, 1000), st.floats(0, 1000),
    st.floats(-200, 600), st.floats(-200, 600), st.floats(20, 600), st.sampled_from([64, 128, 224]),
    st.integers(0, 2**31 - 1),
)  # fmt: skip
def test_projection_of_crop_equals_crop_of_projection(fx, fy, cx, cy, x0, y0, w, S, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    K = intrinsics(*(torch.tensor(v, dtype=f64) for v in (fx, fy, cx, cy)))
    X = torch.randn(21, 3, generator=g, dtype=f64) * 100 + torch.tensor([0, 0, 800.0], dtype=f64)
    bbox = torch.tensor([x0, y0, w, w], dtype=f64)
    lhs = project(X, crop_intrinsics(K, bbox, S), eps=0)
    rhs = crop_points(project(X, K, eps=0), bbox, S)
    assert torch.allclose(lhs, rhs, atol=1e-8 * max(1.0, lhs.abs().max().item()))


def test_unproject_inverts_project() -> None:
    K = intrinsics(*(torch.tensor(v, dtype=f64) for v in (1200.0, 1190.0, 160.0, 250.0)))
    X = torch.randn(3, 21, 3, dtype=f64) * 50 + torch.tensor([0, 0, 900.0], dtype=f64)
    back = unproject(project(X, K, eps=0), X[..., 2], K)
    assert torch.allclose(back, X, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([64, 128, 224]))
def test_root_parameterization_round_trip(seed: int, S: int) -> None:
    g = torch.Generator().manual_seed(seed)
    f = 300 + 2000 * torch.rand(4, generator=g, dtype=f64)
    K = intrinsics(f, f, S / 2 + 10 * torch.randn(4, generator=g, dtype=f64), S / 2 + torch.zeros(4, dtype=f64))
    root = torch.randn(4, 3, generator=g, dtype=f64) * 60 + torch.tensor([0, 0, 700.0], dtype=f64)
    uvs = root_to_uvs(root, K, S)
    assert torch.allclose(uvs_to_root(uvs, K, S), root, atol=1e-9)
    # u_n is the projected wrist in normalized crop units
    uv = project(root[:, None], K, eps=0)[:, 0]
    assert torch.allclose(uvs[:, :2], 2 * uv / S - 1, atol=1e-12)


def test_square_bbox_ignores_invalid_points() -> None:
    uv = torch.tensor([[0.0, 0.0], [10.0, 4.0], [1000.0, 1000.0]], dtype=f64)
    box = square_bbox(uv, torch.tensor([True, True, False]), scale=1.0)
    assert torch.allclose(box, torch.tensor([0.0, -3.0, 10.0, 10.0], dtype=f64))
