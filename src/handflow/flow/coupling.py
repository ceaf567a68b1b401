r"""Conditional affine coupling with a bounded log-scale.

The features are split in two contiguous halves: an *identity* half ``a`` that passes
unchanged and a *transformed* half ``b``. A residual MLP sees ``[a, context]`` and returns
a shift ``t`` and a raw log-scale ``r``; the log-scale is bounded as
``s = alpha * tanh(r / alpha)`` so that neither direction can multiply or divide by more
than ``exp(alpha)`` per layer. Direction (z side -> y side)::

    y_a = x_a,   y_b = x_b * exp(s(x_a, c)) + t(x_a, c),   log|det dy/dx| = sum(s)

**Context split.** The MLP's first layer acting on ``[a, c]`` is written as
``W_a a + W_c c + bias``. The context term ``W_c c`` (one ``(B, hidden)`` row per image)
is computed once by :meth:`AffineCoupling.project_context` and broadcast over the sample
axis, so S samples of one image never materialise S copies of the context projection.

The output layer is zero-initialised (s = t = 0): each coupling starts as the identity.
There is no BatchNorm and no dropout: the map is deterministic and every row is
transformed independently of the others in the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["AffineCoupling", "ResidualBlock"]


class ResidualBlock(nn.Module):
    """Pre-activation residual block ``h + W2 relu(W1 relu(h))`` of width ``hidden``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(hidden, hidden)
        self.linear2 = nn.Linear(hidden, hidden)

    def forward(self, h: Tensor) -> Tensor:
        """(*, hidden) -> (*, hidden)."""
        return h + self.linear2(torch.relu(self.linear1(torch.relu(h))))


class AffineCoupling(nn.Module):
    """Affine coupling layer conditioned on a context vector.

    Arguments:
        dim: number of features D (>= 2).
        context_dim: size C of the context vector.
        hidden: width of the coupling MLP.
        blocks: number of residual blocks of the MLP.
        scale_bound: alpha of the bounded log-scale ``alpha * tanh(raw / alpha)``.
        swap: if False the first ``D // 2`` features are the identity half, else the
            last ``D - D // 2`` features are (alternate it between steps).

    ``x`` is ``(B, D)`` or ``(B, S, D)``; the context projection is ``(B, hidden)``.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        hidden: int = 1024,
        blocks: int = 2,
        scale_bound: float = 2.0,
        swap: bool = False,
    ) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"AffineCoupling: dim must be >= 2 to split in halves, got {dim}")
        if context_dim < 1 or hidden < 1 or blocks < 0:
            raise ValueError(
                f"AffineCoupling: need context_dim >= 1, hidden >= 1, blocks >= 0; got "
                f"{context_dim}, {hidden}, {blocks}"
            )
        if not scale_bound > 0:
            raise ValueError(f"AffineCoupling: scale_bound must be > 0, got {scale_bound}")
        self.dim, self.context_dim, self.hidden = dim, context_dim, hidden
        self.scale_bound = float(scale_bound)
        self.swap = bool(swap)
        # split point: features [:split] and [split:]
        self.split = dim // 2
        n_id = dim - self.split if self.swap else self.split
        self.n_transformed = dim - n_id
        self.input_layer = nn.Linear(n_id, hidden)
        self.context_layer = nn.Linear(context_dim, hidden, bias=False)
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(blocks))
        self.output_layer = nn.Linear(hidden, 2 * self.n_transformed)
        nn.init.zeros_(self.output_layer.weight)
        nn.init.zeros_(self.output_layer.bias)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, context_dim={self.context_dim}, hidden={self.hidden}, "
            f"scale_bound={self.scale_bound}, swap={self.swap}"
        )

    def project_context(self, context: Tensor) -> Tensor:
        """The context part of the first layer: (B, C) -> (B, hidden), once per image."""
        return self.context_layer(context)

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        first, second = x[..., : self.split], x[..., self.split :]
        return (second, first) if self.swap else (first, second)

    def _join(self, identity: Tensor, transformed: Tensor) -> Tensor:
        parts = (transformed, identity) if self.swap else (identity, transformed)
        return torch.cat(parts, -1)

    def _shift_logscale(self, identity: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """identity half (B, [S,] n) and ctx (B, hidden) -> shift, bounded log-scale."""
        if identity.dim() == 3:
            ctx = ctx.unsqueeze(-2)  # broadcast over the sample axis
        h = self.input_layer(identity) + ctx
        for block in self.blocks:
            h = block(h)
        shift, raw = self.output_layer(torch.relu(h)).chunk(2, -1)
        alpha = self.scale_bound
        return shift, alpha * torch.tanh(raw / alpha)

    def forward(self, x: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """z side -> y side: ``x`` (B, [S,] D), ``ctx`` (B, hidden) -> (y, log|det dy/dx|)."""
        identity, transformed = self._halves(x)
        shift, log_scale = self._shift_logscale(identity, ctx)
        y = self._join(identity, transformed * log_scale.exp() + shift)
        return y, log_scale.sum(-1)

    def inverse(self, y: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """y side -> z side: ``y`` (B, [S,] D), ``ctx`` (B, hidden) -> (x, log|det dx/dy|)."""
        identity, transformed = self._halves(y)
        shift, log_scale = self._shift_logscale(identity, ctx)
        x = self._join(identity, (transformed - shift) * torch.exp(-log_scale))
        return x, -log_scale.sum(-1)
