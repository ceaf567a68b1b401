r"""ActNorm: a per-dimension affine map with data-dependent initialisation (Glow).

Direction (z side -> y side, the sampling direction of the flow)::

    y = x * exp(log_scale) + bias,        log|det dy/dx| = sum(log_scale)

The data-dependent initialisation runs on the first batch that passes through
:meth:`ActNorm.inverse` (y side -> z side) while the module is in training mode: it sets
``bias`` to the per-dimension mean and ``log_scale`` to the log of the per-dimension
standard deviation (population std, clamped below at ``min_std``), so that this first
batch leaves the layer with mean 0 and standard deviation 1 in every dimension. The
persistent ``initialized`` buffer records that this happened, so a model restored from a
``state_dict`` is never re-initialised.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ActNorm", "DEFAULT_MIN_STD", "MIN_INIT_ROWS"]

#: lower clamp of the per-dimension std used by the data-dependent init
DEFAULT_MIN_STD = 1e-3
#: the std of fewer rows is undefined (NaN for one row), so init refuses them
MIN_INIT_ROWS = 2


class ActNorm(nn.Module):
    """Per-dimension scale and shift with data-dependent init.

    Arguments:
        dim: number of features D.
        min_std: lower clamp of the per-dimension std at init (constant dimensions of the
            first batch otherwise give ``log(0) = -inf``).

    Tensors are ``(*, D)``; the log-determinant has the leading shape ``(*)``.
    """

    initialized: Tensor

    def __init__(self, dim: int, min_std: float = DEFAULT_MIN_STD) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"ActNorm: dim must be >= 1, got {dim}")
        if not min_std > 0:
            raise ValueError(f"ActNorm: min_std must be > 0, got {min_std}")
        self.dim = dim
        self.min_std = float(min_std)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False), persistent=True)
        # python mirror of the buffer: avoids a device sync per call once initialised
        self._known_initialized = False

    @property
    def is_initialized(self) -> bool:
        """True once data-initialised or loaded from an initialised state_dict."""
        if not self._known_initialized:
            self._known_initialized = bool(self.initialized)
        return self._known_initialized

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        self._known_initialized = False  # re-read the loaded buffer on next use
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, min_std={self.min_std}, initialized={bool(self.initialized)}"

    @torch.no_grad()
    def initialize(self, y: Tensor) -> None:
        """Data-dependent init from y-side data ``y`` (*, D): standardise this batch.

        Raises:
            ValueError: fewer than 2 rows, or non-finite values in ``y``.
        """
        rows = y.reshape(-1, self.dim)
        if rows.shape[0] < MIN_INIT_ROWS:
            raise ValueError(
                f"ActNorm init needs at least {MIN_INIT_ROWS} rows to estimate a std, got "
                f"{rows.shape[0]}. Initialise the flow on a larger first batch "
                "(ConditionalGlow.initialize(y, context)) or load a trained state_dict."
            )
        if not bool(torch.isfinite(rows).all()):
            raise ValueError(
                "ActNorm init: the first batch contains NaN or inf; remove those rows before "
                "the first training step (the init would poison every later output)."
            )
        mean = rows.mean(0)
        std = rows.std(0, correction=0).clamp_min(self.min_std)
        self.bias.copy_(mean)
        self.log_scale.copy_(std.log())
        self.initialized.fill_(True)
        self._known_initialized = True

    def _logdet(self, x: Tensor) -> Tensor:
        return self.log_scale.sum().expand(x.shape[:-1])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """z side -> y side: ``x`` (*, D) -> (``y`` (*, D), log|det dy/dx| (*))."""
        return x * self.log_scale.exp() + self.bias, self._logdet(x)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """y side -> z side: ``y`` (*, D) -> (``x`` (*, D), log|det dx/dy| (*)).

        In training mode, the first call initialises the layer from ``y``.
        """
        if self.training and not self.is_initialized:
            self.initialize(y)
        return (y - self.bias) * torch.exp(-self.log_scale), -self._logdet(y)
