"""The four plausibility criteria of MultiHands, each a separate function (SPEC section 6).

A proposal is plausible when

1. every joint **visible** in the ground truth projects within ``T`` pixels of its ground
   truth 2D position (:func:`check_reprojection`);
2. every joint **occluded** in the ground truth stays occluded, visibility of the proposal
   being computed from its own meshes with the same rule as the dataset
   (:func:`check_occlusion`);
3. each hand's articulation has pose-prior log-likelihood above a threshold
   (:func:`check_prior`, threshold from :func:`prior_threshold`);
4. the two hands do not collide (Gaussian proxies, :func:`check_no_collision`).

Criterion 3 also bounds the shape (:func:`check_shape`): the paper's proposals perturb the
shape too, and without a bound a random walk over rounds would drift to implausible hand sizes
(each β is standard normal under the shape model, so ``|β_k| ≤ 3`` keeps 99.7 % of hands per
component; an image whose ground truth lies beyond keeps its own largest ``|β|`` as bound).
"""

from __future__ import annotations

import torch
from torch import Tensor

from handflow.constants import SIDES
from handflow.hand.base import HandModel, HandOutput
from handflow.hand.collision import collide, penetration

__all__ = [
    "check_reprojection",
    "check_occlusion",
    "check_prior",
    "check_no_collision",
    "check_shape",
    "SHAPE_BOUND",
    "prior_threshold",
    "default_pixel_threshold",
]

#: default bound on every shape coefficient (β ~ N(0, I): 3 standard deviations)
SHAPE_BOUND = 3.0
#: default reprojection threshold as a fraction of the crop side (SPEC: 2 %)
PIXEL_THRESHOLD_FRACTION = 0.02


def default_pixel_threshold(crop_size: int) -> float:
    """``T`` = 2 % of the crop side, in pixels (e.g. 2.56 px at 128 px)."""
    return PIXEL_THRESHOLD_FRACTION * crop_size


def check_reprojection(proj: Tensor, gt_2d: Tensor, gt_visible: Tensor, threshold: float) -> Tensor:
    """Criterion 1.

    Args:
        proj: (P, 42, 2) projected proposal joints, crop pixels.
        gt_2d: (P, 42, 2) ground-truth 2D joints, crop pixels.
        gt_visible: (P, 42) bool, joints visible (and valid) in the ground truth.
        threshold: ``T`` in pixels.

    Returns:
        (P,) bool: every visible joint within ``T``.
    """
    err = (proj - gt_2d).norm(dim=-1)
    return ((err <= threshold) | ~gt_visible).all(-1)


def check_occlusion(prop_visible: Tensor, gt_occluded: Tensor) -> Tensor:
    """Criterion 2.

    Args:
        prop_visible: (P, 42) bool, visibility of the proposal's joints from its meshes.
        gt_occluded: (P, 42) bool, joints valid and occluded in the ground truth.

    Returns:
        (P,) bool: no ground-truth-occluded joint became visible.
    """
    return ~(prop_visible & gt_occluded).any(-1)


def check_prior(model: HandModel, rotmats: Tensor, thresholds: dict[str, float | Tensor]) -> Tensor:
    """Criterion 3.

    Args:
        model: hand model whose ``pose_prior`` scores the articulation.
        rotmats: (P, 2, 16, 3, 3) two-hand rotations (right, left).
        thresholds: per side, the minimum log-likelihood: a number or a (P,) tensor.

    Returns:
        (P,) bool: both hands above their threshold.
    """
    ok = torch.ones(rotmats.shape[0], dtype=torch.bool, device=rotmats.device)
    for h, side in enumerate(SIDES):
        lp = model.pose_prior.log_prob(rotmats[:, h, 1:], side=side)
        ok &= lp >= thresholds[side]
    return ok


def check_shape(betas: Tensor, bound: Tensor | float) -> Tensor:
    """Shape part of criterion 3.

    Args:
        betas: (P, 2, 10) both hands' shape.
        bound: scalar or (P,) per-proposal bound on ``|β_k|``.

    Returns:
        (P,) bool: every coefficient of both hands within the bound.
    """
    b = torch.as_tensor(bound, dtype=betas.dtype, device=betas.device)
    if b.dim() == 1:
        b = b[:, None, None]
    return (betas.abs() <= b).flatten(1).all(-1)


def check_no_collision(right: HandOutput | Tensor, left: HandOutput | Tensor,
                       tolerated: Tensor | None = None) -> Tensor:
    """Criterion 4: (P,) bool, True where the hands' Gaussian proxies do not intersect.

    Args:
        right, left: posed hands or their (P, 21, 3) joints, in a common frame (camera frame,
            mm); the proxies of :mod:`handflow.hand.collision` are built from the joints only.
        tolerated: optional (P,) mm², for images whose *ground truth* already collides under
            the proxies (hands touching in real data): a proposal passes when its proxy
            penetration (:func:`handflow.hand.collision.penetration`) is no larger than this
            (pass the ground truth's; ``0`` elsewhere keeps the plain test).
    """
    hit = collide(right, left)
    if tolerated is None or not bool(hit.any()):
        return ~hit
    ok = ~hit
    idx = (hit & (tolerated > 0)).nonzero().flatten()
    if idx.numel():
        jr = right.joints if isinstance(right, HandOutput) else right
        jl = left.joints if isinstance(left, HandOutput) else left
        ok[idx] = penetration(jr[idx], jl[idx]) <= tolerated[idx]
    return ok


@torch.no_grad()
def prior_threshold(
    model: HandModel, side: str, quantile: float = 0.01, n: int = 4096, seed: int = 0
) -> float:
    """Log-likelihood threshold such that a fraction ``1 − quantile`` of the prior's own
    samples pass: model-agnostic (the openhand and MANO priors have different scales).

    Args:
        model: hand model.
        side: ``"right"`` or ``"left"``.
        quantile: fraction of natural hands that would be rejected.
        n: number of prior samples used to estimate the quantile.
        seed: sampling seed.
    """
    g = torch.Generator().manual_seed(seed)
    samples = model.pose_prior.sample(n, side=side, generator=g)
    lp = model.pose_prior.log_prob(samples, side=side)
    return float(torch.quantile(lp.double(), quantile))
