"""Shared test fixtures: seeded RNG, float64 helpers, small thread counts for 2-core CI."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("LP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def random_rotmats(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n, 3, 3) uniformly random rotations (QR of Gaussian matrices)."""
    A = torch.randn(n, 3, 3, generator=generator, dtype=dtype)
    Q, R = torch.linalg.qr(A)
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(Q)
    Q[det < 0, :, 0] *= -1
    return Q
