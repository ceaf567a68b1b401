"""The 218-vector: pack/unpack round trip, layout, normalizer."""

from __future__ import annotations

import torch
from conftest import random_rotmats

from handflow.constants import HAND_PARAM_DIM, PARAM_DIM
from handflow.geometry import intrinsics, matrix_to_rot6d
from handflow.params import ParamNormalizer, pack, pack_hand, unpack

f64 = torch.float64


def _hand(B: int, g: torch.Generator):
    rot = random_rotmats(B * 16, g).reshape(B, 16, 3, 3)
    betas = torch.randn(B, 10, generator=g, dtype=f64)
    root = torch.randn(B, 3, generator=g, dtype=f64) * 50 + torch.tensor([0, 0, 600.0], dtype=f64)
    return rot, betas, root


def test_pack_unpack_round_trip(gen: torch.Generator) -> None:
    B, S = 5, 128
    K = intrinsics(*(torch.full((B,), v, dtype=f64) for v in (400.0, 400.0, 64.0, 60.0)))
    r, l = _hand(B, gen), _hand(B, gen)
    y = pack(pack_hand(*r, K, S), pack_hand(*l, K, S))
    assert y.shape == (B, PARAM_DIM)
    out = unpack(y, K, S)
    for side, (rot, betas, root) in zip(("right", "left"), (r, l)):
        assert torch.allclose(out[side].rotmats, rot, atol=1e-12)
        assert torch.allclose(out[side].betas, betas)
        assert torch.allclose(out[side].root, root, atol=1e-9)
    # layout: first 96 numbers of the left hand are its 6D blocks
    assert torch.allclose(y[:, HAND_PARAM_DIM : HAND_PARAM_DIM + 6], matrix_to_rot6d(l[0][:, 0]))


def test_unpack_with_sample_axis(gen: torch.Generator) -> None:
    B, S, n = 2, 64, 7
    K = intrinsics(*(torch.full((B,), v, dtype=f64) for v in (300.0, 300.0, 32.0, 32.0)))
    y = pack(pack_hand(*_hand(B, gen), K, S), pack_hand(*_hand(B, gen), K, S))
    ys = y[:, None].expand(B, n, PARAM_DIM)
    out = unpack(ys, K[:, None], S)
    assert out["right"].root.shape == (B, n, 3)
    assert torch.allclose(out["right"].root[:, 3], unpack(y, K, S)["right"].root)


def test_normalizer_standardizes_only_scalars(gen: torch.Generator) -> None:
    y = torch.randn(100, PARAM_DIM, generator=gen, dtype=f64) * 3 + 1
    norm = ParamNormalizer().double().fit(y)
    z = norm.normalize(y)
    m = norm.mask
    assert torch.allclose(z[:, m].mean(0), torch.zeros(int(m.sum()), dtype=f64), atol=1e-12)
    assert torch.allclose(z[:, m].std(0), torch.ones(int(m.sum()), dtype=f64), atol=1e-12)
    assert torch.equal(z[:, ~m], y[:, ~m])  # 6D untouched
    assert torch.allclose(norm.denormalize(z), y)
    sd = norm.state_dict()
    assert "mask" not in sd and "mean" in sd and "fitted" in sd


def test_normalizer_rejects_bad_input() -> None:
    import pytest

    with pytest.raises(ValueError, match="N>=2"):
        ParamNormalizer().fit(torch.zeros(1, PARAM_DIM))
    bad = torch.zeros(4, PARAM_DIM)
    bad[0, 100] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ParamNormalizer().fit(bad)
