"""The four baselines: sampling semantics, likelihoods against torch.distributions in float64,
training through the real module and CLI, prediction from a checkpoint."""

from __future__ import annotations

import pytest
import torch

from handflow.baselines import (
    CVAEModel,
    DeterministicModel,
    GaussianModel,
    MCDropoutModel,
    gaussian_log_prob,
    head_mlp,
    kl_to_standard_normal,
)
from handflow.config import ConfigError, load_config
from handflow.constants import PARAM_DIM
from handflow.models import MODEL_REGISTRY, build_model
from handflow.models.losses import nll_loss

KINDS = ("deterministic", "gaussian", "mcdropout", "cvae")
CLASSES = {"deterministic": DeterministicModel, "gaussian": GaussianModel, "mcdropout": MCDropoutModel, "cvae": CVAEModel}
SIZE = 64
#: z-score beyond which a sample mean is declared wrong (|z| > 5 has probability 6e-7 per dim)
Z_MAX = 5.0


def _model(kind: str, *over: str):
    m = build_model(load_config("cpu", [f"model.kind={kind}", f"data.image_size={SIZE}", *over]))
    m.normalizer.fit(torch.randn(64, PARAM_DIM, generator=torch.Generator().manual_seed(9)))
    return m


def _perturb(m, scale: float = 0.05) -> None:
    """Move every zero-initialised parameter (last layers, decoder noise) so heads depend on their input."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- interface
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_build_shapes_and_dtypes(kind, dtype) -> None:
    m = _model(kind).to(dtype).eval()
    _perturb(m)
    assert MODEL_REGISTRY[kind] is CLASSES[kind] and type(m) is CLASSES[kind] and m.kind == kind
    out = m.predict(torch.rand(2, 3, SIZE, SIZE, dtype=dtype), 7, _gen(0))
    assert out["z0"].shape == (2, PARAM_DIM) and out["samples"].shape == (2, 7, PARAM_DIM)
    assert out["z0"].dtype == dtype and out["samples"].dtype == dtype and torch.isfinite(out["samples"]).all()
    assert m.predict(torch.rand(1, 3, SIZE, SIZE, dtype=dtype), 0)["samples"].shape == (1, 0, PARAM_DIM)


@pytest.mark.parametrize("kind", KINDS)
def test_estimate_and_sample_equal_separate_calls(kind) -> None:
    """The shared-work overrides give what ``z0_std`` and ``sample_std`` give with the same seed."""
    m = _model(kind).eval()
    _perturb(m)
    f = torch.randn(3, m.backbone.dim)
    with torch.no_grad():
        z0, s = m.estimate_and_sample_std(f, 5, _gen(7))
        torch.testing.assert_close(z0, m.z0_std(f))
        torch.testing.assert_close(s, m.sample_std(f, 5, _gen(7)))


def test_head_mlp_starts_at_zero() -> None:
    net = head_mlp(10, 4, hidden=8, layers=3)
    assert sum(isinstance(x, torch.nn.Linear) for x in net) == 4
    assert torch.equal(net(torch.randn(5, 10)), torch.zeros(5, 4))


def test_config_ranges() -> None:
    for bad in ("model.dropout=1.0", "model.latent_dim=0", "model.free_bits=-0.1"):
        with pytest.raises(ConfigError):
            load_config("cpu", [bad])
    with pytest.raises(ValueError, match="dropout"):
        _model("mcdropout", "model.dropout=0.0")


# ----------------------------------------------------------------------------- per model
def test_deterministic_repeats_its_prediction() -> None:
    m = _model("deterministic").eval()
    _perturb(m)
    out = m.predict(torch.rand(2, 3, SIZE, SIZE), 4)
    assert torch.equal(out["samples"], out["z0"][:, None].expand(-1, 4, -1))
    y_mask = torch.ones(2, 1, dtype=torch.bool)
    assert m.head_losses(torch.randn(2, m.backbone.dim), torch.randn(2, 1, PARAM_DIM), y_mask, None) == {}


def test_gaussian_samples_follow_the_predicted_distribution() -> None:
    n = 20000
    m = _model("gaussian").eval()
    _perturb(m, 0.2)
    f = torch.randn(1, m.backbone.dim)
    with torch.no_grad():
        mean, logvar = m.mean_logvar(f)
        z0, s = m.estimate_and_sample_std(f, n, _gen(1))
    assert torch.equal(z0, mean)
    std = torch.exp(0.5 * logvar)[0]
    assert std.max() / std.min() > 1.5  # the test sees different variances
    z = (s[0].mean(0) - mean[0]) / (std / n ** 0.5)  # ~ N(0, 1) per dimension
    assert z.abs().max() < Z_MAX, z.abs().max()
    # the sample std of n normals has relative std 1/sqrt(2n) = 0.005: 5 % is 10 of those
    torch.testing.assert_close(s[0].std(0) / std, torch.ones(PARAM_DIM), atol=0.05, rtol=0)


def test_gaussian_nll_matches_torch_distributions_in_float64() -> None:
    g = _gen(2)
    y, mean, logvar = (torch.randn(3, 4, PARAM_DIM, generator=g, dtype=torch.float64) for _ in range(3))
    ref = torch.distributions.Normal(mean, torch.exp(0.5 * logvar)).log_prob(y).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(y, mean, logvar), ref)
    m = _model("gaussian").double()
    _perturb(m)
    f = torch.randn(3, m.backbone.dim, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False], [False] * 4])
    nll = m.head_losses(f, y, mask, None)["nll"]
    mu, lv = m.mean_logvar(f)
    lp = torch.distributions.Normal(mu[:, None], torch.exp(0.5 * lv)[:, None]).log_prob(y).sum(-1)
    expect = torch.stack([-lp[0, :2].max(), -lp[1, 0]]).mean() / PARAM_DIM  # min NLL over real annotations, rows with any
    torch.testing.assert_close(nll, expect)
    assert m.head_losses(f, y, torch.zeros_like(mask), None) == {}  # no image with parameters


def test_mcdropout_sampling() -> None:
    m = _model("mcdropout", "model.dropout=0.3")
    _perturb(m)
    f = torch.randn(2, m.backbone.dim)
    m.eval()
    a = m.sample_std(f, 6, _gen(3))
    b = m.sample_std(f, 6, _gen(3))
    assert torch.equal(a, b)  # reproducible with a seeded generator
    assert (a[:, 0] - a[:, 1]).abs().max() > 1e-4 and not torch.equal(a, m.sample_std(f, 6, _gen(4)))  # diverse
    assert torch.equal(m.z0_std(f), m.z0_std(f)) and torch.equal(m.z0_std(f), m.head(f))  # eval: no dropout
    m.train()
    assert not torch.equal(m.z0_std(f), m.z0_std(f))  # trained with dropout on
    assert torch.equal(m.sample_std(f, 6, _gen(3)), a)  # sampling does not depend on the mode


def test_mcdropout_masks_have_the_dropout_rate() -> None:
    p = 0.3
    m = _model("mcdropout", f"model.dropout={p}")
    x = torch.ones(4, 50, 100)
    d = m._drop(x, _gen(0))
    kept = (d != 0).double().mean()
    assert abs(kept - (1 - p)) < Z_MAX * (p * (1 - p) / x.numel()) ** 0.5
    torch.testing.assert_close(d[d != 0], torch.full_like(d[d != 0], 1 / (1 - p)))  # inverted scaling
    assert torch.equal(m._drop(x, _gen(0), keep_first=True)[:, 0], x[:, 0])


def test_cvae_elbo_terms() -> None:
    g = _gen(4)
    mu, lv = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(5, 8, generator=g, dtype=torch.float64)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, torch.exp(0.5 * lv)),
                                            torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    torch.testing.assert_close(kl_to_standard_normal(mu, lv), ref)
    m: CVAEModel = _model("cvae", "model.latent_dim=4").double()
    f, y = torch.randn(2, m.backbone.dim, dtype=torch.float64), torch.randn(2, 3, PARAM_DIM, dtype=torch.float64)
    # at init the encoder outputs the prior (KL = 0) and the decoder the mean: -ELBO = Gaussian NLL of y at 0
    rec, kl = m.elbo_terms(f, y, _gen(0))
    assert torch.equal(kl, torch.zeros_like(kl))
    torch.testing.assert_close(rec, -torch.distributions.Normal(0.0, 1.0).log_prob(y).sum(-1))
    _perturb(m)
    mu_e, lv_e = m.encode(y, f)
    assert mu_e.abs().max() > 0 and torch.isfinite(m.neg_elbo(f, y, None)).all()
    torch.testing.assert_close(m.elbo_terms(f, y, _gen(1))[1].sum(-1), kl_to_standard_normal(mu_e, lv_e))
    assert m.sample_std(f, 5, _gen(1)).std(1).mean() > 0  # samples depend on w
    torch.testing.assert_close(m.z0_std(f), m.decode(torch.zeros(2, 4, dtype=torch.float64), f))


def test_cvae_loss_is_the_min_negative_elbo_and_free_bits_floor_the_kl() -> None:
    y = torch.randn(3, 2, PARAM_DIM, dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    m: CVAEModel = _model("cvae", "model.latent_dim=4", "model.free_bits=0").double()
    _perturb(m)
    f = torch.randn(3, m.backbone.dim, dtype=torch.float64)
    ne = m.neg_elbo(f, torch.where(mask[..., None], y, 0.0), _gen(2))
    torch.testing.assert_close(m.head_losses(f, y, mask, _gen(2))["nll"], nll_loss(-ne, mask))
    fb = 5.0  # far above the KL of the perturbed encoder: the KL term is exactly fb per latent dimension
    m.free_bits = fb
    rec, kl = m.elbo_terms(f, torch.where(mask[..., None], y, 0.0), _gen(2))
    assert kl.max() < fb
    best = torch.where(mask, ne, torch.inf).argmin(1)[:2]
    expect = (rec[torch.arange(2), best].mean() + fb * m.latent) / PARAM_DIM
    torch.testing.assert_close(m.head_losses(f, y, mask, _gen(2))["nll"], expect)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("kind", KINDS)
def test_training_steps_lower_the_loss(kind, tiny_data) -> None:
    """A few optimiser steps of the real module (default loss weights) on one fixed batch."""
    from handflow.data.datamodule import InterHandDataModule
    from handflow.training import HandFlowModule
    from handflow.training.runner import fit_normalizer

    cfg = load_config("cpu", [f"model.kind={kind}", f"data.image_size={SIZE}", "data.batch_size=4", "data.augment=false"])
    module = HandFlowModule(cfg)
    dm = InterHandDataModule(tiny_data, SIZE, 4, 0, augment=False)
    fit_normalizer(module, dm.dataset("train"))
    batch = next(iter(dm.train_dataloader()))
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    module.train()
    losses = []
    for _ in range(12):
        total, terms, _ = module.compute_losses(batch)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert all(map(lambda v: v == v, losses)) and losses[-1] < 0.8 * losses[0], losses
    assert {"theta", "3d", "2d", "rot"} <= set(terms) and "det" not in terms
    assert ("nll" in terms) == (kind in ("gaussian", "cvae"))


@pytest.fixture(scope="module")
def cli_checkpoints(tiny_data, tmp_path_factory) -> dict:
    """``handflow train --model KIND`` for one CPU step, for every baseline: kind -> (out folder, args)."""
    from typer.testing import CliRunner

    from handflow.cli import app

    out = {}
    for kind in KINDS:
        folder = tmp_path_factory.mktemp(kind)
        args = ["train", "--config", "cpu", "--data", str(tiny_data), "--out", str(folder), "--model", kind, "--devices", "1",
                f"data.image_size={SIZE}", "data.batch_size=2", "data.num_workers=0", "train.max_steps=1", "train.threads=1",
                "train.max_minutes=null", "train.val_every=1000", "train.accelerator=cpu"]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, (kind, r.output, r.exception)
        out[kind] = (folder, args)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_train_cli_checkpoint_and_predict(kind, cli_checkpoints, tiny_data) -> None:
    import handflow
    from handflow.safeio import load_torch_file
    from handflow.training import load_checkpoint

    last = cli_checkpoints[kind][0] / "checkpoints" / "last.ckpt"
    ck = load_torch_file(last)
    assert ck["global_step"] == 1 and ck["handflow"]["model_kind"] == kind
    module, cfg = load_checkpoint(last)
    assert cfg.model.kind == kind and type(module.model) is CLASSES[kind] and not module.training
    assert bool(module.model.normalizer.fitted)
    img = sorted((tiny_data / "images" / "test").rglob("*.jpg"))[0]
    pred = handflow.predict(last, [img], samples=3)[0]
    assert pred.sample_joints.shape == (3, 42, 3) and torch.isfinite(pred.sample_joints).all()
    assert torch.isfinite(pred.z0_joints).all()
    again = handflow.predict(module, [img], samples=3)[0]  # seeded: the same samples
    assert torch.equal(again.sample_joints, pred.sample_joints)


def test_resume_checks_the_fields_of_the_saved_kind(cli_checkpoints) -> None:
    from handflow.training import CheckpointMismatch
    from handflow.training.runner import check_compatible

    folder, _ = cli_checkpoints["cvae"]
    last = folder / "checkpoints" / "last.ckpt"
    base = [f"data.image_size={SIZE}", "model.kind=cvae"]
    check_compatible(last, load_config("cpu", base + ["model.flow_hidden=7"]))  # flow fields do not matter for a cVAE
    with pytest.raises(CheckpointMismatch, match="latent_dim"):
        check_compatible(last, load_config("cpu", base + ["model.latent_dim=8"]))
    with pytest.raises(CheckpointMismatch, match=r"model\.kind=cvae \(now gaussian\)"):
        check_compatible(last, load_config("cpu", [f"data.image_size={SIZE}", "model.kind=gaussian"]))
    folder, args = cli_checkpoints["mcdropout"]
    from typer.testing import CliRunner

    from handflow.cli import app

    bad = CliRunner().invoke(app, args + ["model.dropout=0.5"])  # resume with another dropout is refused
    assert bad.exit_code == 1 and "dropout" in bad.output and "Traceback" not in bad.output


def test_registry_is_explicit() -> None:
    """Every model kind is listed as soon as ``handflow.models`` is imported (nothing registers
    itself on a later import), and the old ``handflow.baselines`` path still works."""
    import subprocess
    import sys

    code = ("import handflow.models as m, handflow.config as c; "
            "assert sorted(m.MODEL_REGISTRY) == sorted(c.MODEL_KINDS), sorted(m.MODEL_REGISTRY); "
            "import handflow.baselines as b; assert b.CVAEModel is m.MODEL_REGISTRY['cvae']")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
