"""Hand articulations for the synthetic dataset: a library of hand-crafted interaction poses
written in anatomical terms, random perturbations, and samples of the model's pose prior.

Anatomical angles. Every finger joint j (MANO order 1..15) has an anatomical frame
``A_j = [twist, spread, flex]`` (columns, in the right hand's rest frame;
``handflow.hand.openhand.anatomical_axes``, documented in ``docs/openhand.md``):

* ``flex``: a positive rotation bends the finger towards the palm (fist);
* ``spread``: a positive rotation moves the finger towards the thumb side;
* ``twist``: rotation about the bone.

A pose is a (15, 3) tensor of angles in radians ``[twist, spread, flex]`` per joint; the
local rotation of joint j is ``exp(A_j · angles_j)`` (axis-angle about the combined axis).
The same angles describe the left hand: the model mirrors left-hand rotations itself, so a
"fist" is a fist for either side (:func:`angles_to_rotmats` takes the side into account).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

from handflow.constants import FINGER_NAMES, MANO_FINGERS, NUM_MANO_JOINTS, Side, check_side
from handflow.geometry import axis_angle_to_matrix
from handflow.hand.base import mirror_rotmats
from handflow.hand.openhand import anatomical_axes

__all__ = [
    "POSE_LIBRARY",
    "NUM_FINGER_JOINTS",
    "pose_angles",
    "curl",
    "spread",
    "oppose",
    "angles_to_rotmats",
    "perturb_angles",
    "sample_articulation",
    "finger_axes",
]

NUM_FINGER_JOINTS = NUM_MANO_JOINTS - 1  # 15
TWIST, SPREAD, FLEX = 0, 1, 2
#: full flexion (radians) of the (root, middle, distal) joints at ``curl(finger, 1)``
MAX_FLEX = {"finger": (1.45, 1.70, 1.10), "thumb": (0.55, 0.75, 1.10)}
#: spread (radians) of (index, middle, ring, pinky) at ``spread(1)``, positive = thumb side
SPREAD_FAN = {"index": 0.30, "middle": 0.05, "ring": -0.22, "pinky": -0.45, "thumb": 0.35}
#: plausible flexion range of perturbed poses (radians)
FLEX_LIMITS = (-0.25, 1.9)
SPREAD_LIMIT = 0.6
#: perturbation std (radians) of [twist, spread, flex]
PERTURB_STD = (0.04, 0.07, 0.15)


def _row(finger: str, level: int) -> int:
    """Row of the (15, 3) angle tensor for MANO joint ``MANO_FINGERS[finger][level]``."""
    return MANO_FINGERS[finger][level] - 1


def _zeros() -> Tensor:
    return torch.zeros(NUM_FINGER_JOINTS, 3, dtype=torch.float64)


def curl(finger: str, amount: float, levels: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Tensor:
    """(15, 3) angles flexing ``finger`` by ``amount`` (0 straight, 1 fully curled); ``levels``
    scales the root / middle / distal joints separately (e.g. a claw is (0, 1, 1))."""
    if finger not in MANO_FINGERS:
        raise ValueError(f"unknown finger {finger!r}: expected one of {FINGER_NAMES}")
    a = _zeros()
    lim = MAX_FLEX["thumb" if finger == "thumb" else "finger"]
    for lv in range(3):
        a[_row(finger, lv), FLEX] = amount * levels[lv] * lim[lv]
    return a


def spread(amount: float, fingers: tuple[str, ...] = FINGER_NAMES) -> Tensor:
    """(15, 3) angles fanning the fingers apart (``amount`` 1 ≈ a wide open hand, negative
    squeezes them together) at their root joints."""
    a = _zeros()
    for f in fingers:
        a[_row(f, 0), SPREAD] = amount * SPREAD_FAN[f]
    return a


def oppose(amount: float) -> Tensor:
    """(15, 3) angles swinging the thumb across the palm towards the little finger (``amount``
    1 ≈ thumb tip over the ring finger's base)."""
    a = _zeros()
    a[_row("thumb", 0), FLEX] = 0.7 * amount
    a[_row("thumb", 0), SPREAD] = -0.35 * amount
    a[_row("thumb", 0), TWIST] = 0.45 * amount
    return a


def _curl_all(amount: float, thumb: float | None = None) -> Tensor:
    a = sum(curl(f, amount) for f in FINGER_NAMES if f != "thumb")
    return a + curl("thumb", amount if thumb is None else thumb)


def _crossed() -> Tensor:
    a = curl("ring", 0.95) + curl("pinky", 0.95) + curl("thumb", 0.6) + oppose(0.8)
    a += curl("index", 0.12) + curl("middle", 0.05)
    a[_row("middle", 0), SPREAD] = 0.42  # middle crosses over the index
    a[_row("middle", 0), TWIST] = 0.2
    a[_row("index", 0), SPREAD] = -0.15
    a[_row("index", 0), FLEX] += 0.18
    return a


#: hand-crafted articulations used by the interaction templates
POSE_LIBRARY: dict[str, Callable[[], Tensor]] = {
    "flat": _zeros,
    "relaxed": lambda: _curl_all(0.22, 0.15) + spread(0.3),
    "spread": lambda: spread(1.0) + curl("thumb", -0.1),
    "fist": lambda: _curl_all(0.95, 0.6) + oppose(0.6),
    "point": lambda: sum(curl(f, 0.95) for f in ("middle", "ring", "pinky")) + curl("thumb", 0.5) + oppose(0.6),
    "pinch": lambda: curl("index", 0.45, (1.0, 0.9, 0.5)) + curl("thumb", 0.35) + oppose(0.75)
    + sum(curl(f, 0.25) for f in ("middle", "ring", "pinky")),
    "ok": lambda: curl("index", 0.6) + curl("thumb", 0.45) + oppose(0.7) + spread(0.5, ("middle", "ring", "pinky")),
    "hook": lambda: sum(curl(f, 0.6, (0.6, 1.0, 0.8)) for f in ("index", "middle", "ring", "pinky")) + curl("thumb", 0.2),
    "cup": lambda: _curl_all(0.35, 0.3) + oppose(0.4),
    "claw": lambda: sum(curl(f, 0.85, (0.0, 1.0, 1.0)) for f in ("index", "middle", "ring", "pinky")) + spread(0.6),
    "crossed_fingers": _crossed,
    "thumbs_up": lambda: sum(curl(f, 1.0) for f in ("index", "middle", "ring", "pinky")) + spread(-0.3),
    "victory": lambda: spread(1.2, ("index", "middle")) + curl("ring", 0.95) + curl("pinky", 0.95)
    + curl("thumb", 0.6) + oppose(0.7),
}


def pose_angles(name: str) -> Tensor:
    """(15, 3) float64 anatomical angles of the library pose ``name``."""
    if name not in POSE_LIBRARY:
        raise ValueError(f"unknown pose {name!r}: expected one of {sorted(POSE_LIBRARY)}")
    return POSE_LIBRARY[name]().clone()


@lru_cache(maxsize=1)
def finger_axes() -> Tensor:
    """(15, 3, 3) float64 anatomical frames (columns twist, spread, flex), right hand.

    Taken from ``handflow.hand.openhand.anatomical_axes`` (MANO-compatible rest frame)."""
    return anatomical_axes().to(torch.float64)


def angles_to_rotmats(angles: Tensor, side: Side = "right") -> Tensor:
    """(*, 15, 3) anatomical angles -> (*, 15, 3, 3) local joint rotations (MANO order).

    For ``side="left"`` the rotations are mirrored (``M R M``) so the left model, which
    mirrors them back, produces the same articulation."""
    check_side(side)
    if angles.shape[-2:] != (NUM_FINGER_JOINTS, 3):
        raise ValueError(f"angles must be (*, 15, 3), got {tuple(angles.shape)}")
    A = finger_axes().to(angles.dtype)
    rotvec = (A @ angles[..., None])[..., 0]
    R = axis_angle_to_matrix(rotvec)
    return R if side == "right" else mirror_rotmats(R)


def perturb_angles(angles: Tensor, generator: torch.Generator, scale: float = 1.0) -> Tensor:
    """Add Gaussian noise (std ``PERTURB_STD`` × ``scale``) and clamp to plausible limits."""
    std = torch.tensor(PERTURB_STD, dtype=angles.dtype) * scale
    out = angles + torch.randn(angles.shape, generator=generator, dtype=angles.dtype) * std
    out[..., FLEX] = out[..., FLEX].clamp(*FLEX_LIMITS)
    out[..., SPREAD] = out[..., SPREAD].clamp(-SPREAD_LIMIT, SPREAD_LIMIT)
    return out


def sample_articulation(
    name: str | None,
    side: Side,
    generator: torch.Generator,
    prior: object | None = None,
    scale: float = 1.0,
) -> Tensor:
    """(15, 3, 3) float64 finger rotations: library pose ``name`` perturbed, or (``name`` None)
    one sample of ``prior`` (a :class:`handflow.hand.base.PosePrior`)."""
    if name is None:
        if prior is None:
            raise ValueError("sample_articulation: name=None needs a pose prior")
        return prior.sample(1, side, generator)[0].to(torch.float64)  # type: ignore[attr-defined]
    return angles_to_rotmats(perturb_angles(pose_angles(name), generator, scale), side)
