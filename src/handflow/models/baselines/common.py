"""What the baselines share: the head MLP builder, Gaussian log-density and KL helpers, log-variance
bounds and noise draws from a CPU generator (reproducible on any device)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["head_mlp", "gaussian_log_prob", "kl_to_standard_normal", "HEAD_HIDDEN", "HEAD_LAYERS", "LOGVAR_MIN", "LOGVAR_MAX",
           "LOG_2PI", "clamp_logvar", "upcast", "draw_normal", "masked_targets"]

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


def clamp_logvar(x: Tensor) -> Tensor:
    """Bound log-variances to [LOGVAR_MIN, LOGVAR_MAX] (identity inside). Any shape."""
    return x.clamp(LOGVAR_MIN, LOGVAR_MAX)


def upcast(x: Tensor) -> Tensor:
    """16-bit tensors (mixed precision) -> float32 for likelihoods; float32/64 unchanged."""
    return x.float() if x.dtype in _HALF else x


def gaussian_log_prob(y: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """``log N(y; mean, diag(exp logvar))`` summed over the last dim. Broadcasts; (..., D) -> (...)."""
    y, mean, logvar = upcast(y), upcast(mean), upcast(logvar)
    return -0.5 * ((y - mean).square() * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor, reduce: bool = True) -> Tensor:
    """``KL(N(mu, diag exp logvar) ‖ N(0, I))``: (..., L) -> (...) summed over the last dim,
    or per dimension (..., L) with ``reduce=False``."""
    mu, logvar = upcast(mu), upcast(logvar)
    kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)
    return kl.sum(-1) if reduce else kl


def draw_normal(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise of ``like``'s dtype and device. With a (CPU) generator it is drawn
    on the CPU and moved, so a seed gives the same numbers on every device."""
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


def masked_targets(y_std: Tensor, y_mask: Tensor) -> Tensor:
    """Padding annotations (mask False) -> 0 so that they stay finite: (B, N, 218)."""
    return torch.where(y_mask[..., None], y_std, torch.zeros_like(y_std))
