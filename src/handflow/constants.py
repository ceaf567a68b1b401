"""Named joint orders and index maps. No module in handflow uses a bare joint index.

Two orders matter:

* **MANO 16** (kinematic tree of the hand models): 0 wrist; 1-3 index; 4-6 middle;
  7-9 pinky; 10-12 ring; 13-15 thumb; each finger root -> distal.
* **InterHand2.6M 21** (all public joint outputs): per finger tip -> base, fingers
  thumb, index, middle, ring, pinky; wrist last (index 20). Two hands: right 0-20,
  left 21-41.
"""

from __future__ import annotations

from typing import Literal

Side = Literal["right", "left"]
SIDES: tuple[Side, Side] = ("right", "left")

# ----------------------------------------------------------------------------- MANO 16
MANO_JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)  # fmt: skip
NUM_MANO_JOINTS = 16
MANO_WRIST = 0
#: parent of each MANO joint (-1 for the root)
MANO_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
#: MANO joint indices per finger, root -> distal
MANO_FINGERS: dict[str, tuple[int, int, int]] = {
    "thumb": (13, 14, 15),
    "index": (1, 2, 3),
    "middle": (4, 5, 6),
    "ring": (10, 11, 12),
    "pinky": (7, 8, 9),
}
FINGER_NAMES: tuple[str, ...] = ("thumb", "index", "middle", "ring", "pinky")
#: MANO fingertip vertex ids used by InterHand2.6M (thumb, index, middle, ring, pinky)
MANO_TIP_VERTICES: tuple[int, ...] = (745, 317, 445, 556, 673)

# ----------------------------------------------------------------------- InterHand 21
NUM_HAND_JOINTS = 21
NUM_JOINTS = 2 * NUM_HAND_JOINTS
IH_JOINT_NAMES: tuple[str, ...] = tuple(
    f"{finger}{level}" for finger in FINGER_NAMES for level in (4, 3, 2, 1)
) + ("wrist",)
IH_WRIST = 20
RIGHT_ROOT = IH_WRIST  # 20
LEFT_ROOT = NUM_HAND_JOINTS + IH_WRIST  # 41
IH_TIPS: tuple[int, ...] = (0, 4, 8, 12, 16)
#: parent of each InterHand joint within one hand (-1 for the wrist)
IH_PARENTS: tuple[int, ...] = tuple(
    (i + 1 if level != 1 else IH_WRIST)
    for i, (f, level) in enumerate((f, lv) for f in FINGER_NAMES for lv in (4, 3, 2, 1))
) + (-1,)
#: names of the 42 two-hand joints as in InterHand2.6M's skeleton.txt
IH42_JOINT_NAMES: tuple[str, ...] = tuple(f"r_{n}" for n in IH_JOINT_NAMES) + tuple(
    f"l_{n}" for n in IH_JOINT_NAMES
)
IH42_PARENTS: tuple[int, ...] = IH_PARENTS + tuple(
    (p + NUM_HAND_JOINTS if p >= 0 else -1) for p in IH_PARENTS
)


def _mano_to_ih() -> tuple[int, ...]:
    """Index map into the 21-row array [16 MANO joints | 5 tips (thumb..pinky)]."""
    order: list[int] = []
    for k, finger in enumerate(FINGER_NAMES):
        j1, j2, j3 = MANO_FINGERS[finger]
        order += [16 + k, j3, j2, j1]
    order.append(MANO_WRIST)
    return tuple(order)


#: ``ih_joints = mano21[:, MANO21_TO_IH]`` where ``mano21 = cat(mano16, tips)``
MANO21_TO_IH: tuple[int, ...] = _mano_to_ih()
#: for every MANO joint, its index in the InterHand 21 order
MANO_TO_IH: tuple[int, ...] = tuple(MANO21_TO_IH.index(m) for m in range(NUM_MANO_JOINTS))

# --------------------------------------------------------------------- parameterization
NUM_ROT = NUM_MANO_JOINTS  # global + 15 finger joints
NUM_BETAS = 10
ROT6D_DIM = 6 * NUM_ROT  # 96
HAND_PARAM_DIM = ROT6D_DIM + NUM_BETAS + 2 + 1  # 109
PARAM_DIM = 2 * HAND_PARAM_DIM  # 218


def hand_slice(side: Side) -> slice:
    """Slice of the 42 two-hand joints belonging to ``side``."""
    check_side(side)
    return slice(0, NUM_HAND_JOINTS) if side == "right" else slice(NUM_HAND_JOINTS, NUM_JOINTS)


def check_side(side: str) -> Side:
    """Return ``side`` if it is ``"right"`` or ``"left"``, else raise a clear ``ValueError``."""
    if side not in SIDES:
        raise ValueError(f"unknown hand side {side!r}: expected 'right' or 'left'")
    return side  # type: ignore[return-value]

#: flow contexts of an image backbone (``model.context``): ``pooled`` (the paper's: the pooled
#: ResNet feature) or ``keypoints2d`` (pooled feature ⊕ soft-argmax 2D joints ⊕ their confidence,
#: from a keypoint head trained by ``L_kp2d``; handflow.models.backbone)
IMAGE_CONTEXTS = ("pooled", "keypoints2d")
