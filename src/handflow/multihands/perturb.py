"""Proposal step of MultiHands: perturb two-hand parameters (paper Sec. 4; SPEC section 6).

A two-hand state is kept in *physical* camera-frame form, batched over proposals ``P``:
``rotmats`` (P, 2, 16, 3, 3) (right, left; global orientation in the camera frame first),
``betas`` (P, 2, 10) and ``root`` (P, 2, 3) camera-frame wrists in mm.

Two kinds of moves (reasoning and measured acceptance: docs/multihands.md):

* **constrained** moves change joints that are visible in the image, so they must be small to
  keep the visible joints within ``T`` pixels: finger-joint rotations, global rotation, root
  depth along the camera ray (the 2D root stays put), shape. Each proposal draws one step
  scale log-uniformly in ``[min_step, 1]`` that multiplies all its constrained noise, so every
  round mixes tiny steps (almost always accepted) with large ones (rarely accepted, but they
  travel far); this needs no per-image tuning whatever the crop size or threshold.
* **depth-scale** moves: the wrist moves along its camera ray by ``exp(δ)`` and the shape
  grows by the same factor (``β += δ · scale_direction``, the least-squares shape direction of
  uniform scaling, :func:`scale_direction`), so the whole hand scales about the camera centre
  and its projection hardly changes: the classic depth/size ambiguity of one view, bounded by
  the shape limit of criterion 3.
* **free** moves change only joints occluded in the ground truth: a finger joint is *free*
  when every joint it moves (its descendants) is occluded. A free joint moves, with
  probability ``free_resample``, towards the rotation of a fresh draw from the hand model's
  pose prior, by a uniform random fraction of the way (geodesic interpolation): a hidden finger
  can reach any other natural articulation, in small or large steps.

Each proposal is either a *free* proposal (probability ``free_probability``, only free joints
move; falls back to a constrained one where an image has no free joint) or a *constrained*
one (free joints untouched), so that the two kinds do not spoil each other's acceptance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from handflow.constants import IH_PARENTS, MANO_TO_IH, NUM_BETAS, NUM_HAND_JOINTS, NUM_MANO_JOINTS, SIDES
from handflow.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from handflow.params import TwoHandState  # the batched state lives with the parameter vector (re-exported)

__all__ = ["TwoHandState", "PerturbConfig", "perturb", "free_joint_mask", "moved_joints", "scale_direction"]

NUM_FINGER_JOINTS = NUM_MANO_JOINTS - 1


@dataclass
class PerturbConfig:
    """Scales of one perturbation step (documented defaults, docs/multihands.md).

    Attributes:
        finger: radians, isotropic axis-angle noise on a constrained finger joint (at step 1).
        finger_fraction: probability that a constrained finger joint is perturbed.
        global_rot: radians, axis-angle noise on a hand's global orientation (at step 1).
        log_depth: std of ``log(Z'/Z)`` of a wrist (at step 1); it moves along its camera ray.
        betas: std of additive shape noise (at step 1).
        move_probability: probability that a hand's global rotation / depth / shape is moved
            in a proposal (independently per move type and hand).
        min_step: smallest per-proposal step scale (log-uniform in ``[min_step, 1]``).
        free_resample: probability that a free finger joint takes a fresh prior rotation.
        depth_scale: std of ``δ`` of a depth-scale move (at step 1).
        free_probability: probability that a proposal is a free proposal.
    """

    finger: float = 0.2
    finger_fraction: float = 0.3
    global_rot: float = 0.06
    log_depth: float = 0.06
    betas: float = 0.5
    move_probability: float = 0.5
    min_step: float = 1.0 / 32.0
    free_resample: float = 0.5
    depth_scale: float = 0.15
    free_probability: float = 0.3


def moved_joints() -> Tensor:
    """(15, 21) bool: InterHand joints (of the same hand) moved by rotating MANO joint 1..15,
    i.e. the joint's descendants."""
    out = torch.zeros(NUM_FINGER_JOINTS, NUM_HAND_JOINTS, dtype=torch.bool)
    for k in range(1, NUM_MANO_JOINTS):
        ih = MANO_TO_IH[k]
        for j in range(NUM_HAND_JOINTS):
            p = IH_PARENTS[j]
            while p >= 0:
                if p == ih:
                    out[k - 1, j] = True
                    break
                p = IH_PARENTS[p]
    return out


_MOVED = moved_joints()


def free_joint_mask(gt_visible: Tensor) -> Tensor:
    """Finger joints whose rotation moves only joints not visible in the ground truth.

    Args:
        gt_visible: (I, 42) bool.

    Returns:
        (I, 2, 15) bool.
    """
    vis = gt_visible.reshape(-1, 2, 1, NUM_HAND_JOINTS)
    moved = _MOVED.to(gt_visible.device)
    return ~(vis & moved).any(-1)


@torch.no_grad()
def scale_direction(model: object, side: str = "right") -> Tensor:
    """(10,) shape change per unit of log-scale: the least-squares ``b`` with
    ``J(β = b·ε) ≈ (1 + ε) J(0)`` for the rest-pose joints (wrist at the origin), from finite
    differences of the model itself (any backend). For ``openhand`` it is ≈ ``(1/0.06) e_0``.
    """
    dev = next(iter(model.buffers())).device if any(True for _ in model.buffers()) else torch.device("cpu")
    nb = NUM_BETAS
    eye = torch.eye(3, device=dev).expand(nb + 1, NUM_MANO_JOINTS, 3, 3)
    betas = torch.cat([torch.zeros(1, nb), torch.eye(nb)]).to(dev)
    j = model(eye, betas, side=side).joints.double().cpu()  # (11, 21, 3): rest, then one beta each
    A = (j[1:] - j[0]).flatten(1).T  # (63, 10): d joints / d beta
    return torch.linalg.lstsq(A, j[0].flatten()[:, None]).solution[:, 0].float()


def _randn(shape: tuple[int, ...], g: torch.Generator, like: Tensor) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=like.dtype).to(like.device)


def _rand(shape: tuple[int, ...], g: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(*shape, generator=g, dtype=torch.float64).to(device)


def perturb(
    state: TwoHandState,
    cfg: PerturbConfig,
    g: torch.Generator,
    free: Tensor | None = None,
    prior: object | None = None,
    scale_dir: Tensor | None = None,
) -> TwoHandState:
    """One random perturbation of every proposal.

    Finger joints: ``R_k ← R_k · exp(ε)`` (local) or, if free, a fresh prior rotation; global
    orientation: ``R_0 ← exp(ε) · R_0`` (camera frame, about the wrist); wrist:
    ``root ← root · exp(δ)`` (along the camera ray: the projected wrist is unchanged); shape:
    ``β ← β + η``.

    Args:
        state: P proposals.
        cfg: noise scales.
        g: CPU generator (the draws do not depend on the device).
        free: optional (P, 2, 15) bool, finger joints free to move (:func:`free_joint_mask`).
        prior: the hand model's ``pose_prior`` (needed when ``free`` is given).
        scale_dir: optional (2, 10) per hand, :func:`scale_direction`; enables depth-scale moves.

    Returns:
        New :class:`TwoHandState` with P proposals.
    """
    P = len(state)
    dev, dt = state.rotmats.device, state.rotmats.dtype
    R = state.rotmats.clone()
    log_min = math.log(cfg.min_step)
    step = torch.exp(_rand((P,), g, dev) * log_min).to(dt)  # log-uniform in [min_step, 1]
    eye = torch.eye(3, dtype=dt, device=dev)
    is_free = _rand((P,), g, dev) < cfg.free_probability
    if free is None:
        is_free &= False
    else:
        is_free &= free.flatten(1).any(1)

    def moves(p: float) -> Tensor:
        return (_rand((P, 2), g, dev) < p) & ~is_free[:, None]

    aa = _randn((P, 2, NUM_FINGER_JOINTS, 3), g, R) * (cfg.finger * step)[:, None, None, None]
    active = (_rand((P, 2, NUM_FINGER_JOINTS), g, dev) < cfg.finger_fraction) & ~is_free[:, None, None]
    if free is not None:
        active &= ~free
    R[:, :, 1:] = R[:, :, 1:] @ torch.where(active[..., None, None], axis_angle_to_matrix(aa), eye)
    if free is not None:
        if prior is None:
            raise ValueError("perturb: free joints need the pose prior (pass prior=model.pose_prior)")
        take = free & is_free[:, None, None] & (_rand((P, 2, NUM_FINGER_JOINTS), g, dev) < cfg.free_resample)
        fresh = torch.stack([prior.sample(P, side=s, generator=g).to(dev, dt) for s in SIDES], 1)
        frac = _rand((P, 2, NUM_FINGER_JOINTS), g, dev).to(dt)
        rel = matrix_to_axis_angle(R[:, :, 1:].transpose(-1, -2) @ fresh) * frac[..., None]
        R[:, :, 1:] = torch.where(take[..., None, None], R[:, :, 1:] @ axis_angle_to_matrix(rel), R[:, :, 1:])
    aa = _randn((P, 2, 3), g, R) * (cfg.global_rot * step)[:, None, None] * moves(cfg.move_probability)[..., None]
    R[:, :, 0] = axis_angle_to_matrix(aa) @ R[:, :, 0]
    d = _randn((P, 2, 1), g, R) * (cfg.log_depth * step)[:, None, None] * moves(cfg.move_probability)[..., None]
    b = _randn(tuple(state.betas.shape), g, R) * (cfg.betas * step)[:, None, None]
    b = b * moves(cfg.move_probability)[..., None]
    if scale_dir is not None:
        ds = _randn((P, 2, 1), g, R) * (cfg.depth_scale * step)[:, None, None] * moves(cfg.move_probability)[..., None]
        d = d + ds
        b = b + ds * scale_dir.to(dev, dt)
    return TwoHandState(R, state.betas + b, state.root * torch.exp(d))
