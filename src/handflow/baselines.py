"""The four baselines of the paper (SPEC section 5), behind the same :class:`HandPoseModel`
interface as HandFlowNet: same backbone, standardized 218-parameter target (the model's
``normalizer``), crop, and the shared ``L_θ``/``L_3D``/``L_2D``/``L_R`` terms that the training
module applies to ``z0_std`` and ``sample_std`` of every model. They differ only in the head
(one MLP builder, :func:`head_mlp`, for all of them) and its likelihood term.

| kind | head (feature ``v`` (B, C) →) | likelihood term (``nll``) | z = 0 estimate | samples |
|---|---|---|---|---|
| ``deterministic`` | MLP → ``y`` | none | the regression | the regression, repeated |
| ``gaussian`` | MLP → mean, log-variance | diagonal Gaussian NLL | the mean | mean + σ ε |
| ``mcdropout`` | MLP with dropout before every linear layer | none (trained with dropout on) | head without dropout (eval) | n stochastic passes of the head |
| ``cvae`` | encoder q(w∣y, v), decoder p(y∣w, v) | negative ELBO (KL with free bits) | decoder at w = 0 | decoder at prior draws w ~ N(0, I) |

Like ``L_nll`` of the flow, the likelihood terms are per dimension (÷ 218), take the minimum
over an image's annotations (MultiHands) and use only images with hand-model parameters
(``y_mask``). Every noise draw (Gaussian ε, dropout masks, cVAE w) comes from the given CPU
generator and is moved to the features' device, so sampling is reproducible on any device.
Each ``kind`` registers itself in :data:`handflow.models.MODEL_REGISTRY`, so
``handflow train --model gaussian``, :func:`handflow.training.load_checkpoint` and
``handflow.predict`` work unchanged. docs/baselines.md explains the choices.
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
           "kl_to_standard_normal", "HEAD_HIDDEN", "HEAD_LAYERS", "LOGVAR_MIN", "LOGVAR_MAX"]

#: hidden width of every baseline head (and of the cVAE encoder and decoder)
HEAD_HIDDEN = 512
#: hidden layers of every baseline head
HEAD_LAYERS = 2
#: bounds of every predicted log-variance (standardized units): σ in [e^-5, e^2] = [0.0067, 7.4].
#: The lower bound keeps the NLL finite on exactly fitted targets, the upper one keeps samples
#: within a few training-set standard deviations.
LOGVAR_MIN, LOGVAR_MAX = -10.0, 4.0
LOG_2PI = math.log(2 * math.pi)
_HALF = (torch.float16, torch.bfloat16)


def head_mlp(inp: int, out: int, hidden: int = HEAD_HIDDEN, layers: int = HEAD_LAYERS) -> nn.Sequential:
    """``inp -> [Linear(hidden), ReLU] x layers -> Linear(out)``: (..., inp) -> (..., out).

    The last layer starts at zero, so every head starts at the training mean (standardized 0)
    and the cVAE encoder at the prior (mean 0, log-variance 0)."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(inp if i == 0 else hidden, hidden), nn.ReLU()]
    mods.append(nn.Linear(hidden if layers else inp, out))
    net = nn.Sequential(*mods)
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def _clamp_logvar(x: Tensor) -> Tensor:
    """Bound log-variances to [LOGVAR_MIN, LOGVAR_MAX] (identity inside). Any shape."""
    return x.clamp(LOGVAR_MIN, LOGVAR_MAX)


def _upcast(x: Tensor) -> Tensor:
    """16-bit tensors (mixed precision) -> float32 for likelihoods; float32/64 unchanged."""
    return x.float() if x.dtype in _HALF else x


def gaussian_log_prob(y: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """``log N(y; mean, diag(exp logvar))`` summed over the last dim. Broadcasts; (..., D) -> (...)."""
    y, mean, logvar = _upcast(y), _upcast(mean), _upcast(logvar)
    return -0.5 * ((y - mean).square() * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor, reduce: bool = True) -> Tensor:
    """``KL(N(mu, diag exp logvar) ‖ N(0, I))``: (..., L) -> (...) summed over the last dim,
    or per dimension (..., L) with ``reduce=False``."""
    mu, logvar = _upcast(mu), _upcast(logvar)
    kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)
    return kl.sum(-1) if reduce else kl


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise of ``like``'s dtype and device. With a (CPU) generator it is drawn
    on the CPU and moved, so a seed gives the same numbers on every device."""
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


def _masked_targets(y_std: Tensor, y_mask: Tensor) -> Tensor:
    """Padding annotations (mask False) -> 0 so that they stay finite: (B, N, 218)."""
    return torch.where(y_mask[..., None], y_std, torch.zeros_like(y_std))


class DeterministicModel(HandPoseModel):
    """Regression: a Dirac at the predicted parameters. Trained by the shared terms only
    (``L_θ`` on the regression, ``L_3D``/``L_2D``/``L_R`` on it and on its repeats)."""

    kind = "deterministic"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.head = head_mlp(self.backbone.dim, PARAM_DIM)

    def z0_std(self, feats: Tensor) -> Tensor:
        """(B, C) -> the regression (B, 218), standardized."""
        return self.head(feats)

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, C) -> the regression repeated (B, n, 218); ``generator`` is unused."""
        return self.estimate_and_sample_std(feats, n, generator)[1]

    def estimate_and_sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(B, C) -> (regression (B, 218), its n repeats (B, n, 218)); one head pass."""
        z0 = self.z0_std(feats)
        return z0, z0[:, None].expand(-1, n, -1).clone()

    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """No likelihood: a Dirac has none. Returns ``{}``."""
        return {}


class GaussianModel(HandPoseModel):
    """Aleatoric baseline: diagonal Gaussian with regressed mean and log-variance (clamped to
    [LOGVAR_MIN, LOGVAR_MAX]), trained by its NLL (``nll``) plus the shared terms."""

    kind = "gaussian"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.head = head_mlp(self.backbone.dim, 2 * PARAM_DIM)

    def mean_logvar(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C) -> mean (B, 218), log-variance (B, 218), standardized units."""
        mean, raw = self.head(feats).chunk(2, -1)
        return mean, _clamp_logvar(raw)

    def z0_std(self, feats: Tensor) -> Tensor:
        """(B, C) -> the mean (B, 218), standardized."""
        return self.mean_logvar(feats)[0]

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, C) -> ``mean + σ ε`` (B, n, 218), ε ~ N(0, I) from ``generator``."""
        return self.estimate_and_sample_std(feats, n, generator)[1]

    def estimate_and_sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(B, C) -> (mean (B, 218), samples (B, n, 218)); one head pass."""
        mean, logvar = self.mean_logvar(feats)
        eps = _randn((feats.shape[0], n, PARAM_DIM), mean, generator)
        return mean, mean[:, None] + torch.exp(0.5 * logvar)[:, None] * eps

    def log_prob_std(self, feats: Tensor, y_std: Tensor) -> Tensor:
        """``log N(y; mean(v), σ²(v))`` of standardized annotations: (B, C), (B, N, 218) -> (B, N)."""
        mean, logvar = self.mean_logvar(feats)
        return gaussian_log_prob(y_std, mean[:, None], logvar[:, None])

    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """``nll``: min over the N annotations of the Gaussian NLL, per dimension, averaged over
        images with ≥ 1 annotation (:func:`~handflow.models.losses.nll_loss`).

        Args:
            feats: (B, C); y_std: (B, N, 218) standardized annotations; y_mask: (B, N) bool;
            generator: unused (the NLL is exact).
        """
        if not self.cfg.loss.active("nll") or not bool(y_mask.any()):
            return {}
        return {"nll": nll_loss(self.log_prob_std(feats, _masked_targets(y_std, y_mask)), y_mask)}


class MCDropoutModel(HandPoseModel):
    """MC dropout (Gal & Ghahramani 2016): inverted dropout with p = ``cfg.model.dropout``
    before every linear layer of the regression head (on the backbone feature and on both
    hidden layers). Dropout is active in training (as MC dropout is trained: ``z0_std`` in
    ``train()`` mode is a stochastic pass) and always for sampling: each sample is one
    stochastic pass of the head on the same feature (the backbone runs once). The z = 0
    estimate in ``eval()`` mode is the head without dropout, the usual test-time approximation
    of the predictive mean (inverted dropout keeps the expected activations). Masks are drawn
    with ``torch.bernoulli`` from the given CPU generator (not ``nn.Dropout``), so sampling
    is reproducible with a seed, on any device and in either mode."""

    kind = "mcdropout"
    config_fields = ("dropout",)

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.p = float(cfg.model.dropout)
        if not 0.0 < self.p < 1.0:
            raise ValueError(f"model.dropout must be in (0, 1) for mcdropout, got {self.p}")
        self.head = head_mlp(self.backbone.dim, PARAM_DIM)

    def _drop(self, x: Tensor, generator: torch.Generator | None, keep_first: bool = False) -> Tensor:
        """Inverted dropout of x (B, S, D) or (B, D). ``keep_first``: row ``[:, 0]`` of a
        (B, S, D) input is left intact and the masks of the other rows are drawn exactly as for
        x[:, 1:] alone (so a combined pass gives the same samples as :meth:`sample_std`)."""
        keep = 1.0 - self.p
        shape = (x.shape[0], x.shape[1] - 1, *x.shape[2:]) if keep_first else tuple(x.shape)
        if generator is None:
            mask = torch.bernoulli(torch.full(shape, keep, dtype=x.dtype, device=x.device))
        else:
            mask = torch.bernoulli(torch.full(shape, keep, dtype=x.dtype), generator=generator).to(x.device)
        mask = mask / keep
        if keep_first:
            mask = torch.cat([mask.new_ones(x.shape[0], 1, *x.shape[2:]), mask], 1)
        return x * mask

    def head_pass(self, feats: Tensor, stochastic: bool, generator: torch.Generator | None = None,
                  keep_first: bool = False) -> Tensor:
        """(B, [S,] C) -> (B, [S,] 218); dropout before each linear layer when ``stochastic``
        (``keep_first``: not on row ``[:, 0]``, see :meth:`_drop`)."""
        x = feats
        for layer in self.head:
            if stochastic and isinstance(layer, nn.Linear):
                x = self._drop(x, generator, keep_first)
            x = layer(x)
        return x

    def z0_std(self, feats: Tensor) -> Tensor:
        """(B, C) -> (B, 218): without dropout in eval mode, one stochastic pass in train mode."""
        return self.head_pass(feats, stochastic=self.training)

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, C) -> n stochastic passes of the head (B, n, 218), dropout on in any mode."""
        return self.head_pass(feats[:, None].expand(-1, n, -1), stochastic=True, generator=generator)

    def estimate_and_sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(B, C) -> (z0 (B, 218), samples (B, n, 218)). In eval mode one head pass over
        (B, 1 + n) rows, the first without dropout; equal to separate calls with the same
        generator."""
        if self.training:
            return self.z0_std(feats), self.sample_std(feats, n, generator)
        y = self.head_pass(feats[:, None].expand(-1, n + 1, -1), stochastic=True, generator=generator, keep_first=True)
        return y[:, 0], y[:, 1:]

    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """No likelihood: trained by the shared terms with dropout on. Returns ``{}``."""
        return {}


class CVAEModel(HandPoseModel):
    """Conditional VAE (Sohn et al. 2015) over the standardized parameters.

    - encoder ``q(w | y, v) = N(mu, diag exp(logvar))`` from an MLP on ``[y, v]``;
    - decoder ``p(y | w, v) = N(MLP([w, v]), diag exp(s))`` with a learned per-dimension
      log-variance ``s``, so that the ELBO is a proper bound on the likelihood in nats,
      comparable with the Gaussian baseline's NLL;
    - prior ``N(0, I)`` of dimension ``cfg.model.latent_dim``.

    Training maximises the ELBO (one reparameterised draw; min over annotations) with **free
    bits** (Kingma et al. 2016): the batch-mean KL of each latent dimension costs at least
    ``cfg.model.free_bits`` nats (default 0.1) and brings no gradient below that floor, so the
    KL cannot pull the posterior onto the prior before the decoder has learned to use ``w``.
    On a toy two-mode problem (benchmarks/toy_cvae_collapse.py, docs/baselines.md) the plain
    ELBO collapses (KL → 0, one mode) and 0.1 nats recovers both modes; ``free_bits=0`` gives
    the plain ELBO. The z = 0 estimate decodes ``w = 0``; samples are decoder means at prior
    draws (the decoder noise is independent per dimension and would only add unstructured
    jitter).
    """

    kind = "cvae"
    config_fields = ("latent_dim",)

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.latent = int(cfg.model.latent_dim)
        if self.latent < 1:
            raise ValueError(f"model.latent_dim must be >= 1 for cvae, got {self.latent}")
        self.free_bits = float(cfg.model.free_bits)
        C = self.backbone.dim
        self.encoder = head_mlp(PARAM_DIM + C, 2 * self.latent)
        self.decoder = head_mlp(self.latent + C, PARAM_DIM)
        self.dec_logvar = nn.Parameter(torch.zeros(PARAM_DIM))

    def decode(self, w: Tensor, feats: Tensor) -> Tensor:
        """Decoder means: w (B, [S,] L), feats (B, C) -> (B, [S,] 218) standardized."""
        v = feats if w.dim() == 2 else feats[:, None].expand(-1, w.shape[1], -1)
        return self.decoder(torch.cat([w, v], -1))

    def encode(self, y: Tensor, feats: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior: y (B, N, 218) standardized, feats (B, C) -> mu, logvar (B, N, L)."""
        v = feats[:, None].expand(-1, y.shape[1], -1)
        mu, raw = self.encoder(torch.cat([y, v], -1)).chunk(2, -1)
        return mu, _clamp_logvar(raw)

    def decoder_logvar(self) -> Tensor:
        """The learned, clamped decoder log-variance (218,)."""
        return _clamp_logvar(self.dec_logvar)

    def z0_std(self, feats: Tensor) -> Tensor:
        """(B, C) -> decoder at w = 0 (B, 218)."""
        return self.decode(feats.new_zeros(feats.shape[0], self.latent), feats)

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, C) -> decoder means at n prior draws (B, n, 218)."""
        return self.decode(_randn((feats.shape[0], n, self.latent), feats, generator), feats)

    def estimate_and_sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(B, C) -> (z0 (B, 218), samples (B, n, 218)): one decoder pass at w = [0, w_1..w_n];
        equal to separate calls with the same generator."""
        w = _randn((feats.shape[0], n, self.latent), feats, generator)
        y = self.decode(torch.cat([w.new_zeros(w.shape[0], 1, self.latent), w], 1), feats)
        return y[:, 0], y[:, 1:]

    def elbo_terms(self, feats: Tensor, y_std: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Reconstruction NLL (B, N) and per-dimension KL (B, N, L), in nats, with one
        reparameterised draw ``w ~ q(w | y, v)`` per annotation.

        Args:
            feats: (B, C); y_std: (B, N, 218) standardized; generator: CPU generator for w.
        """
        B, N = y_std.shape[:2]
        mu, logvar = self.encode(y_std, feats)
        w = mu + torch.exp(0.5 * logvar) * _randn(tuple(mu.shape), mu, generator)
        y_hat = self.decode(w.flatten(0, 1), feats.repeat_interleave(N, 0)).unflatten(0, (B, N))
        rec = -gaussian_log_prob(y_std, y_hat, self.decoder_logvar())
        return rec, kl_to_standard_normal(mu, logvar, reduce=False)

    def neg_elbo(self, feats: Tensor, y_std: Tensor, generator: torch.Generator | None) -> Tensor:
        """(B, C), (B, N, 218) -> (B, N) negative ELBO (nats), one reparameterised draw."""
        rec, kl = self.elbo_terms(feats, y_std, generator)
        return rec + kl.sum(-1)

    def head_losses(self, feats: Tensor, y_std: Tensor, y_mask: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """``nll``: the negative ELBO per dimension of each image's best annotation (min over
        the N annotations of the exact negative ELBO), averaged over images with ≥ 1
        annotation; the KL part with free bits, ``Σ_l max(free_bits, mean_images KL_l)``.
        With ``free_bits = 0`` it equals ``nll_loss(-neg_elbo, y_mask)``.

        Args:
            feats: (B, C); y_std: (B, N, 218) standardized annotations; y_mask: (B, N) bool;
            generator: CPU generator for the posterior draws.
        """
        if not self.cfg.loss.active("nll") or not bool(y_mask.any()):
            return {}
        rec, kl = self.elbo_terms(feats, _masked_targets(y_std, y_mask), generator)
        ne = torch.where(y_mask, rec + kl.sum(-1), torch.full_like(rec, float("inf")))
        rows = y_mask.any(1)
        best = ne.argmin(1)[rows]  # (R,) best annotation of each image with parameters
        idx = torch.arange(len(rows), device=rows.device)[rows]
        rec_b, kl_b = rec[idx, best], kl[idx, best]  # (R,), (R, L)
        kl_term = kl_b.mean(0).clamp_min(self.free_bits).sum()
        return {"nll": (rec_b.mean() + kl_term) / PARAM_DIM}


for _cls in (DeterministicModel, GaussianModel, MCDropoutModel, CVAEModel):
    MODEL_REGISTRY[_cls.kind] = _cls
