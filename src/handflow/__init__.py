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
"""

__version__ = "0.1.0"

__all__ = ["__version__", "predict", "predict_from_keypoints"]


def __getattr__(name: str):  # lazy: keep ``import handflow`` light
    if name == "predict":
        from handflow.inference import predict

        return predict
    if name == "predict_from_keypoints":  # lifting 2D keypoints (docs/lifting.md)
        from handflow.lifting import predict_from_keypoints

        return predict_from_keypoints
    raise AttributeError(f"module 'handflow' has no attribute {name!r}")
