"""Tests of handflow.flow: invertibility, log-determinants against autograd, density
normalisation, batch independence, ActNorm state, sampling/caching, memory, dtypes,
bounded scales. Float64 with random non-identity weights unless stated."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import Tensor, nn

from handflow.flow import ActNorm, AffineCoupling, ConditionalGlow, LULinear, NonFiniteError

F64 = torch.float64
D, C, HIDDEN = 12, 5, 32
ROUND_TRIP_TOL = 1e-9
LOGDET_TOL = 1e-9


def perturb_(module: nn.Module, scale: float = 0.1, seed: int = 7) -> None:
    """Add Gaussian noise to every parameter (makes every layer non-identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def make_flow(dim: int = D, context_dim: int = C, hidden: int = HIDDEN, steps: int = 4,
              seed: int = 3, **kw: object) -> ConditionalGlow:
    """A float64 flow with ActNorm initialised on random data, then every parameter perturbed."""
    flow = ConditionalGlow(dim, context_dim, steps=steps, hidden=hidden, **kw).double()
    gen = torch.Generator().manual_seed(seed)
    y0 = 2.0 * torch.randn(64, dim, generator=gen, dtype=F64) + 1.0
    flow.initialize(y0, torch.randn(64, context_dim, generator=gen, dtype=F64))
    assert flow.initialized
    perturb_(flow, seed=seed)
    return flow


@pytest.fixture
def flow() -> ConditionalGlow:
    return make_flow()


def rand(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ------------------------------------------------------------------ 1. round trips
@pytest.mark.parametrize("sample_axis", [None, 5])
def test_round_trips(flow: ConditionalGlow, sample_axis: int | None) -> None:
    shape = (4, D) if sample_axis is None else (4, sample_axis, D)
    c = rand(4, C, seed=1)
    y = 2.0 * rand(*shape, seed=2)
    z, ld_inv = flow.inverse(y, c)
    y_back, ld_fwd = flow.forward(z, c)
    assert z.shape == y.shape and ld_inv.shape == shape[:-1]
    assert (y_back - y).abs().max() <= ROUND_TRIP_TOL
    assert (ld_inv + ld_fwd).abs().max() <= ROUND_TRIP_TOL
    z2 = rand(*shape, seed=3)
    z_back, _ = flow.inverse(flow.forward(z2, c)[0], c)
    assert (z_back - z2).abs().max() <= ROUND_TRIP_TOL
    assert (y - z).abs().max() > 0.1  # the flow is not the identity


@pytest.mark.parametrize(
    "layer",
    [
        lambda: ActNorm(D),
        lambda: LULinear(D, seed=1),
        lambda: LULinear(D, seed=1, init="orthogonal"),
    ],
)
def test_layer_round_trip_and_logdet(layer) -> None:
    """Every unconditional layer on its own: round trip and log|det| vs autograd."""
    m = layer().double().eval()  # eval: ActNorm must not re-initialise from x here
    perturb_(m)
    x = rand(3, D, seed=4)
    y, ld = m(x)
    x_back, ld_inv = m.inverse(y)
    assert (x_back - x).abs().max() <= ROUND_TRIP_TOL
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: m(v[None])[0][0], x[i])
        assert abs(torch.linalg.slogdet(jac).logabsdet - ld[i]) <= LOGDET_TOL
        assert abs(ld_inv[i] + ld[i]) <= LOGDET_TOL


def test_coupling_round_trip_logdet_and_affine() -> None:
    for swap in (False, True):
        m = AffineCoupling(7, C, hidden=16, blocks=1, swap=swap).double()
        perturb_(m)
        x, c = rand(3, 7, seed=5), rand(3, C, seed=6)
        ctx = m.project_context(c)
        y, ld = m(x, ctx)
        x_back, ld_inv = m.inverse(y, ctx)
        assert (x_back - x).abs().max() <= ROUND_TRIP_TOL
        assert (ld + ld_inv).abs().max() <= ROUND_TRIP_TOL
        jac = torch.autograd.functional.jacobian(lambda v, m=m, ctx=ctx: m(v[None], ctx[:1])[0][0], x[0])
        assert abs(torch.linalg.slogdet(jac).logabsdet - ld[0]) <= LOGDET_TOL
        # identity half unchanged, and the log-det depends on x (affine, not additive)
        n_id = 7 - 7 // 2 if swap else 7 // 2
        id_idx = slice(7 // 2, None) if swap else slice(None, n_id)
        assert torch.equal(y[:, id_idx], x[:, id_idx])
        assert ld.std() > 1e-3


def test_lu_weight_matches_explicit_factors() -> None:
    m = LULinear(D, seed=2).double()
    perturb_(m)
    p_mat = torch.eye(D, dtype=F64)[m.perm]  # (P v)[i] = v[perm[i]]
    lower = torch.tril(m.lower, -1) + torch.eye(D, dtype=F64)
    upper = torch.triu(m.upper, 1) + torch.diag(m.sign * m.log_s.exp())
    w = p_mat @ lower @ upper
    assert torch.allclose(m.weight(), w, atol=1e-14)
    assert abs(torch.linalg.slogdet(w).logabsdet - m.log_s.sum()) < 1e-12
    # permutation: fixed buffer, seeded, not a parameter
    names = {n for n, _ in m.named_parameters()}
    assert "perm" not in names and "perm" in dict(m.named_buffers())
    assert torch.equal(LULinear(D, seed=2).perm, m.perm)
    assert not torch.equal(LULinear(D, seed=3).perm, m.perm)
    q = LULinear(D, seed=2, init="orthogonal").double().weight()
    assert torch.allclose(q @ q.mT, torch.eye(D, dtype=F64), atol=1e-6)


def test_lu_parameters_are_the_strict_triangles_and_old_checkpoints_load() -> None:
    m = LULinear(D, seed=2, init="orthogonal").double()
    perturb_(m)
    assert m.lower_strict.numel() == m.upper_strict.numel() == D * (D - 1) // 2
    assert sum(p.numel() for p in m.parameters()) == D * (D - 1) + D
    # the earlier layout: full (D, D) lower/upper whose unused entries hold junk
    old = {k: v for k, v in m.state_dict().items() if not k.endswith("_strict")}
    junk = torch.randn(D, D, dtype=F64, generator=torch.Generator().manual_seed(3))
    old["lower"] = torch.tril(m.lower, -1) + torch.triu(junk)
    old["upper"] = torch.triu(m.upper, 1) + torch.tril(junk)
    fresh = LULinear(D, seed=2).double()
    fresh.load_state_dict(old)
    x = rand(5, D, seed=4)
    assert torch.equal(fresh(x)[0], m(x)[0]) and torch.equal(fresh.inverse(x)[0], m.inverse(x)[0])


def test_lu_weight_cache_follows_parameter_updates() -> None:
    m = LULinear(D, seed=2).double()
    perturb_(m)
    with torch.no_grad():
        w1 = m.weight()
        assert m.weight() is w1  # reused while nothing changed
        m.upper_strict.add_(0.1)  # an optimizer step is an in-place update
        w2 = m.weight()
    assert w2 is not w1 and not torch.equal(w1, w2)
    assert torch.equal(w2, m.weight().detach())  # with gradients: rebuilt, same values
    assert m.weight().requires_grad


def test_lu_training_paths_equal_the_explicit_matrix() -> None:
    """While gradients are recorded the layer avoids forming W (forward through the factors
    for few rows) and solves a batched input as one (M, D) matrix; values and gradients must
    equal those of the explicit W = P L U' and its inverse, for few and many rows, batched."""
    d = 16
    for rows in [(2, 3), (40,)]:  # 6 rows < d/2: factor path; 40: the W path
        m = LULinear(d, seed=2, init="orthogonal").double()
        perturb_(m)
        x = rand(*rows, d, seed=5)
        p_mat = torch.eye(d, dtype=F64)[m.perm]

        def explicit(m: LULinear = m, p_mat: Tensor = p_mat) -> Tensor:
            lower = m.lower + torch.eye(d, dtype=F64)
            upper = m.upper + torch.diag(m.sign * m.log_s.exp())
            return p_mat @ lower @ upper

        for direction in ("forward", "inverse"):
            m.zero_grad()
            out = m(x)[0] if direction == "forward" else m.inverse(x)[0]
            out.pow(2).sum().backward()
            got = [p.grad.clone() for p in m.parameters()]
            m.zero_grad()
            w = explicit()
            ref = x @ w.mT if direction == "forward" else x @ torch.linalg.inv(w).mT
            ref.pow(2).sum().backward()
            assert out.shape == x.shape and torch.allclose(out, ref, atol=1e-10)
            for g, p in zip(got, m.parameters()):
                assert torch.allclose(g, p.grad, atol=1e-8), direction
            with torch.no_grad():
                cached = m(x)[0] if direction == "forward" else m.inverse(x)[0]
            assert torch.allclose(cached, out, atol=1e-12)


# ------------------------------------------------------------------ 2. log-det vs autograd
def test_logdet_matches_autograd_jacobian(flow: ConditionalGlow) -> None:
    z, c = rand(4, D, seed=7), rand(4, C, seed=8)
    y, ld = flow.forward(z, c)
    z_back, ld_inv = flow.inverse(y, c)
    logdets = []
    for i in range(4):  # several contexts
        jac = torch.autograd.functional.jacobian(lambda v, i=i: flow(v[None], c[i : i + 1])[0][0], z[i])
        logdets.append(torch.linalg.slogdet(jac).logabsdet)
        jac_inv = torch.autograd.functional.jacobian(
            lambda v, i=i: flow.inverse(v[None], c[i : i + 1])[0][0], y[i]
        )
        assert abs(torch.linalg.slogdet(jac_inv).logabsdet - ld_inv[i]) <= LOGDET_TOL
    assert torch.allclose(torch.stack(logdets), ld, atol=LOGDET_TOL, rtol=0)
    assert torch.allclose(ld_inv, -ld, atol=LOGDET_TOL, rtol=0)
    assert ld.std() > 1e-3  # depends on z and c: affine coupling


# ------------------------------------------------------------------ 3. densities
def test_log_prob_of_samples(flow: ConditionalGlow) -> None:
    c = rand(3, C, seed=9)
    y, z = flow.sample(c, 6, generator=torch.Generator().manual_seed(0), return_z=True)
    _, ld_fwd = flow.forward(z, c)
    expected = -0.5 * (z.square().sum(-1) + D * math.log(2 * math.pi)) - ld_fwd
    assert torch.allclose(flow.log_prob(y, c), expected, atol=1e-9, rtol=0)


def test_density_integrates_to_one_in_2d() -> None:
    """Riemann sum of exp(log_prob) over a grid in D = 2 (independent of the flow's code)."""
    flow = make_flow(dim=2, context_dim=3, hidden=16, steps=3)
    c = rand(1, 3, seed=10)
    ys = flow.sample(c, 4000, generator=torch.Generator().manual_seed(1))[0]
    lo, hi = ys.detach().min(0).values, ys.detach().max(0).values
    pad = 0.75 * (hi - lo)
    n = 500
    gx = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), n, dtype=F64)
    gy = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), n, dtype=F64)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="ij"), -1).reshape(1, -1, 2)
    with torch.no_grad():
        dens = flow.log_prob(grid, c).exp()
    area = (gx[1] - gx[0]) * (gy[1] - gy[0])
    assert abs(float(dens.sum() * area) - 1.0) < 1e-2


# ------------------------------------------------------------------ 4. batch independence
@pytest.mark.parametrize("training", [False, True])
def test_batch_independence(flow: ConditionalGlow, training: bool) -> None:
    flow.train(training)
    y, c = rand(6, D, seed=11), rand(6, C, seed=12)
    z, ld = flow.inverse(y, c)
    y2, c2 = rand(6, D, seed=13), rand(6, C, seed=14)
    y2[2], c2[2] = y[2], c[2]
    z2, ld2 = flow.inverse(y2, c2)
    assert torch.allclose(z2[2], z[2], atol=1e-12, rtol=0)
    assert torch.allclose(ld2[2], ld[2], atol=1e-12, rtol=0)
    assert not torch.allclose(z2[0], z[0])
    f, fld = flow.forward(y, c)
    f2, fld2 = flow.forward(y2, c2)
    assert torch.allclose(f2[2], f[2], atol=1e-12) and torch.allclose(fld2[2], fld[2], atol=1e-12)


# ------------------------------------------------------------------ 5. ActNorm
def test_actnorm_init_standardises_first_batch() -> None:
    m = ActNorm(D).double().train()
    y = 3.0 * rand(50, D, seed=15) - 2.0
    y[:, 0] = 4.0  # a constant dimension: std clamped at min_std, no -inf
    x, ld = m.inverse(y)
    assert bool(m.initialized)
    assert x[:, 1:].mean(0).abs().max() < 1e-12
    assert (x[:, 1:].std(0, correction=0) - 1).abs().max() < 1e-12
    assert torch.allclose(m.log_scale[0], torch.tensor(math.log(1e-3), dtype=F64))
    assert torch.isfinite(ld).all()
    # second batch does not re-initialise
    before = m.bias.detach().clone()
    m.inverse(rand(50, D, seed=16) + 10)
    assert torch.equal(before, m.bias)
    assert ActNorm(D, min_std=0.5).min_std == 0.5


def test_actnorm_refuses_bad_first_batch() -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        ActNorm(D).train().inverse(torch.randn(1, D))
    bad = torch.randn(8, D)
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ActNorm(D).train().inverse(bad)
    flow = ConditionalGlow(D, C, hidden=8).double().train()
    with pytest.raises(ValueError, match="at least 2 rows"):
        flow.log_prob(rand(1, D), rand(1, C))
    assert not flow.initialized
    flow.eval().log_prob(rand(1, D), rand(1, C))  # eval mode never initialises
    assert not flow.initialized
    flow.train().log_prob(rand(1, 4, D), rand(1, C))  # 1 image x 4 samples = 4 rows
    assert flow.initialized


def test_actnorm_state_survives_save_load(flow: ConditionalGlow) -> None:
    buf = io.BytesIO()
    torch.save(flow.state_dict(), buf)
    buf.seek(0)
    fresh = ConditionalGlow(D, C, hidden=HIDDEN).double().train()
    assert not fresh.initialized
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.initialized
    y, c = 5.0 * rand(16, D, seed=17) + 3.0, rand(16, C, seed=18)
    lp = fresh.log_prob(y, c)  # training mode, new data: must not re-initialise
    assert torch.allclose(lp, flow.log_prob(y, c), atol=1e-12, rtol=0)
    for a, b in zip(fresh.state_dict().values(), flow.state_dict().values()):
        assert torch.equal(a, b)
    assert "initialized=True" in repr(fresh) and "scale_bound=2.0" in repr(fresh)


def test_actnorm_flag_follows_loaded_state_and_warns_before_init() -> None:
    flow = make_flow()
    blank = ConditionalGlow(D, C, hidden=HIDDEN).double().state_dict()
    flow.load_state_dict(blank)  # an uninitialised state: the flow must init again
    assert not flow.initialized
    with pytest.warns(UserWarning, match="initialize"):
        flow.train().forward(rand(2, D), rand(2, C))
    y0, c0 = 3.0 * rand(40, D, seed=41) + 1.0, rand(40, C, seed=42)
    flow.log_prob(y0, c0)
    assert flow.initialized
    # blank state: couplings are the identity and W = P, so the whole flow standardises y0
    z, _ = flow.eval().inverse(y0, c0)
    z = z.detach()
    assert z.mean(0).abs().max() < 1e-10
    assert (z.std(0, correction=0) - 1).abs().max() < 1e-10


# ------------------------------------------------------------------ 6. sampling and caching
def test_sample_equals_forward_of_drawn_z(flow: ConditionalGlow) -> None:
    c, n = rand(3, C, seed=19), 7
    y, z = flow.sample(c, n, generator=torch.Generator().manual_seed(5), return_z=True)
    z_ref = torch.randn((3, n, D), generator=torch.Generator().manual_seed(5), dtype=F64)
    assert torch.equal(z, z_ref) and y.shape == (3, n, D)
    for s in range(n):  # per-sample forward without a sample axis
        assert torch.allclose(y[:, s], flow.forward(z_ref[:, s], c)[0], atol=1e-12, rtol=1e-12)
    assert torch.allclose(flow.mode(c), flow.forward(torch.zeros(3, D, dtype=F64), c)[0])


def test_context_cache_is_projected_once_and_reused(flow: ConditionalGlow) -> None:
    c = rand(3, C, seed=20)
    seen: list[tuple[int, ...]] = []
    hooks = [s.coupling.context_layer.register_forward_hook(
        lambda _m, inp, _o: seen.append(tuple(inp[0].shape))) for s in flow.steps]
    y = flow.sample(c, 50, chunk=30, generator=torch.Generator().manual_seed(2))
    for h in hooks:
        h.remove()
    assert seen == [(3, C)] * len(flow.steps)  # once per image batch and layer, not per sample
    cache = flow.project_context(c)
    y_cached = flow.sample(n=50, chunk=30, generator=torch.Generator().manual_seed(2),
                           context_cache=cache)
    assert torch.equal(y, y_cached)
    with torch.no_grad():  # the no-grad path writes chunks in place: same values
        y_nograd = flow.sample(c, 50, chunk=30, generator=torch.Generator().manual_seed(2))
    assert torch.equal(y, y_nograd)
    assert torch.equal(flow.log_prob(y, c), flow.log_prob(y, context_cache=cache))
    assert torch.equal(flow.mode(c), flow.mode(context_cache=cache))
    with pytest.raises(ValueError, match="batch"):
        flow.log_prob(y[:2], context_cache=cache)


# ------------------------------------------------------------------ 7. bounded memory
def test_ten_thousand_samples_in_chunks() -> None:
    """The largest activation seen by any Linear is bounded by chunk x width, not by n."""
    dim, hidden, n, chunk = 218, 64, 10_000, 512
    flow = make_flow(dim=dim, context_dim=16, hidden=hidden, steps=2)
    c = rand(1, 16, seed=21)
    largest = [0]

    def probe(_m: nn.Module, _i: object, out: Tensor) -> None:
        largest[0] = max(largest[0], out.numel())

    hooks = [m.register_forward_hook(probe) for m in flow.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        y_small = flow.sample(c, n, generator=torch.Generator().manual_seed(3), chunk=chunk)
        bounded = largest[0]
        largest[0] = 0
        y_big = flow.sample(c, n, generator=torch.Generator().manual_seed(3), chunk=n)
    for h in hooks:
        h.remove()
    width = max(hidden, 2 * (dim - dim // 2))
    assert y_small.shape == (1, n, dim) and torch.isfinite(y_small).all()
    assert bounded <= chunk * width
    assert largest[0] >= n * hidden  # the probe does see unchunked activations
    assert torch.allclose(y_small, y_big, atol=1e-10, rtol=0)


# ------------------------------------------------------------------ 8. dtypes, grads, modes
def test_float32_and_autocast() -> None:
    flow = make_flow().float()
    c, y = rand(4, C, seed=22).float(), rand(4, 3, D, seed=23).float()
    z, ld = flow.inverse(y, c)
    assert z.dtype == torch.float32 and ld.dtype == torch.float32
    assert ((flow.forward(z, c)[0] - y).abs() / (1 + y.abs())).max() < 1e-4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = flow.log_prob(y, c)
        s = flow.sample(c, 2, generator=torch.Generator().manual_seed(0))
    assert lp.dtype == torch.float32 and s.dtype == torch.float32
    assert torch.allclose(lp, flow.log_prob(y, c), atol=1e-5)
    # float64 input to a float32 flow is cast, not rejected
    assert flow.log_prob(y.double(), c.double()).dtype == torch.float32


def test_gradients_reach_every_parameter(flow: ConditionalGlow) -> None:
    c = rand(4, C, seed=24).requires_grad_()
    loss = -flow.log_prob(rand(4, D, seed=25), c).mean()
    loss = loss + flow.sample(c, 2, generator=torch.Generator().manual_seed(0)).square().mean()
    loss.backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert c.grad is not None and c.grad.abs().sum() > 0


def test_eval_equals_train(flow: ConditionalGlow) -> None:
    y, c = rand(5, 2, D, seed=26), rand(5, C, seed=27)
    lp_train = flow.train().log_prob(y, c)
    lp_eval = flow.eval().log_prob(y, c)
    assert torch.equal(lp_train, lp_eval)


# ------------------------------------------------------------------ 9. numerical safeguards
def test_scale_bound_keeps_huge_weights_finite() -> None:
    flow = make_flow(scale_bound=2.0)
    with torch.no_grad():
        for step in flow.steps:
            for p in step.coupling.parameters():
                p.mul_(1e4)
    z, c = 3.0 * rand(8, D, seed=28), rand(8, C, seed=29)
    y, ld = flow.forward(z, c)
    z_back, ld_inv = flow.inverse(3.0 * rand(8, D, seed=30), c)
    assert torch.isfinite(y).all() and torch.isfinite(z_back).all()
    bound = sum(
        2.0 * step.coupling.n_transformed
        + step.actnorm.log_scale.abs().sum() + step.linear.log_s.abs().sum()
        for step in flow.steps
    )
    assert ld.abs().max() <= bound and ld_inv.abs().max() <= bound


def test_non_finite_detection(flow: ConditionalGlow) -> None:
    y, c = rand(3, D, seed=31), rand(3, C, seed=32)
    y[1, 4] = float("nan")
    with pytest.raises(NonFiniteError, match="input y"):
        flow.inverse(y, c)
    flow.check_finite = False
    z, _ = flow.inverse(y, c)
    assert torch.isnan(z[1]).any() and torch.isfinite(z[0]).all()
    flow.check_finite = True
    with torch.no_grad():
        flow.steps[0].actnorm.log_scale[0] = float("inf")
    with pytest.raises(NonFiniteError, match="diverged"):
        flow.forward(rand(3, D, seed=33), c)


def test_bad_input_errors(flow: ConditionalGlow) -> None:
    c = rand(2, C)
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        flow.log_prob(rand(2, D + 1), c)
    with pytest.raises(ValueError, match="context_dim"):
        flow.log_prob(rand(2, D), rand(2, C + 1))
    with pytest.raises(ValueError, match="batch"):
        flow.log_prob(rand(3, D), c)
    with pytest.raises(ValueError, match="context or context_cache"):
        flow.sample(n=2)
    with pytest.raises(ValueError, match="steps"):
        make_flow(steps=2).forward(rand(2, D), context_cache=flow.project_context(c))
