"""The ``mcdropout`` baseline: dropout before every linear layer, kept on for sampling."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from handflow.config import Config
from handflow.constants import PARAM_DIM
from handflow.models.base import HandPoseModel
from handflow.models.baselines.common import head_mlp


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
