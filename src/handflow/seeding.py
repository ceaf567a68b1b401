r"""Seeded random streams: one independent, reproducible generator per ``(seed, *keys)``.

A stream's seed is a hash of the run's seed and the keys that name what it draws (a split, a
capture, an image index...), so a stream never depends on how many numbers another one drew,
on the order work is done in, or on how it is sharded over processes and machines. The hash
is SHA-256 of ``repr((int(seed), *map(str, keys)))``: stable across runs, platforms and
Python versions (unlike ``hash()``), and distinct keys give unrelated streams (unlike
``seed * stride + i`` arithmetic, where ``(seed, i + stride)`` and ``(seed + 1, i)`` collide).

Examples:
    >>> import torch
    >>> from handflow.seeding import np_stream, seed_of, stream
    >>> g = stream(0, "train", "image", 7)          # torch.Generator
    >>> bool((torch.rand(3, generator=g) == torch.rand(3, generator=stream(0, "train", "image", 7))).all())
    True
    >>> seed_of(0, "train", "image", 7) == seed_of(0, "train", "image", 8)
    False
    >>> float(np_stream(0, "views").random()) == float(np_stream(0, "views").random())
    True

Streams that predate this module and whose numbers shipped results or tests depend on keep
their own seeds (listed in ``docs/architecture.md``, "Seeds"); new code uses :func:`stream`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["seed_of", "stream", "np_stream"]

#: seeds are kept below 2**63 (torch.Generator.manual_seed takes a signed 64-bit integer)
_MASK = (1 << 63) - 1


def seed_of(seed: int, *keys: object) -> int:
    """The 63-bit seed of stream ``(seed, *keys)``; each key enters through ``str(key)``."""
    h = hashlib.sha256(repr((int(seed),) + tuple(str(k) for k in keys)).encode()).digest()
    return int.from_bytes(h[:8], "little") & _MASK


def stream(seed: int, *keys: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`seed_of` ``(seed, *keys)``."""
    return torch.Generator(device=device).manual_seed(seed_of(seed, *keys))


def np_stream(seed: int, *keys: object) -> np.random.Generator:
    """The NumPy counterpart of :func:`stream`: a PCG64 generator whose ``SeedSequence`` entropy
    is :func:`seed_of` ``(seed, *keys)``."""
    return np.random.default_rng(np.random.SeedSequence(seed_of(seed, *keys)))
