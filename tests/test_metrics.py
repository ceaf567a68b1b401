"""handflow.metrics against slow, loop-based float64 references and known answers."""

from __future__ import annotations

import math

import pytest
import torch

from handflow.constants import LEFT_ROOT, NUM_HAND_JOINTS, NUM_JOINTS, RIGHT_ROOT, hand_slice
from handflow.metrics import (
    ALIGNMENTS,
    DEFAULT_BANDWIDTHS,
    align,
    mmd,
    mmd_per_bandwidth,
    mpjpe,
    mpjpe_min_max,
    mpjpe_occluded,
    nanmean,
    per_joint_spread,
    sample_spread,
)

F64 = torch.float64


def rand_joints(*shape: int, scale: float = 60.0) -> torch.Tensor:
    """Two-hand joints with a camera-frame offset (~0.5 m depth) and per-set noise."""
    base = torch.randn(*shape, NUM_JOINTS, 3, dtype=F64) * scale
    return base + torch.tensor([30.0, -20.0, 600.0], dtype=F64)


# ----------------------------------------------------------------- slow references
def ref_align(j: list[list[float]], alignment: str) -> list[list[float]]:
    """j: 42 lists of 3 floats."""
    out = []
    for i in range(NUM_JOINTS):
        if alignment == "global":
            root = [0.0, 0.0, 0.0]
        elif alignment == "rrr":
            root = j[RIGHT_ROOT]
        else:
            root = j[RIGHT_ROOT] if i < NUM_HAND_JOINTS else j[LEFT_ROOT]
        out.append([j[i][c] - root[c] for c in range(3)])
    return out


def ref_mpjpe(p: torch.Tensor, g: torch.Tensor, alignment: str, mask: torch.Tensor | None):
    """p, g: (42, 3); mask (42,) or None. Returns float (nan for empty mask)."""
    pa, ga = ref_align(p.tolist(), alignment), ref_align(g.tolist(), alignment)
    total, count = 0.0, 0
    for i in range(NUM_JOINTS):
        if mask is None or bool(mask[i]):
            total += math.dist(pa[i], ga[i])
            count += 1
    return total / count if count else float("nan")


def ref_mmd2(x: torch.Tensor, y: torch.Tensor, alignment: str, sigma: float) -> float:
    """x (S,42,3), y (N,42,3): biased MMD^2 with loops over all pairs."""
    xs = [sum(ref_align(s.tolist(), alignment), []) for s in x]
    ys = [sum(ref_align(s.tolist(), alignment), []) for s in y]

    def k(a: list[float], b: list[float]) -> float:
        return math.exp(-sum((u - v) ** 2 for u, v in zip(a, b)) / (2 * sigma**2))

    kxx = sum(k(a, b) for a in xs for b in xs) / len(xs) ** 2
    kyy = sum(k(a, b) for a in ys for b in ys) / len(ys) ** 2
    kxy = sum(k(a, b) for a in xs for b in ys) / (len(xs) * len(ys))
    return kxx + kyy - 2 * kxy


def ref_spread(x: torch.Tensor, alignment: str) -> list[float]:
    """x (S,42,3) -> 42 RMS deviations."""
    xs = [ref_align(s.tolist(), alignment) for s in x]
    out = []
    for j in range(NUM_JOINTS):
        mean = [sum(s[j][c] for s in xs) / len(xs) for c in range(3)]
        out.append(math.sqrt(sum(math.dist(s[j], mean) ** 2 for s in xs) / len(xs)))
    return out


# ------------------------------------------------------------------------ alignment
def test_align_values_and_unknown() -> None:
    j = rand_joints(5)
    rr = align(j, "rr")
    assert torch.equal(rr[:, RIGHT_ROOT], torch.zeros(5, 3, dtype=F64))
    assert torch.equal(rr[:, LEFT_ROOT], torch.zeros(5, 3, dtype=F64))
    rrr = align(j, "rrr")
    torch.testing.assert_close(rrr[:, LEFT_ROOT], j[:, LEFT_ROOT] - j[:, RIGHT_ROOT])
    assert torch.equal(align(j, "global"), j)
    for a in ALIGNMENTS:
        torch.testing.assert_close(align(j, a)[0], torch.tensor(ref_align(j[0].tolist(), a), dtype=F64))
    with pytest.raises(ValueError, match="'rr', 'rrr', 'global'"):
        align(j, "procrustes")
    with pytest.raises(ValueError, match="42, 3"):
        mpjpe(j[:, :21], j[:, :21], "rr")
    bad = j.clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mpjpe(bad, j, "rr")


def test_alignment_invariances() -> None:
    pred, gt = rand_joints(4), rand_joints(4)
    t_r, t_l = torch.randn(4, 1, 3, dtype=F64) * 100, torch.randn(4, 1, 3, dtype=F64) * 100
    moved = pred.clone()
    moved[:, hand_slice("right")] += t_r
    moved[:, hand_slice("left")] += t_l
    common = pred + t_r
    # rr: invariant to independent per-hand translations
    torch.testing.assert_close(mpjpe(moved, gt, "rr"), mpjpe(pred, gt, "rr"))
    # rrr: invariant to a common translation, not to a relative one
    torch.testing.assert_close(mpjpe(common, gt, "rrr"), mpjpe(pred, gt, "rrr"))
    assert (mpjpe(moved, gt, "rrr") - mpjpe(pred, gt, "rrr")).abs().min() > 1e-3
    # global: invariant to nothing
    assert (mpjpe(common, gt, "global") - mpjpe(pred, gt, "global")).abs().min() > 1e-3


# --------------------------------------------------------------------------- MPJPE
@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_mpjpe_matches_reference_with_masks_and_broadcast(alignment: str) -> None:
    B, S = 3, 4
    pred, gt = rand_joints(B, S), rand_joints(B, 1)
    mask = torch.rand(B, S, NUM_JOINTS) > 0.4
    mask[1, 2] = False  # one empty row -> NaN
    got = mpjpe(pred, gt, alignment, mask)
    assert got.shape == (B, S)
    for b in range(B):
        for s in range(S):
            want = ref_mpjpe(pred[b, s], gt[b, 0], alignment, mask[b, s])
            if math.isnan(want):
                assert torch.isnan(got[b, s])
            else:
                assert got[b, s].item() == pytest.approx(want, rel=1e-12)
    nomask = mpjpe(pred, gt, alignment)
    assert nomask[2, 3].item() == pytest.approx(ref_mpjpe(pred[2, 3], gt[2, 0], alignment, None))


def test_nanmean_skips_empty_rows() -> None:
    v = torch.tensor([1.0, float("nan"), 3.0], dtype=F64)
    mean, count = nanmean(v)
    assert mean.item() == 2.0 and count.item() == 2
    mean, count = nanmean(torch.full((2, 3), float("nan"), dtype=F64), dim=1)
    assert torch.isnan(mean).all() and (count == 0).all()


def test_mpjpe_occluded_is_rr_on_occluded_valid() -> None:
    pred, gt = rand_joints(6), rand_joints(6)
    visible = torch.rand(6, NUM_JOINTS) > 0.5
    valid = torch.rand(6, NUM_JOINTS) > 0.2
    visible[0] = True  # nothing occluded -> NaN
    got = mpjpe_occluded(pred, gt, visible, valid)
    assert torch.isnan(got[0])
    for b in range(1, 6):
        want = ref_mpjpe(pred[b], gt[b], "rr", ~visible[b] & valid[b])
        assert got[b].item() == pytest.approx(want, rel=1e-12, nan_ok=True)


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_min_max_matches_reference(alignment: str) -> None:
    B, N = 4, 5
    pred, anns = rand_joints(B), rand_joints(B, N)
    ann_valid = torch.rand(B, N) > 0.3
    ann_valid[0] = False
    ann_valid[1, :2] = True
    anns[~ann_valid] = float("nan")  # padding may hold anything
    mask = torch.rand(B, NUM_JOINTS) > 0.3
    lo, hi = mpjpe_min_max(pred, anns, alignment, mask, ann_valid)
    assert torch.isnan(lo[0]) and torch.isnan(hi[0])
    for b in range(1, B):
        errs = [ref_mpjpe(pred[b], anns[b, n], alignment, mask[b]) for n in range(N) if ann_valid[b, n]]
        assert lo[b].item() == pytest.approx(min(errs), rel=1e-12)
        assert hi[b].item() == pytest.approx(max(errs), rel=1e-12)
        assert lo[b] <= hi[b]


# ----------------------------------------------------------------------------- MMD
@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_mmd_matches_reference(alignment: str) -> None:
    B, S, N = 2, 5, 4
    x, y = rand_joints(B, S, scale=15.0), rand_joints(B, N, scale=15.0)
    sigmas = (30.0, 100.0, 400.0)
    got = mmd_per_bandwidth(x, y, alignment, sigmas)
    for b in range(B):
        for k, s in enumerate(sigmas):
            want = math.sqrt(max(ref_mmd2(x[b], y[b], alignment, s), 0.0))
            assert got[b, k].item() == pytest.approx(want, rel=1e-9, abs=1e-12)
    torch.testing.assert_close(mmd(x, y, alignment, sigmas), got.mean(1))


def test_mmd_masks_equal_dropping_the_rows() -> None:
    B, S, N = 3, 6, 5
    x, y = rand_joints(B, S, scale=20.0), rand_joints(B, N, scale=20.0)
    sm, am = torch.rand(B, S) > 0.3, torch.rand(B, N) > 0.3
    sm[:, 0] = True
    am[:, 0] = True
    am[2] = False  # no annotation -> NaN
    x[~sm] = float("nan")
    y[~am] = float("nan")
    got = mmd(x, y, "rr", sample_mask=sm, ann_mask=am)
    assert torch.isnan(got[2])
    for b in range(2):
        want = mmd(x[b : b + 1, sm[b]], y[b : b + 1, am[b]], "rr")
        torch.testing.assert_close(got[b : b + 1], want)


def test_mmd_known_answers() -> None:
    x = rand_joints(3, 20, scale=30.0)
    # identical sets (even permuted): exactly the V-statistic 0, up to rounding
    same = mmd_per_bandwidth(x, x[:, torch.randperm(20)], "global")
    assert same.abs().max() < 1e-6
    # range [0, sqrt 2]: far-apart single points give sqrt(2) at every bandwidth
    far = mmd_per_bandwidth(x[:, :1], x[:, :1] + 1e5, "global")
    torch.testing.assert_close(far, torch.full_like(far, math.sqrt(2)))
    # Gaussians shifted by d: MMD grows monotonically with d
    g = torch.Generator().manual_seed(7)
    base_x = torch.randn(1, 200, NUM_JOINTS, 3, generator=g, dtype=F64) * 10
    base_y = torch.randn(1, 200, NUM_JOINTS, 3, generator=g, dtype=F64) * 10
    direction = torch.randn(NUM_JOINTS, 3, generator=g, dtype=F64)
    direction /= direction.norm()
    vals = [mmd(base_x, base_y + d * direction, "global").item() for d in (0, 25, 50, 100, 200, 400)]
    assert all(a < b for a, b in zip(vals, vals[1:])), vals


def test_mmd_chunked_equals_unchunked_and_float32() -> None:
    x, y = rand_joints(7, 8), rand_joints(7, 6)
    full = mmd(x, y, "rrr", chunk=1000)
    torch.testing.assert_close(mmd(x, y, "rrr", chunk=2), full)
    torch.testing.assert_close(mmd(x.float(), y.float(), "rrr", dtype=torch.float32).double(), full, rtol=1e-4, atol=1e-5)


def test_mmd_bad_input() -> None:
    x = rand_joints(2, 3)
    with pytest.raises(ValueError, match="batch size"):
        mmd(x, rand_joints(3, 3), "rr")
    with pytest.raises(ValueError, match="positive"):
        mmd(x, x, "rr", bandwidths=[10.0, -1.0])
    with pytest.raises(ValueError, match="unknown alignment"):
        mmd(x, x, "RR")
    assert len(DEFAULT_BANDWIDTHS) >= 3


# -------------------------------------------------------------------------- spread
@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_spread_matches_reference(alignment: str) -> None:
    x = rand_joints(2, 7, scale=25.0)
    got = per_joint_spread(x, alignment)
    for b in range(2):
        torch.testing.assert_close(got[b], torch.tensor(ref_spread(x[b], alignment), dtype=F64))
    torch.testing.assert_close(sample_spread(x, alignment), got.mean(-1))
    mask = torch.zeros(NUM_JOINTS, dtype=torch.bool)
    mask[:5] = True
    torch.testing.assert_close(sample_spread(x, alignment, mask=mask), got[:, :5].mean(-1))


def test_spread_known_answer_and_sample_mask() -> None:
    # two samples +-d along one axis: RMS deviation d for every joint
    base = rand_joints(1, 1)
    d = 7.5
    off = torch.zeros(3, dtype=F64)
    off[2] = d
    x = torch.cat([base + off, base - off, torch.full_like(base, float("nan"))], dim=1)
    sm = torch.tensor([[True, True, False]])
    torch.testing.assert_close(sample_spread(x, sample_mask=sm), torch.tensor([d], dtype=F64))
    assert per_joint_spread(x, "rr", sm)[0, RIGHT_ROOT] == 0


def test_bad_masks_and_shapes() -> None:
    x = rand_joints(2, 3)
    with pytest.raises(TypeError, match="bool"):
        mpjpe(x, x, "rr", mask=torch.ones(2, 3, NUM_JOINTS))
    with pytest.raises(ValueError, match=r"\(B, 42, 3\)"):
        mpjpe_min_max(x, x[:, None], "rr")
    with pytest.raises(ValueError, match="ann_valid"):
        mpjpe_min_max(x[:, 0], x, "rr", ann_valid=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="sample_mask"):
        sample_spread(x, sample_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        sample_spread(torch.full_like(x, float("nan")))
