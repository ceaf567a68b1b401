"""ResNet backbones from torchvision (weights never downloaded), with an optional 2D keypoint
head whose soft-argmax joints guide the flow (``model.context=keypoints2d``)."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from handflow.constants import IMAGE_CONTEXTS as CONTEXTS
from handflow.constants import NUM_JOINTS
from handflow.errors import MissingFileError
from handflow.safeio import load_torch_file

__all__ = ["Backbone", "KeypointHead", "CONTEXTS", "FEATURE_DIMS", "IMAGENET_MEAN", "IMAGENET_STD", "load_local_weights"]

#: pooled feature size per architecture
FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
#: channels of ``layer3`` (stride 16), where the keypoint head reads
LAYER3_DIMS = {"resnet18": 256, "resnet34": 256, "resnet50": 1024}
#: width of the keypoint head's hidden layers
KEYPOINT_HEAD_WIDTH = 128
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


class KeypointHead(nn.Module):
    """2D joints from a stride-16 feature map by integral regression (soft-argmax).

    3×3 conv, a ×2 transposed conv (stride 8: 16×16 heatmaps at 128 px), a 1×1 conv to one
    heatmap per joint; a softmax over each heatmap gives the expected pixel centre.

    Args:
        channels: input channels; joints: J heatmaps.

    ``forward``: (B, channels, h, w) -> ``uv`` (B, J, 2) in normalized crop units (-1 and 1 are
    the crop's borders: ``u = 2 x / S - 1`` for crop pixel ``x`` of an S-pixel crop) and
    ``confidence`` (B, J): the heatmap's largest probability, in (0, 1].
    """

    def __init__(self, channels: int, joints: int = NUM_JOINTS, width: int = KEYPOINT_HEAD_WIDTH) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True), nn.Conv2d(width, joints, 1))

    def forward(self, fmap: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.layers(fmap)  # (B, J, H, W)
        B, J, H, W = logits.shape
        prob = logits.flatten(2).softmax(-1).view(B, J, H, W)
        xs = (torch.arange(W, device=fmap.device, dtype=prob.dtype) + 0.5) * (2.0 / W) - 1.0
        ys = (torch.arange(H, device=fmap.device, dtype=prob.dtype) + 0.5) * (2.0 / H) - 1.0
        u = (prob.sum(2) * xs).sum(-1)
        v = (prob.sum(3) * ys).sum(-1)
        return torch.stack([u, v], -1), prob.flatten(2).amax(-1)


class Backbone(nn.Module):
    """torchvision ResNet without its classifier: image (B,3,S,S) in [0,1] -> feature (B, C),
    ImageNet normalization inside.

    Args:
        name: ``resnet18`` | ``resnet34`` | ``resnet50`` (pooled C = 512, 512, 2048).
        pretrained_path: optional LOCAL file with torchvision ImageNet weights (a state dict);
            torchvision is always called with ``weights=None``: nothing is ever downloaded.
        context: ``pooled`` (the paper's flow context: C = the pooled feature) or
            ``keypoints2d``: a :class:`KeypointHead` on ``layer3`` adds the soft-argmax 2D
            joints and their confidence, C = pooled + 3·42 (:meth:`keypoints` reads them back;
            ``L_kp2d`` trains them, :func:`handflow.models.losses.keypoint2d_loss`).
    """

    def __init__(self, name: str = "resnet18", pretrained_path: str | None = None, context: str = "pooled") -> None:
        super().__init__()
        if name not in FEATURE_DIMS:
            raise ValueError(f"unknown backbone {name!r}: expected one of {sorted(FEATURE_DIMS)}")
        if context not in CONTEXTS:
            raise ValueError(f"unknown backbone context {context!r}: expected one of {list(CONTEXTS)}")
        net = getattr(torchvision.models, name)(weights=None)
        if pretrained_path:
            load_local_weights(net, pretrained_path, name)
        net.fc = nn.Identity()
        self.net = net
        self.name = name
        self.context = context
        self.pooled_dim = FEATURE_DIMS[name]
        self.keypoint_head = KeypointHead(LAYER3_DIMS[name]) if context == "keypoints2d" else None
        self.dim = self.pooled_dim + (3 * NUM_JOINTS if self.keypoint_head is not None else 0)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, S, S) RGB in [0, 1] -> feature (B, C)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, S, S) RGB in [0, 1], got {tuple(images.shape)}")
        x = (images - self.mean) / self.std
        if self.keypoint_head is None:
            return self.net(x)
        n = self.net
        x = n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x))))))
        f3 = n.layer3(x)
        pooled = torch.flatten(n.avgpool(n.layer4(f3)), 1)
        uv, conf = self.keypoint_head(f3)
        return torch.cat([pooled, uv.flatten(1), conf], 1)

    def keypoints(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """The 2D joints carried by a ``keypoints2d`` feature (B, C): ``uv`` (B, 42, 2) in
        normalized crop units and ``confidence`` (B, 42)."""
        if self.keypoint_head is None:
            raise ValueError("this backbone has no keypoint head (model.context=pooled)")
        uv = feats[:, self.pooled_dim : self.pooled_dim + 2 * NUM_JOINTS].unflatten(1, (NUM_JOINTS, 2))
        return uv, feats[:, self.pooled_dim + 2 * NUM_JOINTS :]
