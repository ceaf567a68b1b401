"""Hand models (``openhand`` embedded default, ``mano`` from the official files), pose
priors and inter-hand collision proxies."""

from handflow.hand.base import HandModel, HandOutput, PosePrior, lbs, mirror_rotmats

__all__ = ["HandModel", "HandOutput", "PosePrior", "lbs", "mirror_rotmats"]
