"""The four baselines: sampling semantics, likelihoods against torch.distributions in float64,
training through the real module and CLI, prediction from a checkpoint."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_train
from handflow.baselines import CVAEModel, GaussianModel, MCDropoutModel, gaussian_log_prob, kl_to_standard_normal
from handflow.config import load_config
from handflow.constants import PARAM_DIM
from handflow.models import MODEL_REGISTRY, build_model

KINDS = ("deterministic", "gaussian", "mcdropout", "cvae")


def _model(kind: str, *over: str):
    m = build_model(load_config("cpu", [f"model.kind={kind}", "data.image_size=64", *over]))
    m.normalizer.fit(torch.randn(64, PARAM_DIM))
    return m


def _perturb(m, scale: float = 0.05) -> None:
    """Move every zero-initialised last layer so heads depend on their input."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_registry(kind) -> None:
    m = _model(kind).eval()
    assert MODEL_REGISTRY[kind] is type(m) and m.kind == kind
    out = m.predict(torch.rand(2, 3, 64, 64), 7, torch.Generator().manual_seed(0))
    assert out["z0"].shape == (2, PARAM_DIM) and out["samples"].shape == (2, 7, PARAM_DIM)
    assert torch.isfinite(out["samples"]).all()


def test_deterministic_repeats_its_prediction() -> None:
    m = _model("deterministic").eval()
    _perturb(m)
    out = m.predict(torch.rand(2, 3, 64, 64), 4)
    assert torch.equal(out["samples"], out["z0"][:, None].expand(-1, 4, -1))


def test_gaussian_samples_follow_the_predicted_distribution() -> None:
    m = _model("gaussian").eval()
    _perturb(m, 0.2)
    f = torch.randn(1, m.backbone.dim)
    with torch.no_grad():
        mean, logvar = m.mean_logvar(f)
        z0, s = m.estimate_and_sample_std(f, 20000, torch.Generator().manual_seed(1))
    assert torch.equal(z0, mean)
    std = torch.exp(0.5 * logvar)[0]
    assert torch.allclose(s[0].mean(0), mean[0], atol=4 * std.max().item() / 20000 ** 0.5 * 1.5)
    assert torch.allclose(s[0].std(0) / std, torch.ones(PARAM_DIM), atol=0.05)


def test_gaussian_nll_matches_torch_distributions_in_float64() -> None:
    g = torch.Generator().manual_seed(2)
    y, mean, logvar = (torch.randn(3, 4, 218, generator=g, dtype=torch.float64) for _ in range(3))
    ref = torch.distributions.Normal(mean, torch.exp(0.5 * logvar)).log_prob(y).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(y, mean, logvar), ref)
    m = _model("gaussian").double()
    _perturb(m)
    f = torch.randn(3, m.backbone.dim, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False], [False] * 4])
    nll = m.head_losses(f, y, mask, None)["nll"]
    mu, lv = m.mean_logvar(f)
    lp = torch.distributions.Normal(mu[:, None], torch.exp(0.5 * lv)[:, None]).log_prob(y).sum(-1)
    expect = torch.stack([-lp[0, :2].max(), -lp[1, 0]]).mean() / 218  # min NLL over real annotations, rows with any
    torch.testing.assert_close(nll, expect)


def test_mcdropout_sampling() -> None:
    m = _model("mcdropout", "model.dropout=0.3")
    _perturb(m)
    f = torch.randn(2, m.backbone.dim)
    m.eval()
    a = m.sample_std(f, 6, torch.Generator().manual_seed(3))
    b = m.sample_std(f, 6, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and (a[:, 0] - a[:, 1]).abs().max() > 1e-4  # reproducible and diverse
    assert torch.equal(m.z0_std(f), m.z0_std(f)) and torch.equal(m.z0_std(f), m.head(f))  # eval: no dropout
    m.train()
    assert not torch.equal(m.z0_std(f), m.z0_std(f))  # trained with dropout on
    with pytest.raises(ValueError, match="dropout"):
        _model("mcdropout", "model.dropout=0.0")


def test_cvae_elbo_terms() -> None:
    g = torch.Generator().manual_seed(4)
    mu, lv = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(5, 8, generator=g, dtype=torch.float64)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, torch.exp(0.5 * lv)),
                                            torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    torch.testing.assert_close(kl_to_standard_normal(mu, lv), ref)
    m: CVAEModel = _model("cvae", "model.latent_dim=4")
    f, y = torch.randn(2, m.backbone.dim), torch.randn(2, 3, PARAM_DIM)
    # at init the encoder outputs the prior (KL = 0) and the decoder the mean: -ELBO = Gaussian NLL of y at 0
    ne = m.neg_elbo(f, y, torch.Generator().manual_seed(0))
    torch.testing.assert_close(ne, -torch.distributions.Normal(0.0, 1.0).log_prob(y).sum(-1))
    _perturb(m)
    mu_e, _ = m.encode(y, f)
    assert mu_e.abs().max() > 0 and torch.isfinite(m.neg_elbo(f, y, None)).all()
    assert m.sample_std(f, 5, torch.Generator().manual_seed(1)).std(1).mean() > 0  # samples depend on w


@pytest.mark.parametrize("kind", KINDS)
def test_training_steps_lower_the_loss(kind, tiny_data) -> None:
    from handflow.data.datamodule import InterHandDataModule
    from handflow.training import HandFlowModule
    from handflow.training.train import fit_normalizer

    cfg = load_config("cpu", [f"model.kind={kind}", "data.image_size=64", "data.batch_size=4", "data.augment=false"])
    module = HandFlowModule(cfg)
    dm = InterHandDataModule(tiny_data, 64, 4, 0, augment=False)
    fit_normalizer(module, dm.dataset("train"))
    batch = next(iter(dm.train_dataloader()))
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    module.train()
    torch.manual_seed(0)
    losses = []
    for _ in range(12):
        total, terms, _ = module.compute_losses(batch)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total))
    assert all(map(lambda v: v == v, losses)) and losses[-1] < 0.8 * losses[0], losses
    if kind in ("gaussian", "cvae"):
        assert "nll" in terms and "det" not in terms


def test_train_cli_and_predict_from_a_baseline_checkpoint(tiny_data, tmp_path) -> None:
    from typer.testing import CliRunner

    import handflow
    from handflow.cli import app
    from handflow.training import load_checkpoint

    r = CliRunner().invoke(app, ["train", "--data", str(tiny_data), "--out", str(tmp_path / "g"), "--model", "gaussian",
                                 "train.max_steps=1", "data.image_size=64", "data.batch_size=2", "train.accelerator=cpu",
                                 "train.max_minutes=null", "data.num_workers=0"])
    assert r.exit_code == 0, r.output
    module, cfg = load_checkpoint(tmp_path / "g" / "checkpoints" / "last.ckpt")
    assert cfg.model.kind == "gaussian" and isinstance(module.model, GaussianModel)
    img = sorted((tiny_data / "images" / "test").rglob("*.jpg"))[0]
    pred = handflow.predict(tmp_path / "g" / "checkpoints" / "last.ckpt", [img], samples=3)[0]
    assert pred.sample_joints.shape == (3, 42, 3) and torch.isfinite(pred.sample_joints).all()
    # MC-dropout through the shared helper: a checkpoint of another kind loads as that kind
    last = tiny_train(tiny_data, tmp_path / "m", 1, **{"model.kind": "mcdropout"})
    assert isinstance(load_checkpoint(last)[0].model, MCDropoutModel)
