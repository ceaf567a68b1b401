"""The four baselines of the paper (SPEC section 5), behind the same :class:`HandPoseModel`
interface as HandFlowNet: same backbone, standardized 218-parameter target, crop, and the
shared ``L_θ``/``L_3D``/``L_2D``/``L_R`` terms applied by the training module to ``z0_std``
and ``sample_std``. They differ only in the head and its likelihood term.

| kind | head (feature ``v`` (B, C) →) | likelihood term (``nll``) | samples |
|---|---|---|---|
| ``deterministic`` | MLP → ``y`` | none | the prediction, repeated |
| ``gaussian`` | MLP → mean, log-variance | diagonal Gaussian NLL | mean + σ ε |
| ``mcdropout`` | dropout → MLP with dropout → ``y`` | none (trained with dropout on) | dropout kept on, n passes of the head |
| ``cvae`` | encoder q(w∣y, v), decoder p(y∣w, v) | negative ELBO | decoder at prior draws w ~ N(0, I) |

Like ``L_nll`` of the flow, the likelihood terms are per dimension (÷ 218) and take the
minimum over an image's annotations (MultiHands). ``kind`` names are registered in
:data:`handflow.models.MODEL_REGISTRY`, so ``handflow train --model gaussian`` and
``handflow.predict`` work unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from handflow.config import Config
from handflow.constants import PARAM_DIM
from handflow.models import MODEL_REGISTRY, HandPoseModel
from handflow.models.losses import nll_loss

__all__ = ["DeterministicModel", "GaussianModel", "MCDropoutModel", "CVAEModel", "head_mlp", "gaussian_log_prob",
           "kl_to_standard_normal", "HEAD_HIDDEN", "LOGVAR_MIN", "LOGVAR_MAX"]

#: hidden width of every baseline head
HEAD_HIDDEN = 512
#: bounds of predicted log-variances (standardized units): σ in [0.0067, 7.4]
LOGVAR_MIN, LOGVAR_MAX = -10.0, 4.0
LOG_2PI = math.log(2 * math.pi)


def head_mlp(inp: int, out: int, hidden: int = HEAD_HIDDEN) -> nn.Sequential:
    """Two hidden ReLU layers; the last layer starts at zero so every head starts at the
    training mean (standardized 0)."""
    net = nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def _clamp_logvar(x: Tensor) -> Tensor:
    """Bound log-variances to [LOGVAR_MIN, LOGVAR_MAX] (identity inside)."""
    return x.clamp(LOGVAR_MIN, LOGVAR_MAX)


def gaussian_log_prob(y: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """``log N(y; mean, diag(exp logvar))`` summed over the last dim. Broadcasts; (..., D) -> (...)."""
    return -0.5 * ((y - mean).square() * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, diag exp logvar) ‖ N(0, I))`` summed over the last dim: (..., L) -> (...)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise drawn on the CPU generator (reproducible on any device)."""
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


class DeterministicModel(HandPoseModel):
    """Regression: a Dirac at the predicted parameters."""

    kind = "deterministic"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.head = head_mlp(self.backbone.dim, PARAM_DIM)

    def z0_std(self, feats: Tensor) -> Tensor:
        return self.head(feats)

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """The prediction repeated: (B, n, 218)."""
        return self.z0_std(feats)[:, None].expand(-1, n, -1).clone()

    def estimate_and_sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        z0 = self.z0_std(feats)
        return z0, z0[:, None].expand(-1, n, -1).clone()

    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        return {}


class GaussianModel(HandPoseModel):
    """Aleatoric baseline: diagonal Gaussian with regressed mean and log-variance, NLL-trained."""

    kind = "gaussian"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.head = head_mlp(self.backbone.dim, 2 * PARAM_DIM)

    def mean_logvar(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C) -> mean (B, 218), log-variance (B, 218) in standardized units."""
        mean, raw = self.head(feats).chunk(2, -1)
        return mean, _clamp_logvar(raw)

    def z0_std(self, feats: Tensor) -> Tensor:
        return self.mean_logvar(feats)[0]

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.estimate_and_sample_std(feats, n, generator)[1]

    def estimate_and_sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        mean, logvar = self.mean_logvar(feats)
        eps = _randn((feats.shape[0], n, PARAM_DIM), mean, generator)
        return mean, mean[:, None] + torch.exp(0.5 * logvar)[:, None] * eps

    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """``nll``: min over the N annotations of the Gaussian NLL, per dimension."""
        if not self.cfg.loss.active("nll") or not bool(y_mask.any()):
            return {}
        mean, logvar = self.mean_logvar(feats)
        y = torch.where(y_mask[..., None], y_std, torch.zeros_like(y_std))
        return {"nll": nll_loss(gaussian_log_prob(y, mean[:, None], logvar[:, None]), y_mask)}


class MCDropoutModel(HandPoseModel):
    """MC dropout: dropout (p = ``cfg.model.dropout``) on the feature entering the regression
    head and on its hidden layers, active during training and kept on for sampling: each sample
    is one stochastic pass of the head (the backbone runs once). The z = 0 estimate in eval
    mode is the head without dropout (inverted dropout makes it the usual test-time
    approximation of the mean); in training mode it is a stochastic pass, as MC-dropout is
    trained. Masks are drawn from the given CPU generator, so sampling is reproducible."""

    kind = "mcdropout"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.p = float(cfg.model.dropout)
        if not 0.0 < self.p < 1.0:
            raise ValueError(f"model.dropout must be in (0, 1) for mcdropout, got {self.p}")
        self.head = head_mlp(self.backbone.dim, PARAM_DIM)

    def _drop(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        keep = torch.bernoulli(torch.full(x.shape, 1.0 - self.p, dtype=x.dtype), generator=generator).to(x.device)
        return x * keep / (1.0 - self.p)

    def head_pass(self, feats: Tensor, stochastic: bool, generator: torch.Generator | None = None) -> Tensor:
        """(..., C) -> (..., 218), with dropout before each linear layer when ``stochastic``."""
        x = feats
        for layer in self.head:
            if isinstance(layer, nn.Linear) and stochastic:
                x = self._drop(x, generator)
            x = layer(x)
        return x

    def z0_std(self, feats: Tensor) -> Tensor:
        return self.head_pass(feats, stochastic=self.training)

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n stochastic passes of the head: (B, n, 218)."""
        return self.head_pass(feats[:, None].expand(-1, n, -1), stochastic=True, generator=generator)

    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        return {}


class CVAEModel(HandPoseModel):
    """Conditional VAE. Encoder ``q(w | y, v)`` = N(mu, diag σ²) from an MLP on ``[y, v]``;
    decoder ``p(y | w, v)`` = N(MLP([w, v]), diag exp(s)) with a learned per-dimension
    log-variance ``s`` (a learned noise level lets the reconstruction term stay comparable to
    the KL term, which limits posterior collapse); prior N(0, I) of dimension
    ``cfg.model.latent_dim``. Training maximises the ELBO (one reparameterised draw, min over
    annotations); the z = 0 estimate decodes w = 0, samples decode prior draws (decoder means)."""

    kind = "cvae"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.latent = int(cfg.model.latent_dim)
        if self.latent < 1:
            raise ValueError(f"model.latent_dim must be >= 1 for cvae, got {self.latent}")
        C = self.backbone.dim
        self.encoder = head_mlp(PARAM_DIM + C, 2 * self.latent)
        self.decoder = head_mlp(self.latent + C, PARAM_DIM)
        self.dec_logvar = nn.Parameter(torch.zeros(PARAM_DIM))

    def decode(self, w: Tensor, feats: Tensor) -> Tensor:
        """w (B, [n,] L), feats (B, C) -> (B, [n,] 218) decoder means."""
        v = feats if w.dim() == 2 else feats[:, None].expand(-1, w.shape[1], -1)
        return self.decoder(torch.cat([w, v], -1))

    def encode(self, y: Tensor, feats: Tensor) -> tuple[Tensor, Tensor]:
        """y (B, N, 218), feats (B, C) -> mu, logvar (B, N, L)."""
        v = feats[:, None].expand(-1, y.shape[1], -1)
        mu, raw = self.encoder(torch.cat([y, v], -1)).chunk(2, -1)
        return mu, _clamp_logvar(raw)

    def z0_std(self, feats: Tensor) -> Tensor:
        return self.decode(feats.new_zeros(feats.shape[0], self.latent), feats)

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(_randn((feats.shape[0], n, self.latent), feats, generator), feats)

    def neg_elbo(self, feats: Tensor, y_std: Tensor, generator: torch.Generator | None) -> Tensor:
        """(B, C), (B, N, 218) -> (B, N) negative ELBO (nats), one reparameterised draw."""
        mu, logvar = self.encode(y_std, feats)
        w = mu + torch.exp(0.5 * logvar) * _randn(mu.shape, mu, generator)
        rec = -gaussian_log_prob(y_std, self.decode(w.flatten(0, 1), feats.repeat_interleave(y_std.shape[1], 0))
                                 .unflatten(0, y_std.shape[:2]), _clamp_logvar(self.dec_logvar))
        return rec + kl_to_standard_normal(mu, logvar)

    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """``nll``: min over annotations of the negative ELBO, per dimension."""
        if not self.cfg.loss.active("nll") or not bool(y_mask.any()):
            return {}
        y = torch.where(y_mask[..., None], y_std, torch.zeros_like(y_std))
        return {"nll": nll_loss(-self.neg_elbo(feats, y, generator), y_mask)}


for _cls in (DeterministicModel, GaussianModel, MCDropoutModel, CVAEModel):
    MODEL_REGISTRY[_cls.kind] = _cls
