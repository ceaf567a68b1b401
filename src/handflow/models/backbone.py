"""ResNet backbones from torchvision (weights never downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from handflow.errors import MissingFileError
from handflow.safeio import load_torch_file

__all__ = ["Backbone", "FEATURE_DIMS", "IMAGENET_MEAN", "IMAGENET_STD", "load_local_weights"]

#: pooled feature size per architecture
FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
#: ImageNet input statistics (RGB, images in [0, 1]) that torchvision's weights expect
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: keys under which training frameworks nest a state dict
_NESTED_KEYS = ("state_dict", "model")


def load_local_weights(net: nn.Module, path: str | Path, name: str) -> None:
    """Load a LOCAL torchvision-format state dict into ``net`` (classifier ``fc.*`` optional).

    Raises:
        MissingFileError: no such file (a ``FileNotFoundError``; handflow never downloads weights).
        UnsafeFileError, CorruptFileError: a file that would run code, or an unreadable one
            (both ``ValueError``; :func:`handflow.safeio.load_torch_file`).
        ValueError: weights of another architecture.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(
            f"pretrained backbone weights not found: {p} (handflow never downloads weights; "
            f"save torchvision's {name} ImageNet state dict to a local file and pass its path)"
        )
    state = load_torch_file(p, what="backbone weights")  # weights_only=True; unsafe/corrupt: one-line ValueError
    for key in _NESTED_KEYS:
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{p} does not hold a state dict (got {type(state).__name__})")
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.startswith("fc.")]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        raise ValueError(
            f"{p} does not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatch {shape[:5]} (weights of another ResNet depth?)"
        )
    net.load_state_dict(state, strict=False)


class Backbone(nn.Module):
    """torchvision ResNet without its classifier: image (B,3,S,S) in [0,1] -> pooled feature
    (B, C), ImageNet normalization inside.

    Args:
        name: ``resnet18`` | ``resnet34`` | ``resnet50`` (C = 512, 512, 2048).
        pretrained_path: optional LOCAL file with torchvision ImageNet weights (a state dict);
            torchvision is always called with ``weights=None``: nothing is ever downloaded.
    """

    def __init__(self, name: str = "resnet18", pretrained_path: str | None = None) -> None:
        super().__init__()
        if name not in FEATURE_DIMS:
            raise ValueError(f"unknown backbone {name!r}: expected one of {sorted(FEATURE_DIMS)}")
        net = getattr(torchvision.models, name)(weights=None)
        if pretrained_path:
            load_local_weights(net, pretrained_path, name)
        net.fc = nn.Identity()
        self.net = net
        self.name = name
        self.dim = FEATURE_DIMS[name]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, S, S) RGB in [0, 1] -> pooled feature (B, C)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, S, S) RGB in [0, 1], got {tuple(images.shape)}")
        return self.net((images - self.mean) / self.std)
