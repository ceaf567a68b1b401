"""The four baselines of the paper (SPEC section 5), behind the same :class:`HandPoseModel`
interface as HandFlowNet: same backbone, standardized 218-parameter target (the model's
``normalizer``), crop, and the shared ``L_θ``/``L_3D``/``L_2D``/``L_R`` terms that the training
module applies to ``z0_std`` and ``sample_std`` of every model. They differ only in the head
(one MLP builder, :func:`head_mlp`, for all of them) and its likelihood term.

| kind | head (feature ``v`` (B, C) →) | likelihood term (``nll``) | z = 0 estimate | samples |
|---|---|---|---|---|
| ``deterministic`` | MLP → ``y`` | none | the regression | the regression, repeated |
| ``gaussian`` | MLP → mean, log-variance | diagonal Gaussian NLL | the mean | mean + σ ε |
| ``mcdropout`` | MLP, dropout before each linear layer | none (dropout on in training) | head, no dropout | n stochastic passes |
| ``cvae`` | encoder q(w∣y, v), decoder p(y∣w, v) | negative ELBO (KL, free bits) | decoder at w = 0 | decoder at w ~ N(0, I) |

Like ``L_nll`` of the flow, the likelihood terms are per dimension (÷ 218), take the minimum
over an image's annotations (MultiHands) and use only images with hand-model parameters
(``y_mask``). Every noise draw (Gaussian ε, dropout masks, cVAE w) comes from the given CPU
generator and is moved to the features' device, so sampling is reproducible on any device.
Each ``kind`` is listed in the explicit registry :data:`handflow.models.MODEL_REGISTRY`, so
``handflow train --model gaussian``, :func:`handflow.training.load_checkpoint` and
``handflow.predict`` work unchanged. One module per baseline; :mod:`.common` holds the head
builder and the Gaussian/KL helpers they share. docs/baselines.md explains the choices.
"""

from handflow.models.baselines.common import (
                                              HEAD_HIDDEN,
                                              HEAD_LAYERS,
                                              LOGVAR_MAX,
                                              LOGVAR_MIN,
                                              gaussian_log_prob,
                                              head_mlp,
                                              kl_to_standard_normal,
)
from handflow.models.baselines.cvae import CVAEModel
from handflow.models.baselines.deterministic import DeterministicModel
from handflow.models.baselines.gaussian import GaussianModel
from handflow.models.baselines.mcdropout import MCDropoutModel

__all__ = ["DeterministicModel", "GaussianModel", "MCDropoutModel", "CVAEModel", "head_mlp", "gaussian_log_prob",
           "kl_to_standard_normal", "HEAD_HIDDEN", "HEAD_LAYERS", "LOGVAR_MIN", "LOGVAR_MAX"]
