"""The ``cvae`` baseline: a conditional VAE with free bits (docs/baselines.md)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from handflow.config import Config
from handflow.constants import PARAM_DIM
from handflow.models.base import HandPoseModel
from handflow.models.baselines.common import (
    clamp_logvar,
    draw_normal,
    gaussian_log_prob,
    head_mlp,
    kl_to_standard_normal,
    masked_targets,
)


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
        return mu, clamp_logvar(raw)

    def decoder_logvar(self) -> Tensor:
        """The learned, clamped decoder log-variance (218,)."""
        return clamp_logvar(self.dec_logvar)

    def z0_std(self, feats: Tensor) -> Tensor:
        """(B, C) -> decoder at w = 0 (B, 218)."""
        return self.decode(feats.new_zeros(feats.shape[0], self.latent), feats)

    def sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, C) -> decoder means at n prior draws (B, n, 218)."""
        return self.decode(draw_normal((feats.shape[0], n, self.latent), feats, generator), feats)

    def estimate_and_sample_std(self, feats: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(B, C) -> (z0 (B, 218), samples (B, n, 218)): one decoder pass at w = [0, w_1..w_n];
        equal to separate calls with the same generator."""
        w = draw_normal((feats.shape[0], n, self.latent), feats, generator)
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
        w = mu + torch.exp(0.5 * logvar) * draw_normal(tuple(mu.shape), mu, generator)
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
        rec, kl = self.elbo_terms(feats, masked_targets(y_std, y_mask), generator)
        ne = torch.where(y_mask, rec + kl.sum(-1), torch.full_like(rec, float("inf")))
        rows = y_mask.any(1)
        best = ne.argmin(1)[rows]  # (R,) best annotation of each image with parameters
        idx = torch.arange(len(rows), device=rows.device)[rows]
        rec_b, kl_b = rec[idx, best], kl[idx, best]  # (R,), (R, L)
        kl_term = kl_b.mean(0).clamp_min(self.free_bits).sum()
        return {"nll": (rec_b.mean() + kl_term) / PARAM_DIM}
