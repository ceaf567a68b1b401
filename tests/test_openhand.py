"""openhand: shapes, rest pose, watertight surface, LBS against an independent float64
oracle, MANO-compatible axis semantics, shape range, mirroring, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from handflow.constants import (
    FINGER_NAMES,
    IH_TIPS,
    IH_WRIST,
    MANO21_TO_IH,
    MANO_FINGERS,
    MANO_PARENTS,
    NUM_BETAS,
    NUM_MANO_JOINTS,
)
from handflow.geometry import axis_angle_to_matrix
from handflow.hand import OpenHand, mirror_rotmats
from handflow.hand.openhand import HAND_LENGTH_MM, anatomical_axes
from tests.conftest import random_rotmats

MIDDLE_TIP = IH_TIPS[FINGER_NAMES.index("middle")]


@pytest.fixture(scope="module")
def model() -> OpenHand:
    return OpenHand()


def _identity(B: int, dtype=torch.float64) -> torch.Tensor:
    return torch.eye(3, dtype=dtype).expand(B, NUM_MANO_JOINTS, 3, 3).clone()


def _random_pose(B: int, gen: torch.Generator, scale: float = 0.5) -> torch.Tensor:
    aa = scale * torch.randn(B, NUM_MANO_JOINTS, 3, generator=gen, dtype=torch.float64)
    return axis_angle_to_matrix(aa)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_and_wrist_at_origin(model, gen, dtype):
    B = 3
    out = model(_random_pose(B, gen).to(dtype), torch.randn(B, NUM_BETAS, generator=gen, dtype=torch.float64).to(dtype))
    assert out.vertices.shape == (B, model.num_vertices, 3) and out.vertices.dtype == dtype
    assert out.joints.shape == (B, 21, 3) and out.joints.dtype == dtype
    assert torch.allclose(out.joints[:, IH_WRIST], torch.zeros(B, 3, dtype=dtype), atol=1e-4)
    assert 1000 <= model.num_vertices <= 3000
    assert model.faces.dtype == torch.long and model.part_labels.shape == (model.num_vertices,)
    assert set(model.part_labels.tolist()) == set(range(NUM_MANO_JOINTS))


def test_zero_pose_gives_rest_joints(model):
    out = model(_identity(1), torch.zeros(1, NUM_BETAS, dtype=torch.float64))
    j16 = model.j_template.double()
    tips = model.v_template.double()[model.tip_vertices]
    expected = torch.cat([j16, tips])[list(MANO21_TO_IH)]
    assert torch.allclose(out.joints[0], expected, atol=1e-5)
    assert torch.allclose(out.vertices[0], model.v_template.double(), atol=1e-5)


def _watertight(V: torch.Tensor, F: torch.Tensor) -> None:
    directed = torch.cat([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])
    und, counts = torch.unique(directed.sort(1).values, dim=0, return_counts=True)
    assert (counts == 2).all(), "every edge must be shared by exactly two faces"
    assert len(torch.unique(directed, dim=0)) == len(directed), "inconsistent winding"
    assert V.shape[0] - und.shape[0] + F.shape[0] == 2, "Euler characteristic must be 2"
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    vol = (a * torch.linalg.cross(b, c)).sum() / 6
    assert vol > 2e5, f"signed volume {vol:.0f} mm^3 must be positive (outward) and hand-sized"


@pytest.mark.parametrize("side", ["right", "left"])
def test_watertight_outward_both_sides(model, gen, side):
    rot = _random_pose(1, gen, 0.2)
    out = model(rot, torch.zeros(1, NUM_BETAS, dtype=torch.float64), side=side)
    _watertight(out.vertices[0], model.faces_for(side))


def _oracle_lbs(v, j, rot, weights, parents):
    """Independent float64 LBS: per vertex, the weighted sum of rigid chain transforms
    built with 4x4 homogeneous matrices, one vertex at a time."""
    J = len(parents)
    G = []
    for k in range(J):
        T = torch.eye(4, dtype=torch.float64)
        T[:3, :3] = rot[k]
        T[:3, 3] = j[k] - (j[parents[k]] if parents[k] >= 0 else 0.0)
        G.append(T if parents[k] < 0 else G[parents[k]] @ T)
    # remove the rest pose: A_k = G_k @ translate(-j_k)
    A = []
    for k in range(J):
        U = torch.eye(4, dtype=torch.float64)
        U[:3, 3] = -j[k]
        A.append(G[k] @ U)
    out = torch.zeros_like(v)
    for i in range(v.shape[0]):
        M = sum(weights[i, k] * A[k] for k in range(J))
        out[i] = (M @ torch.cat([v[i], torch.ones(1, dtype=torch.float64)]))[:3]
    joints = torch.stack([G[k][:3, 3] for k in range(J)])
    return out, joints


def test_lbs_matches_independent_oracle(model, gen):
    rot = _random_pose(1, gen, 0.6)
    betas = torch.randn(1, NUM_BETAS, generator=gen, dtype=torch.float64)
    out = model(rot, betas)
    S = model.shapedirs.double()
    v_shaped = model.v_template.double() + (S * betas[0]).sum(-1)
    j_shaped = model.j_template.double() + (model.j_shapedirs.double() * betas[0]).sum(-1)
    sub = torch.arange(0, model.num_vertices, 7)
    v_exp, j_exp = _oracle_lbs(v_shaped[sub], j_shaped, rot[0], model.weights.double()[sub], MANO_PARENTS)
    assert torch.allclose(out.vertices[0, sub], v_exp, atol=1e-3)
    mano_to_ih = [MANO21_TO_IH.index(m) for m in range(NUM_MANO_JOINTS)]
    assert torch.allclose(out.joints[0, mano_to_ih], j_exp, atol=1e-3)


def test_global_rotation_is_rigid_about_wrist(model, gen):
    pose = _random_pose(1, gen, 0.4)
    betas = torch.randn(1, NUM_BETAS, generator=gen, dtype=torch.float64)
    R = random_rotmats(1, gen)
    rotated = pose.clone()
    rotated[:, 0] = R @ pose[:, 0]
    a, b = model(pose, betas), model(rotated, betas)
    assert torch.allclose(b.vertices[0], a.vertices[0] @ R[0].T, atol=1e-4)
    assert torch.allclose(b.joints[0], a.joints[0] @ R[0].T, atol=1e-4)


def _length(model, betas: torch.Tensor) -> torch.Tensor:
    """Hand length: wrist joint to the middle fingertip surface point (rest pose)."""
    out = model(_identity(betas.shape[0]), betas)
    return (out.joints[:, MIDDLE_TIP] - out.joints[:, IH_WRIST]).norm(dim=-1)


def test_hand_length_and_beta_range(model, gen):
    zero = _length(model, torch.zeros(1, NUM_BETAS, dtype=torch.float64))
    assert 180.0 <= zero.item() <= 190.0 and abs(zero.item() - HAND_LENGTH_MM) < 3.0
    size = torch.zeros(2, NUM_BETAS, dtype=torch.float64)
    size[:, 0] = torch.tensor([1.0, -1.0])
    rel = _length(model, size) / zero - 1
    assert 0.05 <= rel[0] <= 0.07 and -0.07 <= rel[1] <= -0.05
    # beta ~ N(0, I): spread of hand length of a few percent, no degenerate hands
    lengths = _length(model, torch.randn(256, NUM_BETAS, generator=gen, dtype=torch.float64))
    cv = (lengths.std() / lengths.mean()).item()
    assert 0.04 <= cv <= 0.09
    assert lengths.min() > 0.7 * zero and lengths.max() < 1.3 * zero  # ~4 sigma


def test_left_is_mirror_of_right(model, gen):
    rot = _random_pose(2, gen, 0.5)
    betas = torch.randn(2, NUM_BETAS, generator=gen, dtype=torch.float64)
    right = model(rot, betas, side="right")
    left = model(mirror_rotmats(rot), betas, side="left")
    sign = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.allclose(left.vertices, right.vertices * sign, atol=1e-5)
    assert torch.allclose(left.joints, right.joints * sign, atol=1e-5)


# ----------------------------------------------------------- MANO-compatible semantics
PALM_SIDE = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
THUMB_SIDE = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)


def _tip_of_joint(model, joint: int, aa: torch.Tensor) -> torch.Tensor:
    rot = _identity(1)
    rot[0, joint] = axis_angle_to_matrix(aa)
    finger = next(f for f in FINGER_NAMES if joint in MANO_FINGERS[f])
    out = model(rot, torch.zeros(1, NUM_BETAS, dtype=torch.float64))
    return out.joints[0, IH_TIPS[FINGER_NAMES.index(finger)]]


@pytest.mark.parametrize("joint", range(1, NUM_MANO_JOINTS))
def test_flexion_moves_tip_to_palm_and_spread_to_thumb(model, joint):
    axes = anatomical_axes()[joint - 1]  # columns twist, spread, flex
    rest = _tip_of_joint(model, joint, torch.zeros(3, dtype=torch.float64))
    angle = math.radians(30)
    flexed = _tip_of_joint(model, joint, angle * axes[:, 2])
    finger = next(f for f in FINGER_NAMES if joint in MANO_FINGERS[f])
    palmar = PALM_SIDE if finger != "thumb" else torch.tensor([0.0, -0.5, -1.0], dtype=torch.float64)
    assert ((flexed - rest) @ palmar) > 2.0, "positive flexion must move the tip to the palm side"
    if finger != "thumb":
        # MANO semantics: flexion of the four fingers is (close to) a positive rotation about +z
        assert axes[2, 2] > 0.95  # within ~18 deg of +z (the fingers fan out)
        mano_flex = _tip_of_joint(model, joint, angle * torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
        assert ((mano_flex - rest) @ PALM_SIDE) > 2.0
        spread = _tip_of_joint(model, joint, math.radians(15) * axes[:, 1])
        assert ((spread - rest) @ THUMB_SIDE) > 1.0, "positive spread must move the tip to the thumb side"
        assert abs((spread - rest) @ PALM_SIDE) < 0.3 * ((spread - rest) @ THUMB_SIDE)


def test_rest_frame_matches_mano_layout(model):
    """Fingers towards −x, thumb side +z, palm facing −y (MANO right hand)."""
    out = model(_identity(1), torch.zeros(1, NUM_BETAS, dtype=torch.float64))
    tips = out.joints[0, list(IH_TIPS)]
    assert (tips[1:, 0] < -140).all()  # four fingertips far along −x
    assert tips[0, 2] > tips[1, 2] > tips[2, 2] > tips[3, 2] > tips[4, 2]  # thumb .. pinky along −z
    # palm normal: the palm-side vertices (y < 0) of the palm part lie below the back of the hand
    V = out.vertices[0]
    palm = V[model.part_labels == 0]
    assert palm[:, 1].min() < -10 and palm[:, 1].max() > 5


# ------------------------------------------------------------------------- bad input
def test_bad_input_errors(model):
    rot, betas = _identity(2), torch.zeros(2, NUM_BETAS, dtype=torch.float64)
    with pytest.raises(ValueError, match="rotmats must be"):
        model(rot[:, :15], betas)
    with pytest.raises(ValueError, match="betas must be"):
        model(rot, betas[:, :5])
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(rot, betas[:1])
    bad = rot.clone()
    bad[0, 3, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(bad, betas)
    with pytest.raises(ValueError, match="NaN"):
        model(rot, betas.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="unknown hand side"):
        model(rot, betas, side="middle")


# ---------------------------------------------------------------------- pose prior
def test_prior_samples_beat_implausible_poses(model, gen):
    prior = model.pose_prior
    samples = prior.sample(64, "right", gen).double()
    lp = prior.log_prob(samples)
    assert lp.shape == (64,) and torch.isfinite(lp).all()
    axes = anatomical_axes()
    worst_sample = lp.min()
    for joint in (1, 5, 11, 8, 14):
        for comp, deg in ((2, -90.0), (0, 90.0), (1, 60.0)):  # bent backwards, twisted, splayed
            bad = torch.eye(3, dtype=torch.float64).expand(1, 15, 3, 3).clone()
            bad[0, joint - 1] = axis_angle_to_matrix(math.radians(deg) * axes[joint - 1, :, comp])
            assert prior.log_prob(bad)[0] < worst_sample, (joint, comp)


def test_prior_samples_inside_ranges_and_deterministic(model):
    prior = model.pose_prior
    a = prior.sample(200, "right", torch.Generator().manual_seed(7))
    b = prior.sample(200, "right", torch.Generator().manual_seed(7))
    assert a.shape == (200, 15, 3, 3) and torch.equal(a, b)
    c = prior.components(a.double())
    tol = 1e-4
    assert (c >= prior.lo.double() - tol).all() and (c <= prior.hi.double() + tol).all()
    # rotations are proper
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(a.double() @ a.double().transpose(-1, -2), eye.expand_as(a.double()), atol=1e-5)


def test_prior_components_round_trip_against_independent_projection(model):
    """components = axis-angle projected on the documented axes (independent computation)."""
    prior = model.pose_prior
    R = prior.sample(5, "right", torch.Generator().manual_seed(3)).double()
    # independent axis-angle via eigen decomposition-free formula: angle from trace, axis from skew
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    ang = torch.acos(cos)
    w = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    aa = w / (2 * torch.sin(ang).clamp_min(1e-12))[..., None] * ang[..., None]
    expected = torch.einsum("jkc,bjk->bjc", anatomical_axes(), aa)
    assert torch.allclose(prior.components(R), expected, atol=1e-5)


def test_prior_log_prob_differentiable_and_left_mirrored(model, gen):
    prior = model.pose_prior
    R = prior.sample(4, "right", gen).double()
    aa = torch.zeros(4, 15, 3, dtype=torch.float64, requires_grad=True)
    lp = prior.log_prob(R @ axis_angle_to_matrix(aa))
    lp.sum().backward()
    assert torch.isfinite(aa.grad).all() and aa.grad.abs().sum() > 0
    # identity (the rest pose) is finite and differentiable too
    aa0 = torch.zeros(1, 15, 3, dtype=torch.float64, requires_grad=True)
    prior.log_prob(axis_angle_to_matrix(aa0)).sum().backward()
    assert torch.isfinite(aa0.grad).all()
    # left: log_prob of the mirrored pose equals the right one
    assert torch.allclose(prior.log_prob(mirror_rotmats(R), "left"), prior.log_prob(R), atol=1e-6)
    left = prior.sample(3, "left", torch.Generator().manual_seed(5))
    right = prior.sample(3, "right", torch.Generator().manual_seed(5))
    assert torch.allclose(left, mirror_rotmats(right))


def test_prior_bad_input(model):
    with pytest.raises(ValueError, match=r"\(B, 15, 3, 3\)"):
        model.pose_prior.log_prob(torch.eye(3).expand(2, 16, 3, 3))
    with pytest.raises(ValueError, match="unknown hand side"):
        model.pose_prior.log_prob(torch.eye(3).expand(2, 15, 3, 3), side="up")
    with pytest.raises(ValueError, match="NaN"):
        model.pose_prior.log_prob(torch.full((1, 15, 3, 3), float("nan")))
