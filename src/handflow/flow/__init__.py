r"""Conditional GLOW normalizing flow (plain PyTorch), direction-named API.

``ConditionalGlow(dim, context_dim)`` maps ``z ~ N(0, I)`` to ``y`` given a per-image
context: :meth:`~ConditionalGlow.forward` is z -> y, :meth:`~ConditionalGlow.inverse` is
y -> z. See ``docs/flow.md``.
"""

from handflow.flow.actnorm import ActNorm
from handflow.flow.coupling import AffineCoupling
from handflow.flow.glow import ConditionalGlow, ContextCache, FlowStep, NonFiniteError
from handflow.flow.linear import LULinear

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "ConditionalGlow",
    "ContextCache",
    "FlowStep",
    "LULinear",
    "NonFiniteError",
]
