"""Moved to :mod:`handflow.models.baselines` (one module per baseline, explicit registry in
:data:`handflow.models.MODEL_REGISTRY`); this module keeps ``from handflow.baselines import ...`` working."""

from handflow.models.baselines import (  # noqa: F401
    HEAD_HIDDEN,
    HEAD_LAYERS,
    LOGVAR_MAX,
    LOGVAR_MIN,
    CVAEModel,
    DeterministicModel,
    GaussianModel,
    MCDropoutModel,
    __all__,
    gaussian_log_prob,
    head_mlp,
    kl_to_standard_normal,
)
