"""Lightning training of HandFlowNet and the baselines."""

from handflow.training.module import HandFlowModule
from handflow.training.runner import CheckpointMismatch, fit_normalizer, load_checkpoint, train

__all__ = ["HandFlowModule", "CheckpointMismatch", "fit_normalizer", "load_checkpoint", "train"]
