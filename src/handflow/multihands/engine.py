"""Vectorized perturb-and-check for a batch of images (paper Sec. 4; SPEC section 6).

All proposals of all images in a batch are posed, projected and checked at once, on CPU
or GPU. The cheap criteria (reprojection, prior, collision) run first; visibility, which
needs rasterization, runs only on their survivors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from handflow.constants import SIDES
from handflow.geometry.camera import project
from handflow.hand.base import HandModel, HandOutput
from handflow.multihands.checks import (
    check_no_collision,
    check_occlusion,
    check_prior,
    check_reprojection,
)
from handflow.multihands.perturb import PerturbConfig, TwoHandState, perturb

__all__ = ["Targets", "EngineConfig", "CriterionStats", "pose_two_hands", "run_batch"]

#: visibility backend: (vertices (P,2,V,3), faces [(F,3), (F,3)], joints (P,2,21,3), K (P,3,3),
#: size (H, W)) -> (P, 2, 21) bool
VisibilityFn = Callable[[Tensor, list[Tensor], Tensor, Tensor, tuple[int, int]], Tensor]


@dataclass
class Targets:
    """Ground truth of ``I`` images.

    Attributes:
        image_ids: (I,) long.
        state: ground-truth :class:`TwoHandState` with ``P = I``.
        K: (I, 3, 3) crop intrinsics.
        size: crop side in pixels.
        gt_2d: (I, 42, 2) ground-truth 2D joints (crop pixels).
        gt_visible: (I, 42) bool, valid and visible.
        gt_occluded: (I, 42) bool, valid and occluded.
    """

    image_ids: Tensor
    state: TwoHandState
    K: Tensor
    size: int
    gt_2d: Tensor
    gt_visible: Tensor
    gt_occluded: Tensor


@dataclass
class EngineConfig:
    """Search settings (documented defaults, docs/multihands.md)."""

    num: int = 100
    rounds: int = 6
    proposals_per_image: int = 96
    pixel_threshold: float = 2.56
    prior_thresholds: dict[str, float] = field(default_factory=lambda: {"right": -1e9, "left": -1e9})
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    #: stop proposing for an image once this many annotations were accepted
    pool_factor: float = 2.0


@dataclass
class CriterionStats:
    """Counts of proposals passing each criterion (visibility counted on cheap survivors)."""

    proposals: int = 0
    reprojection: int = 0
    prior: int = 0
    collision: int = 0
    cheap_survivors: int = 0
    occlusion: int = 0
    accepted: int = 0

    def add(self, other: CriterionStats) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def rates(self) -> dict[str, float]:
        """Acceptance rate per criterion (occlusion relative to the cheap survivors)."""
        n = max(self.proposals, 1)
        return {
            "reprojection": self.reprojection / n,
            "prior": self.prior / n,
            "collision": self.collision / n,
            "occlusion_given_cheap": self.occlusion / max(self.cheap_survivors, 1),
            "accepted": self.accepted / n,
        }


def pose_two_hands(model: HandModel, state: TwoHandState) -> tuple[Tensor, dict[str, HandOutput]]:
    """Pose both hands in the camera frame.

    Returns:
        joints (P, 42, 3) mm and per side the camera-frame :class:`HandOutput`.
    """
    outs = {
        side: model(state.rotmats[:, h], state.betas[:, h], side=side).translate(state.root[:, h])
        for h, side in enumerate(SIDES)
    }
    return torch.cat([outs["right"].joints, outs["left"].joints], 1), outs


def run_batch(
    model: HandModel,
    targets: Targets,
    cfg: EngineConfig,
    visibility: VisibilityFn,
    generator: torch.Generator,
) -> tuple[list[TwoHandState], CriterionStats]:
    """Perturb-and-check for ``I`` images; accepted proposals seed the next round.

    Returns:
        per image the accepted states (up to ``cfg.num``, chosen at random from all accepted
        ones; the ground truth itself is never included) and the criterion statistics.
    """
    I = len(targets.image_ids)
    Q = cfg.proposals_per_image
    pools: list[TwoHandState] = [targets.state.index(torch.tensor([i])) for i in range(I)]
    accepted: list[list[TwoHandState]] = [[] for _ in range(I)]
    n_acc = torch.zeros(I, dtype=torch.long)
    stats = CriterionStats()
    faces = [model.faces_for(s) for s in SIDES]
    H = W = targets.size
    for _ in range(cfg.rounds):
        active = (n_acc < cfg.pool_factor * cfg.num).nonzero().flatten()
        if active.numel() == 0:
            break
        parents, owner = [], []
        for i in active.tolist():
            pick = torch.randint(len(pools[i]), (Q,), generator=generator)
            parents.append(pools[i].index(pick))
            owner.append(torch.full((Q,), i, dtype=torch.long))
        props = perturb(TwoHandState.cat(parents), cfg.perturb, generator)
        img = torch.cat(owner)
        joints, outs = pose_two_hands(model, props)
        K = targets.K[img]
        ok_rep = check_reprojection(project(joints, K), targets.gt_2d[img], targets.gt_visible[img], cfg.pixel_threshold)
        ok_prior = check_prior(model, props.rotmats, cfg.prior_thresholds)
        ok_coll = check_no_collision(outs["right"], outs["left"])
        cheap = ok_rep & ok_prior & ok_coll
        ok = cheap.clone()
        if bool(cheap.any()):
            idx = cheap.nonzero().flatten()
            verts = torch.stack([outs["right"].vertices[idx], outs["left"].vertices[idx]], 1)
            jts = joints[idx].reshape(-1, 2, 21, 3)
            vis = visibility(verts, faces, jts, K[idx], (H, W)).reshape(-1, 42)
            ok_occ = check_occlusion(vis, targets.gt_occluded[img[idx]])
            ok[idx] = ok_occ
            stats.occlusion += int(ok_occ.sum())
        stats.proposals += len(props)
        stats.reprojection += int(ok_rep.sum())
        stats.prior += int(ok_prior.sum())
        stats.collision += int(ok_coll.sum())
        stats.cheap_survivors += int(cheap.sum())
        stats.accepted += int(ok.sum())
        for i in active.tolist():
            sel = (img == i) & ok
            if bool(sel.any()):
                new = props.index(sel.nonzero().flatten())
                accepted[i].append(new)
                pools[i] = TwoHandState.cat([pools[i], new])
                n_acc[i] += len(new)
    result: list[TwoHandState] = []
    for i in range(I):
        if not accepted[i]:
            result.append(targets.state.index(torch.zeros(0, dtype=torch.long)))
            continue
        allacc = TwoHandState.cat(accepted[i])
        keep = torch.randperm(len(allacc), generator=generator)[: cfg.num]
        result.append(allacc.index(keep))
    return result, stats
