r"""Gaussian-proxy collision between two hands.

Each hand is covered by isotropic Gaussians :math:`\mathcal N(\mu_g, \sigma_g^2 I)` placed on
its skeleton (21 InterHand joints, mm, any common frame such as the camera frame), sized
relative to the hand's own bone lengths:

* one per joint (the fingertip one pulled back :data:`TIP_PULLBACK` of the distal bone, so the
  sphere ends near the fingertip instead of beyond it);
* extra ones inside each bone at :data:`INTERIOR_FRACTIONS` (finger phalanges, and along the
  four metacarpals and the wrist→thumb-CMC bone, which cover the palm), with radii interpolated
  linearly between the two end joints;
* one between each pair of neighbouring finger MCPs (:data:`WEB_PAIRS`), closing the gaps
  between the knuckles.

Radii follow the size-relative table of ``formats.md`` section 4 (:data:`RADIUS_FACTORS`):
there, :math:`\sigma_{src} = f\,L/3` (``L`` the bone ending at the joint) and a collision is a
Bhattacharyya distance below :data:`BHATTACHARYYA_THRESHOLD` = 2.25. For two equal Gaussians
that test fires at :math:`d < \sqrt{8\cdot 2.25}\,\sigma_{src}`, i.e. each hand contributes
:math:`\sqrt{2\cdot2.25}\,\sigma_{src}`. We use that as our one-standard-deviation radius,
:math:`\sigma = \sqrt{4.5}\,f L / 3 = f L / \sqrt 2`, so our sphere test
:math:`\lVert\mu_i-\mu_j\rVert < \sigma_i+\sigma_j` agrees with the source on equal radii.
Reasoning and a check against the ``openhand`` mesh: ``docs/metrics.md``.

>>> import torch
>>> from handflow.hand import load_hand_model
>>> from handflow.hand.collision import collide, hand_proxies, penetration
>>> hand, rot, betas = load_hand_model("openhand"), torch.eye(3).expand(2, 16, 3, 3), torch.zeros(2, 10)
>>> right_out, left_out = hand(rot, betas, "right"), hand(rot, betas, "left")   # both wrists at the origin
>>> centres, sigmas = hand_proxies(right_out.joints)
>>> centres.shape, sigmas.shape                   # (B, G, 3), (B, G)
(torch.Size([2, 65, 3]), torch.Size([2, 65]))
>>> collide(right_out, left_out)                  # (B,) bool
tensor([True, True])
>>> bool((penetration(right_out, left_out) > 0).all())   # (B,) mm^2, differentiable
True
>>> collide(right_out, left_out.translate(torch.tensor([[0.0, 0.0, 200.0]])))   # 20 cm apart
tensor([False, False])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from handflow.constants import FINGER_NAMES, IH_JOINT_NAMES, IH_PARENTS, IH_WRIST, NUM_HAND_JOINTS
from handflow.hand.base import HandOutput

__all__ = [
    "BHATTACHARYYA_THRESHOLD",
    "INTERIOR_FRACTIONS",
    "PROXY_NAMES",
    "RADIUS_FACTORS",
    "TIP_PULLBACK",
    "WEB_PAIRS",
    "WRIST_RADIUS_FACTOR",
    "collide",
    "hand_proxies",
    "num_proxies",
    "penetration",
]

#: per finger, the fraction of the bone ending at the joint covered by +-3 sigma_src, for bone
#: levels 1..4 (wrist->MCP, MCP->PIP, PIP->DIP, DIP->tip; thumb: wrist->CMC, CMC->MCP, ...)
RADIUS_FACTORS: dict[str, tuple[float, float, float, float]] = {
    "thumb": (0.60, 0.33, 0.40, 0.25),
    "index": (0.12, 0.32, 0.40, 0.30),
    "middle": (0.12, 0.32, 0.40, 0.28),
    "ring": (0.12, 0.35, 0.37, 0.28),
    "pinky": (0.12, 0.40, 0.42, 0.28),
}
#: wrist: fraction of the mean wrist->level-1 bone length (five bones)
WRIST_RADIUS_FACTOR = 0.33
#: the source table's sigma is (fraction of the bone) / 3
SOURCE_SIGMAS_PER_FRACTION = 3.0
#: the source's collision test: Bhattacharyya distance below this value
BHATTACHARYYA_THRESHOLD = 2.25
#: our 1-sigma sphere radius per source sigma (equal-radius agreement with the source test)
SPHERE_PER_SOURCE_SIGMA = math.sqrt(2.0 * BHATTACHARYYA_THRESHOLD)
#: the fingertip Gaussian sits this fraction of the distal bone back from the tip joint
TIP_PULLBACK = 0.25
#: extra Gaussians inside the bone of each level, as fractions from parent (0) to child (1)
INTERIOR_FRACTIONS: dict[str, dict[int, tuple[float, ...]]] = {
    **{f: {1: (1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6), 2: (1 / 3, 2 / 3), 3: (0.5,), 4: (0.375,)}
       for f in FINGER_NAMES if f != "thumb"},
    "thumb": {1: (0.5,), 2: (1 / 3, 2 / 3), 3: (0.5,), 4: (0.375,)},
}  # fmt: skip
#: neighbouring MCP joints joined by a Gaussian at their midpoint
WEB_PAIRS: tuple[tuple[str, str], ...] = (
    ("index1", "middle1"),
    ("middle1", "ring1"),
    ("ring1", "pinky1"),
)
_CHUNK = 4096  # pose pairs per chunk in collide/penetration (bounds memory)


def _joint_meta() -> tuple[list[str], list[int]]:
    """Finger name and bone level (depth below the wrist) of each IH joint (wrist: '', 0)."""
    fingers, levels = [], []
    for j, name in enumerate(IH_JOINT_NAMES):
        depth, p = 0, j
        while IH_PARENTS[p] >= 0:
            depth, p = depth + 1, IH_PARENTS[p]
        fingers.append(name.rstrip("0123456789") if j != IH_WRIST else "")
        levels.append(depth)
    return fingers, levels


def _layout() -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """(G, 21) centre weights, (G, 21) radius weights (on per-joint radii), names."""
    fingers, levels = _joint_meta()
    idx = {n: j for j, n in enumerate(IH_JOINT_NAMES)}
    cw: list[list[float]] = []
    rw: list[list[float]] = []
    names: list[str] = []

    def add(name: str, centre: dict[int, float], radius: dict[int, float]) -> None:
        c, r = [0.0] * NUM_HAND_JOINTS, [0.0] * NUM_HAND_JOINTS
        for j, w in centre.items():
            c[j] += w
        for j, w in radius.items():
            r[j] += w
        cw.append(c), rw.append(r), names.append(name)

    for j, name in enumerate(IH_JOINT_NAMES):
        p = IH_PARENTS[j]
        is_tip = p >= 0 and j not in IH_PARENTS
        if is_tip:
            add(name, {j: 1.0 - TIP_PULLBACK, p: TIP_PULLBACK}, {j: 1.0})
        else:
            add(name, {j: 1.0}, {j: 1.0})
        if p >= 0:
            for t in INTERIOR_FRACTIONS[fingers[j]][levels[j]]:
                add(f"{IH_JOINT_NAMES[p]}-{name}@{t:.2f}", {p: 1 - t, j: t}, {p: 1 - t, j: t})
    for a, b in WEB_PAIRS:
        ia, ib = idx[a], idx[b]
        add(f"web {a}-{b}", {ia: 0.5, ib: 0.5}, {ia: 0.5, ib: 0.5})
    f64 = torch.float64
    return torch.tensor(cw, dtype=f64), torch.tensor(rw, dtype=f64), tuple(names)


_CENTRE_W, _RADIUS_W, PROXY_NAMES = _layout()
_FINGERS, _LEVELS = _joint_meta()
#: (21,) radius factor of each joint (wrist: WRIST_RADIUS_FACTOR)
_JOINT_FACTORS = torch.tensor(
    [RADIUS_FACTORS[f][lv - 1] if lv > 0 else WRIST_RADIUS_FACTOR for f, lv in zip(_FINGERS, _LEVELS)],
    dtype=torch.float64,
)
_PARENT_IDX = torch.tensor([p if p >= 0 else j for j, p in enumerate(IH_PARENTS)])
_LEVEL1 = torch.tensor([lv == 1 for lv in _LEVELS])


def num_proxies() -> int:
    """Number G of Gaussians per hand."""
    return len(PROXY_NAMES)


def _as_joints(hand: HandOutput | Tensor, name: str) -> Tensor:
    joints = hand.joints if isinstance(hand, HandOutput) else hand
    if not isinstance(joints, Tensor):
        raise TypeError(f"{name} must be a HandOutput or a (B, 21, 3) tensor, got {type(hand)}")
    if joints.ndim != 3 or joints.shape[1:] != (NUM_HAND_JOINTS, 3):
        raise ValueError(
            f"{name} joints must have shape (B, {NUM_HAND_JOINTS}, 3) (InterHand order, mm), "
            f"got {tuple(joints.shape)}"
        )
    if not joints.is_floating_point() or not bool(torch.isfinite(joints).all()):
        raise ValueError(f"{name} joints must be finite floating-point values (NaN/inf found)")
    return joints


def hand_proxies(joints: HandOutput | Tensor) -> tuple[Tensor, Tensor]:
    """Gaussian proxies of one hand.

    Args:
        joints: ``(B, 21, 3)`` mm, InterHand order (or a :class:`HandOutput`).

    Returns:
        ``(centres (B, G, 3) mm, sigmas (B, G) mm)``, ``G = num_proxies()``; names in
        :data:`PROXY_NAMES`. Differentiable in ``joints``.
    """
    j = _as_joints(joints, "joints")
    bones = torch.linalg.vector_norm(j - j[:, _PARENT_IDX.to(j.device)], dim=-1)  # (B, 21)
    wrist_len = bones[:, _LEVEL1.to(j.device)].mean(dim=1)  # (B,)
    lengths = torch.where(
        torch.arange(NUM_HAND_JOINTS, device=j.device) == IH_WRIST, wrist_len[:, None], bones
    )
    scale = SPHERE_PER_SOURCE_SIGMA / SOURCE_SIGMAS_PER_FRACTION
    radii = lengths * _JOINT_FACTORS.to(j) * scale  # (B, 21)
    centres = torch.einsum("gj,bjc->bgc", _CENTRE_W.to(j), j)
    sigmas = radii @ _RADIUS_W.to(j).T
    return centres, sigmas


def _pairs(right: HandOutput | Tensor, left: HandOutput | Tensor) -> tuple[Tensor, Tensor]:
    jr, jl = _as_joints(right, "right"), _as_joints(left, "left")
    if jr.shape[0] != jl.shape[0]:
        raise ValueError(f"right and left batch sizes differ: {jr.shape[0]} vs {jl.shape[0]}")
    return jr, jl


def _gap(jr: Tensor, jl: Tensor, margin: float) -> Tensor:
    """(B, G, G) sphere gap ``d - (sigma_i + sigma_j + margin)``: negative = overlap."""
    cr, sr = hand_proxies(jr)
    cl, sl = hand_proxies(jl)
    d = torch.cdist(cr, cl, compute_mode="donot_use_mm_for_euclid_dist")  # exact differences
    return d - (sr[:, :, None] + sl[:, None, :] + margin)


def collide(right: HandOutput | Tensor, left: HandOutput | Tensor, margin: float = 0.0) -> Tensor:
    """Do the two hands intersect?

    Args:
        right, left: :class:`HandOutput` or ``(B, 21, 3)`` joints, mm, in a common frame.
        margin: extra clearance in mm required between the spheres (negative tolerates
            that much overlap).

    Returns:
        ``(B,)`` bool, True when some right-hand sphere and some left-hand sphere (radius one
        standard deviation) intersect: ``||mu_i - mu_j|| < sigma_i + sigma_j + margin``
        (strict: touching spheres do not collide).
    """
    jr, jl = _pairs(right, left)
    with torch.no_grad():
        parts = [
            (_gap(jr[s : s + _CHUNK], jl[s : s + _CHUNK], margin) < 0).flatten(1).any(1)
            for s in range(0, jr.shape[0], _CHUNK)
        ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool, device=jr.device)


def penetration(
    right: HandOutput | Tensor, left: HandOutput | Tensor, margin: float = 0.0
) -> Tensor:
    """Smooth inter-hand penetration penalty (mm²).

    ``sum_{i in right, j in left} relu(sigma_i + sigma_j + margin - ||mu_i - mu_j||)^2``:
    exactly 0 when :func:`collide` is False (same ``margin``), positive otherwise, growing
    quadratically with each pair's overlap depth; continuously differentiable (C¹), with
    finite gradients even for coincident centres.

    Args:
        right, left: :class:`HandOutput` or ``(B, 21, 3)`` joints, mm, in a common frame.
        margin: clearance in mm, as in :func:`collide`.

    Returns:
        ``(B,)`` mm².
    """
    jr, jl = _pairs(right, left)
    parts = [
        torch.relu(-_gap(jr[s : s + _CHUNK], jl[s : s + _CHUNK], margin)).square().sum((1, 2))
        for s in range(0, jr.shape[0], _CHUNK)
    ]
    return torch.cat(parts) if parts else jr.new_zeros(0)
