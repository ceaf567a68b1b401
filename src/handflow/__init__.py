"""handflow: two interacting hands in 3D from one RGB image, as a distribution of poses.

A complete, open implementation of *HandFlow: Quantifying View-Dependent 3D Ambiguity in
Two-Hand Reconstruction with Normalizing Flow* (Wang et al., VMV 2022).

Sub-packages follow the architecture:

- :mod:`handflow.geometry`  rotations (6D, axis-angle), cameras, crops, root parameterization
- :mod:`handflow.hand`      hand models (``openhand`` default, ``mano``), pose priors, collision
- :mod:`handflow.render`    mesh rendering (moderngl/EGL and a PyTorch z-buffer), visibility
- :mod:`handflow.data`      InterHand2.6M reader and the synthetic two-hand dataset
- :mod:`handflow.flow`      conditional GLOW normalizing flow
- :mod:`handflow.models`    HandFlowNet and baselines
- :mod:`handflow.metrics`   MPJPE (RR/RRR/Global/RR*), MMD, sample spread
- :mod:`handflow.multihands` many plausible annotations per image
- :mod:`handflow.training`  Lightning training
- :mod:`handflow.cli`       the ``handflow`` command

The top level (each with an example that runs as a doctest, ``tests/test_api.py``):
:func:`load_model` (a checkpoint as a plain ``nn.Module`` predictor, no Lightning),
:func:`predict`, :func:`predict_from_keypoints`, :func:`train`, :func:`evaluate`,
:func:`synthesize`, :func:`load_hand_model`, :func:`pretrained`. Optional parts need extras (:mod:`handflow.extras`).
"""

import importlib
from importlib import metadata as _metadata
from typing import Any

try:  # the one version source: pyproject.toml's [project] version, through the installed metadata
    __version__ = _metadata.version("handflow")
except _metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

#: top-level name -> the module that defines it (imported on first use: ``import handflow`` stays light)
_LAZY = {
    "load_model": "handflow.predictor",
    "predict": "handflow.inference",
    "train": "handflow.api",
    "evaluate": "handflow.api",
    "synthesize": "handflow.api",
    "load_hand_model": "handflow.api",
    "pretrained": "handflow.api",  # the models shipped with the package (handflow.models.shipped)
    "predict_from_keypoints": "handflow.lifting",  # lifting 2D keypoints (docs/lifting.md)
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:  # lazy: keep ``import handflow`` light
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'handflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
