"""Hand models (``openhand`` embedded default, ``mano`` from the official files), pose
priors and inter-hand collision proxies."""

from handflow.hand.base import HandModel, HandOutput, PosePrior, lbs, mirror_rotmats
from handflow.hand.collision import collide, hand_proxies, penetration
from handflow.hand.openhand import OpenHand
from handflow.hand.registry import available_hand_models, load_hand_model

__all__ = [
    "HandModel",
    "HandOutput",
    "OpenHand",
    "PosePrior",
    "available_hand_models",
    "collide",
    "hand_proxies",
    "lbs",
    "load_hand_model",
    "mirror_rotmats",
    "penetration",
]
