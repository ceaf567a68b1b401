r"""Invertible linear map with an LU parameterisation and a fixed permutation (Glow).

Direction (z side -> y side)::

    y = W x,    W = P L (U + diag(sign * exp(log_s))),    log|det dy/dx| = sum(log_s)

``P`` is a fixed random permutation (a seeded buffer, never trained), ``L`` is unit lower
triangular, ``U`` strictly upper triangular, ``sign`` a fixed buffer of +-1. ``W`` is
invertible for every value of the parameters, and its log-determinant costs O(D).
The inverse solves two triangular systems with :func:`torch.linalg.solve_triangular`.

Only the strict triangles of ``L`` and ``U`` are parameters (``lower_strict``, ``upper_strict``:
D(D-1)/2 entries each), so no optimizer state is kept for entries that are never used;
checkpoints written with the earlier full (D, D) ``lower``/``upper`` load unchanged. Without
gradients (prediction, evaluation) ``W`` and its factors are built once and reused until a
parameter changes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LULinear"]

#: supported initialisations of W
_INITS = ("permutation", "orthogonal")


class LULinear(nn.Module):
    """Invertible D x D linear map ``y = W x`` (no bias: ActNorm holds the shift).

    Arguments:
        dim: number of features D.
        seed: seed of the fixed random permutation (and of the orthogonal init).
        init: ``"permutation"`` (W = P: L = I, U = 0, log_s = 0, sign = +1) or
            ``"orthogonal"`` (W = a random rotation/reflection, LU-decomposed).

    Tensors are ``(*, D)``; the log-determinant has the leading shape ``(*)``.
    """

    perm: Tensor
    inv_perm: Tensor
    sign: Tensor

    def __init__(self, dim: int, seed: int = 0, init: str = "permutation") -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"LULinear: dim must be >= 1, got {dim}")
        if init not in _INITS:
            raise ValueError(f"LULinear: init must be one of {_INITS}, got {init!r}")
        self.dim = dim
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(dim, generator=gen)
        lower = torch.zeros(dim, dim)
        upper = torch.zeros(dim, dim)
        log_s = torch.zeros(dim)
        sign = torch.ones(dim)
        if init == "orthogonal":
            q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
            p_mat, l_mat, u_mat = torch.linalg.lu(q)
            # q = p_mat @ l_mat @ u_mat and (p_mat @ v)[i] = v[perm[i]]
            perm = p_mat.argmax(1)
            lower, upper = l_mat.float(), u_mat.float()
            diag = torch.diagonal(u_mat)
            log_s, sign = diag.abs().log().float(), diag.sign().float()
        self.register_buffer("tril_index", torch.tril_indices(dim, dim, -1), persistent=False)
        self.lower_strict = nn.Parameter(lower[tuple(self.tril_index)])
        self.upper_strict = nn.Parameter(upper.mT[tuple(self.tril_index)])  # U[j, i] stored at L's (i, j)
        self.log_s = nn.Parameter(log_s)
        self.register_buffer("perm", perm, persistent=True)
        self.register_buffer("inv_perm", torch.argsort(perm), persistent=True)
        self.register_buffer("sign", sign, persistent=True)
        self._register_load_state_dict_pre_hook(self._from_full_matrices)
        self._cache: tuple[tuple, Tensor, Tensor, Tensor] | None = None

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def _from_full_matrices(self, state: dict, prefix: str, *args: object) -> None:
        """Checkpoints before the strict-triangle parameters stored full (D, D) ``lower``/``upper``."""
        for old, new, transpose in (("lower", "lower_strict", False), ("upper", "upper_strict", True)):
            full = state.pop(prefix + old, None)
            if full is not None and prefix + new not in state:
                state[prefix + new] = (full.mT if transpose else full)[tuple(self.tril_index)]

    @property
    def lower(self) -> Tensor:
        """(D, D) strictly lower part of ``L`` (zeros elsewhere)."""
        out = self.lower_strict.new_zeros(self.dim, self.dim)
        return out.index_put((self.tril_index[0], self.tril_index[1]), self.lower_strict)

    @property
    def upper(self) -> Tensor:
        """(D, D) strictly upper part of ``U`` (zeros elsewhere)."""
        out = self.upper_strict.new_zeros(self.dim, self.dim)
        return out.index_put((self.tril_index[1], self.tril_index[0]), self.upper_strict)

    def _build_factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.dim, dtype=self.log_s.dtype, device=self.log_s.device)
        return self.lower + eye, self.upper + torch.diag(self.sign * self.log_s.exp())

    def _build(self) -> tuple[Tensor, Tensor, Tensor]:
        lower, upper = self._build_factors()
        return lower, upper, (lower @ upper)[self.perm]

    def _recording(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in (self.lower_strict, self.upper_strict, self.log_s))

    def _parts(self) -> tuple[Tensor, Tensor, Tensor]:
        """(L, U', W); cached while no gradient is recorded and no parameter has changed."""
        if self._recording():
            self._cache = None
            return self._build()
        params = (self.lower_strict, self.upper_strict, self.log_s)
        key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in params)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, *self._build())
        return self._cache[1:]

    def _factors(self) -> tuple[Tensor, Tensor]:
        """(L, U'): while gradients are recorded without forming W (a D^3 product and its
        backward per call, a third of a training step at D = 218)."""
        if self._recording():
            self._cache = None
            return self._build_factors()
        lower, upper, _ = self._parts()
        return lower, upper

    def weight(self) -> Tensor:
        """The D x D matrix W = P L U'."""
        return self._parts()[2]

    def _logdet(self, x: Tensor) -> Tensor:
        return self.log_s.sum().expand(x.shape[:-1])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """z side -> y side: ``x`` (*, D) -> (``W x`` (*, D), log|det W| (*)).

        While gradients are recorded and fewer than D/2 rows come in, ``(x U'^T) L^T`` (then
        the permutation) costs less than forming W first."""
        rows = x.numel() // self.dim
        if self._recording() and 2 * rows < self.dim:
            lower, upper = self._factors()
            return ((x @ upper.mT) @ lower.mT)[..., self.perm], self._logdet(x)
        return x @ self.weight().mT, self._logdet(x)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """y side -> z side: ``y`` (*, D) -> (``W^-1 y`` (*, D), -log|det W| (*))."""
        lower, upper = self._factors()
        # rows of one (M, D) matrix: solve_triangular broadcasts a (D, D) factor over a batched
        # right-hand side, and its backward then forms one (D, D) gradient per leading index
        # before summing them (a (B, N, D) input cost 40 % of a training step)
        v = y[..., self.inv_perm].reshape(-1, self.dim)  # P^T y
        # rows: X U'^T L^T = V  ->  A L^T = V, then X U'^T = A
        a = torch.linalg.solve_triangular(lower.mT, v, upper=True, left=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper.mT, a, upper=False, left=False)
        return x.reshape(y.shape), -self._logdet(y)
