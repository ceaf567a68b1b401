"""ResNet backbones from torchvision (weights never downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

__all__ = ["Backbone", "FEATURE_DIMS"]

FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """torchvision ResNet without its classifier: image (B,3,S,S) in [0,1] -> pooled feature
    (B, C), ImageNet normalization inside.

    Args:
        name: ``resnet18`` | ``resnet34`` | ``resnet50``.
        pretrained_path: optional LOCAL file with torchvision ImageNet weights (a state dict);
            nothing is ever downloaded.
    """

    def __init__(self, name: str = "resnet18", pretrained_path: str | None = None) -> None:
        super().__init__()
        if name not in FEATURE_DIMS:
            raise ValueError(f"unknown backbone {name!r}: expected one of {sorted(FEATURE_DIMS)}")
        net = getattr(torchvision.models, name)(weights=None)
        if pretrained_path:
            p = Path(pretrained_path)
            if not p.exists():
                raise FileNotFoundError(f"pretrained backbone weights not found: {p} (handflow never downloads weights)")
            state = torch.load(p, map_location="cpu", weights_only=True)
            missing, unexpected = net.load_state_dict(state, strict=False)
            bad = [k for k in missing if not k.startswith("fc.")]
            if bad or unexpected:
                raise ValueError(f"{p} does not fit {name}: missing {bad[:5]}, unexpected {list(unexpected)[:5]}")
        net.fc = nn.Identity()
        self.net = net
        self.dim = FEATURE_DIMS[name]
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, S, S) in [0, 1] -> (B, C)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, S, S), got {tuple(images.shape)}")
        return self.net((images - self.mean) / self.std)
