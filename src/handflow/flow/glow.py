r"""Conditional GLOW: a normalizing flow ``f_c: z -> y`` with ``z ~ N(0, I)``.

Names follow the direction, never the nflows convention:

* :meth:`ConditionalGlow.forward` ``(z, context) -> (y, log|det dy/dz|)``: sampling direction.
* :meth:`ConditionalGlow.inverse` ``(y, context) -> (z, log|det dz/dy|)``: density direction.
* :meth:`ConditionalGlow.log_prob` ``(y, context) -> log N(z) + log|det dz/dy|``.
* :meth:`ConditionalGlow.sample` ``(context, n) -> y (B, n, D)``, chunked over samples.
* :meth:`ConditionalGlow.mode` ``(context) -> f_c(0)``: the *z = 0 estimate*. With affine
  coupling this is not the exact mode of ``p(y | c)`` (the Jacobian depends on z).

Each of the K steps is, in the y -> z direction, ActNorm -> LU linear -> affine coupling
(Glow's order); the z -> y direction runs the inverses in the reverse order, i.e. step k
maps ``x -> actnorm(lu(coupling(x, c)))`` and the steps run k = 0, ..., K-1. The coupling
masks alternate between steps, and every LU layer carries its own fixed random permutation.

All computations run in the parameters' dtype (float32 or float64), with autocast
disabled: inputs are cast on entry, so under mixed precision the flow is still float32.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from handflow.flow.actnorm import DEFAULT_MIN_STD, ActNorm
from handflow.flow.coupling import AffineCoupling
from handflow.flow.linear import LULinear

__all__ = ["ConditionalGlow", "ContextCache", "FlowStep", "NonFiniteError"]

_LOG_2PI = math.log(2.0 * math.pi)


class NonFiniteError(FloatingPointError):
    """Raised when a flow input or output contains NaN or inf (``check_finite=True``)."""


@dataclass(frozen=True)
class ContextCache:
    """Per-image context projections, one ``(B, hidden)`` tensor per coupling layer.

    Build it with :meth:`ConditionalGlow.project_context` once per image batch and pass it
    as ``context_cache=`` to every call that uses the same images.
    """

    projections: tuple[Tensor, ...]

    @property
    def batch_size(self) -> int:
        return self.projections[0].shape[0]

    def detach(self) -> ContextCache:
        """The same projections with gradients stopped."""
        return ContextCache(tuple(p.detach() for p in self.projections))


class FlowStep(nn.Module):
    """One GLOW step. z -> y: coupling, then LU linear, then ActNorm (see module docs)."""

    def __init__(
        self,
        dim: int,
        context_dim: int,
        hidden: int,
        blocks: int,
        scale_bound: float,
        swap: bool,
        seed: int,
        min_std: float,
    ) -> None:
        super().__init__()
        self.coupling = AffineCoupling(dim, context_dim, hidden, blocks, scale_bound, swap)
        self.linear = LULinear(dim, seed=seed)
        self.actnorm = ActNorm(dim, min_std=min_std)

    def forward(self, x: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """z side -> y side: (x (B, [S,] D), ctx (B, hidden)) -> (y, log|det dy/dx|)."""
        x, ld1 = self.coupling(x, ctx)
        x, ld2 = self.linear(x)
        x, ld3 = self.actnorm(x)
        return x, ld1 + ld2 + ld3

    def inverse(self, y: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """y side -> z side: (y (B, [S,] D), ctx (B, hidden)) -> (x, log|det dx/dy|)."""
        y, ld3 = self.actnorm.inverse(y)
        y, ld2 = self.linear.inverse(y)
        y, ld1 = self.coupling.inverse(y, ctx)
        return y, ld1 + ld2 + ld3


class ConditionalGlow(nn.Module):
    """Conditional GLOW flow over ``dim`` features, conditioned on a ``context_dim`` vector.

    Arguments:
        dim: number of features D of ``y`` (218 for two hands).
        context_dim: size C of the per-image context (the pooled backbone feature).
        steps: number of GLOW steps K.
        hidden: width of the coupling MLPs.
        blocks: residual blocks per coupling MLP.
        scale_bound: alpha of the coupling log-scale ``alpha * tanh(raw / alpha)``.
        seed: seed of the fixed random permutations (step k uses ``seed + k``).
        min_std: lower clamp of ActNorm's data-dependent std.
        check_finite: raise :class:`NonFiniteError` when an output or log-determinant of
            :meth:`forward` / :meth:`inverse` is NaN or inf (one reduction per call).

    Shapes: ``z``/``y`` are ``(B, D)`` or ``(B, S, D)``; ``context`` is ``(B, C)`` and is
    shared by the S samples of an image; log-determinants and log-densities are ``(B,)``
    or ``(B, S)``. Every method accepts ``context_cache=`` (from :meth:`project_context`)
    instead of ``context``.

    ActNorm initialises from the first ``y`` batch passed through :meth:`inverse` or
    :meth:`log_prob` in training mode (or explicitly via :meth:`initialize`).
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        steps: int = 4,
        hidden: int = 1024,
        blocks: int = 2,
        scale_bound: float = 2.0,
        seed: int = 0,
        min_std: float = DEFAULT_MIN_STD,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"ConditionalGlow: steps must be >= 1, got {steps}")
        self.dim, self.context_dim, self.hidden = dim, context_dim, hidden
        self.check_finite = check_finite
        self.steps = nn.ModuleList(
            FlowStep(dim, context_dim, hidden, blocks, scale_bound, k % 2 == 1, seed + k, min_std)
            for k in range(steps)
        )

    # ------------------------------------------------------------------ helpers
    @property
    def dtype(self) -> torch.dtype:
        return self.steps[0].actnorm.bias.dtype

    @property
    def device(self) -> torch.device:
        return self.steps[0].actnorm.bias.device

    @property
    def initialized(self) -> bool:
        """True once every ActNorm layer has been data-initialised (or loaded)."""
        return all(step.actnorm.is_initialized for step in self.steps)

    @contextmanager
    def _fp(self) -> Iterator[None]:
        with torch.autocast(device_type=self.device.type, enabled=False):
            yield

    def _check_x(self, x: Tensor, name: str) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"ConditionalGlow: {name} must be a tensor, got {type(x).__name__}")
        if x.dim() not in (2, 3) or x.shape[-1] != self.dim:
            raise ValueError(
                f"ConditionalGlow: {name} must be (B, {self.dim}) or (B, S, {self.dim}), "
                f"got {tuple(x.shape)}"
            )
        return x.to(self.dtype)

    def _resolve(
        self, context: Tensor | None, context_cache: ContextCache | None, who: str
    ) -> ContextCache:
        if context_cache is not None:
            return context_cache
        if context is None:
            raise ValueError(f"ConditionalGlow.{who}: pass either context or context_cache")
        return self.project_context(context)

    def _cache(
        self, context: Tensor | None, context_cache: ContextCache | None, batch: int
    ) -> ContextCache:
        context_cache = self._resolve(context, context_cache, "forward/inverse")
        if len(context_cache.projections) != len(self.steps):
            raise ValueError(
                f"ConditionalGlow: context_cache has {len(context_cache.projections)} layers, "
                f"the flow has {len(self.steps)} steps; build it with this flow's "
                "project_context"
            )
        if context_cache.batch_size != batch:
            raise ValueError(
                f"ConditionalGlow: batch of the input ({batch}) and of the context "
                f"({context_cache.batch_size}) differ; the context is (B, C), one row per image"
            )
        return context_cache

    def _finite(self, inp: Tensor, out: Tensor, logdet: Tensor, name: str, what: str) -> None:
        if not self.check_finite:
            return
        if bool(torch.isfinite(out).all()) and bool(torch.isfinite(logdet).all()):
            return
        if not bool(torch.isfinite(inp).all()):
            raise NonFiniteError(f"ConditionalGlow.{what}: the input {name} contains NaN or inf")
        raise NonFiniteError(
            f"ConditionalGlow.{what}: non-finite output for a finite input {name}; the flow's "
            "parameters have probably diverged (check the learning rate / loss weights)"
        )

    # ------------------------------------------------------------------ public API
    def project_context(self, context: Tensor) -> ContextCache:
        """(B, C) context -> :class:`ContextCache`; compute once per image batch."""
        if not isinstance(context, Tensor) or context.dim() != 2:
            raise ValueError(
                "ConditionalGlow: context must be a (B, C) tensor, got "
                f"{tuple(context.shape) if isinstance(context, Tensor) else type(context)}"
            )
        if context.shape[-1] != self.context_dim:
            raise ValueError(
                f"ConditionalGlow: context has {context.shape[-1]} features, the flow was "
                f"built with context_dim={self.context_dim}"
            )
        with self._fp():
            context = context.to(self.dtype)
            return ContextCache(tuple(s.coupling.project_context(context) for s in self.steps))

    def forward(
        self,
        z: Tensor,
        context: Tensor | None = None,
        *,
        context_cache: ContextCache | None = None,
    ) -> tuple[Tensor, Tensor]:
        """z -> y. ``z`` (B, [S,] D) -> (``y`` (B, [S,] D), log|det dy/dz| (B, [S])).

        Examples:
            >>> flow = ConditionalGlow(dim=6, context_dim=4, steps=2, hidden=8).eval()
            >>> y, logdet = flow(torch.zeros(3, 6), torch.zeros(3, 4))
            >>> y.shape, logdet.shape
            (torch.Size([3, 6]), torch.Size([3]))
        """
        if self.training and not self.initialized:
            warnings.warn(
                "ConditionalGlow.forward in training mode before ActNorm's data-dependent init: "
                "ActNorm acts as the identity until the first log_prob/inverse in training "
                "mode; call flow.initialize(y, context) on a first batch before training",
                stacklevel=2,
            )
        with self._fp():
            z = self._check_x(z, "z")
            cache = self._cache(context, context_cache, z.shape[0])
            x, logdet = z, z.new_zeros(z.shape[:-1])
            for step, ctx in zip(self.steps, cache.projections):
                x, ld = step(x, ctx)
                logdet = logdet + ld
            self._finite(z, x, logdet, "z", "forward")
            return x, logdet

    def inverse(
        self,
        y: Tensor,
        context: Tensor | None = None,
        *,
        context_cache: ContextCache | None = None,
    ) -> tuple[Tensor, Tensor]:
        """y -> z. ``y`` (B, [S,] D) -> (``z`` (B, [S,] D), log|det dz/dy| (B, [S]))."""
        with self._fp():
            y = self._check_x(y, "y")
            cache = self._cache(context, context_cache, y.shape[0])
            x, logdet = y, y.new_zeros(y.shape[:-1])
            for step, ctx in zip(reversed(self.steps), reversed(cache.projections)):
                x, ld = step.inverse(x, ctx)
                logdet = logdet + ld
            self._finite(y, x, logdet, "y", "inverse")
            return x, logdet

    @staticmethod
    def base_log_prob(z: Tensor) -> Tensor:
        """log N(z; 0, I) summed over the last axis: (*, D) -> (*)."""
        return -0.5 * (z.square().sum(-1) + z.shape[-1] * _LOG_2PI)

    def log_prob(
        self,
        y: Tensor,
        context: Tensor | None = None,
        *,
        context_cache: ContextCache | None = None,
    ) -> Tensor:
        """log p(y | c) = log N(z) + log|det dz/dy|: (B, [S,] D) -> (B, [S])."""
        z, logdet = self.inverse(y, context, context_cache=context_cache)
        return self.base_log_prob(z) + logdet

    @torch.no_grad()
    def initialize(
        self,
        y: Tensor,
        context: Tensor | None = None,
        *,
        context_cache: ContextCache | None = None,
    ) -> None:
        """Data-dependent init of every not-yet-initialised ActNorm from ``y`` (B, [S,] D)."""
        was_training = self.training
        self.train()
        try:
            self.inverse(y, context, context_cache=context_cache)
        finally:
            self.train(was_training)

    def sample(
        self,
        context: Tensor | None = None,
        n: int = 1,
        generator: torch.Generator | None = None,
        chunk: int = 1024,
        return_z: bool = False,
        *,
        context_cache: ContextCache | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``n`` samples per image: -> ``y`` (B, n, D) [and ``z`` (B, n, D)].

        ``z ~ N(0, I)`` is drawn at once as ``torch.randn((B, n, D), generator=generator)``
        (so results do not depend on ``chunk``), then pushed through :meth:`forward` in
        chunks of ``max(1, chunk // B)`` samples per image (at most ``max(chunk, B)`` rows),
        so the hidden activations never exceed that many rows x ``hidden``, whatever ``n``.
        Differentiable (reparameterised) when grad is enabled.
        """
        if n < 1 or chunk < 1:
            raise ValueError(f"ConditionalGlow.sample: need n, chunk >= 1; got {n}, {chunk}")
        cache = self._resolve(context, context_cache, "sample")
        batch = cache.batch_size
        device = generator.device if generator is not None else self.device
        shape = (batch, n, self.dim)
        z = torch.randn(shape, generator=generator, device=device, dtype=self.dtype)
        z = z.to(self.device)
        per_chunk = max(1, chunk // batch)
        starts = range(0, n, per_chunk)
        if torch.is_grad_enabled():  # keep the graph: concatenate the chunks
            parts = [self.forward(z[:, s : s + per_chunk], context_cache=cache)[0] for s in starts]
            y = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        else:  # write each chunk into the output: no second copy of y
            y = torch.empty_like(z)
            for s in starts:
                sl = slice(s, s + per_chunk)
                y[:, sl] = self.forward(z[:, sl], context_cache=cache)[0]
        return (y, z) if return_z else y

    def mode(
        self, context: Tensor | None = None, *, context_cache: ContextCache | None = None
    ) -> Tensor:
        """The z = 0 estimate ``f_c(0)``: -> (B, D). Not the exact mode (affine coupling)."""
        cache = self._resolve(context, context_cache, "mode")
        z = torch.zeros(cache.batch_size, self.dim, dtype=self.dtype, device=self.device)
        return self.forward(z, context_cache=cache)[0]
