"""Training through the real entry point: smoke run, exact resume, NaN skipping, checkpoints."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from conftest import tiny_cfg

from handflow.config import load_config
from handflow.data.datamodule import InterHandDataModule
from handflow.safeio import load_torch_file
from handflow.training import CheckpointMismatch, load_checkpoint, train


def _cfg(root, out, steps, **kw):
    return tiny_cfg(root, out, steps, **kw)


def _dm(cfg):
    return InterHandDataModule.from_config(cfg, num_workers=0, augment=False, multihands=None, features=None)


def _weights(path):
    return load_torch_file(path)["state_dict"]


def test_smoke_train_predict_and_exact_resume(tiny_data, tmp_path) -> None:
    dm = _dm(_cfg(tiny_data, tmp_path / "a", 1))
    steps_per_epoch = len(dm.dataset("train")) // 2
    n = 2 * steps_per_epoch
    last = train(_cfg(tiny_data, tmp_path / "a", n), datamodule=_dm(_cfg(tiny_data, tmp_path / "a", n)),
                 enable_progress_bar=False)
    straight = _weights(last)
    # the same run, interrupted after its first epoch, then resumed automatically from last.ckpt
    import lightning.pytorch as pl

    class Interrupt(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    train(_cfg(tiny_data, tmp_path / "b", n), datamodule=_dm(_cfg(tiny_data, tmp_path / "b", 1)), enable_progress_bar=False,
          extra_callbacks=[Interrupt()])
    assert load_torch_file(tmp_path / "b/checkpoints/last.ckpt")["global_step"] == steps_per_epoch
    last_b = train(_cfg(tiny_data, tmp_path / "b", n), datamodule=_dm(_cfg(tiny_data, tmp_path / "b", 1)),
                   enable_progress_bar=False)
    resumed = _weights(last_b)
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    ck = load_torch_file(last)
    assert ck["handflow"]["hand_model"] == "openhand" and ck["handflow"]["version"]
    assert ck["global_step"] == n
    module, cfg = load_checkpoint(last)
    assert bool(module.model.normalizer.fitted) and module.model.flow.initialized
    from handflow.inference import predict

    out = predict(module, torch.rand(3, 80, 100), samples=5)
    assert out[0].sample_joints.shape == (5, 42, 3) and torch.isfinite(out[0].z0_joints).all()
    with pytest.raises(CheckpointMismatch, match="hand model"):
        load_checkpoint(last, expect_hand_model="mano")
    with pytest.raises(CheckpointMismatch, match="backbone"):
        train(_cfg(tiny_data, tmp_path / "a", n + 1, **{"model.backbone": "resnet34"}),
              datamodule=_dm(_cfg(tiny_data, tmp_path / "a", 1)))


class _Crash(pl.Callback):
    """Simulates a machine failure right after optimizer step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.at:
            raise _Interrupted(f"simulated crash after step {self.at}")


class _Interrupted(RuntimeError):
    pass


def test_exact_resume_mid_epoch(tiny_data, tmp_path) -> None:
    """N steps straight == crash after N/2 (mid-epoch) + automatic resume to N, bit for bit."""
    dm = _dm(_cfg(tiny_data, tmp_path / "a", 1))
    steps_per_epoch = len(dm.dataset("train")) // 2
    n = 4
    assert n < steps_per_epoch, "the fixture must give more than 4 steps per epoch"
    straight = _weights(train(_cfg(tiny_data, tmp_path / "a", n), datamodule=_dm(_cfg(tiny_data, tmp_path / "a", 1)),
                              enable_progress_bar=False))
    cfg_b = _cfg(tiny_data, tmp_path / "b", n, **{"train.ckpt_every": 1})  # last.ckpt after every step
    with pytest.raises(_Interrupted):
        train(cfg_b, datamodule=_dm(cfg_b), enable_progress_bar=False, extra_callbacks=[_Crash(n // 2)])
    ck = load_torch_file(tmp_path / "b" / "checkpoints" / "last.ckpt")
    assert ck["global_step"] == n // 2
    last_b = train(cfg_b, datamodule=_dm(cfg_b), enable_progress_bar=False)
    assert load_torch_file(last_b)["global_step"] == n
    resumed = _weights(last_b)
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_nan_batch_is_skipped_without_touching_weights(tiny_data, tmp_path) -> None:
    from handflow.training import HandFlowModule
    from handflow.training.runner import fit_normalizer

    cfg = _cfg(tiny_data, tmp_path / "n", 1)
    dm = _dm(cfg)
    module = HandFlowModule(cfg)
    fit_normalizer(module, dm.dataset("train"))
    batch = torch.utils.data.default_collate([dm.dataset("train")[i] for i in range(2)])
    loss = module.training_step(batch, 0)
    assert loss is not None and torch.isfinite(loss)
    batch["image"][0, 0, 0, 0] = float("nan")
    before = {k: v.clone() for k, v in module.state_dict().items()}
    assert module.training_step(batch, 1) is None and module.skipped_batches == 1
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_each_switch_disables_its_term(tiny_data, tmp_path) -> None:
    from handflow.training import HandFlowModule
    from handflow.training.runner import fit_normalizer

    base = _cfg(tiny_data, tmp_path / "s", 1)
    dm = _dm(base)
    batch = torch.utils.data.default_collate([dm.dataset("train")[i] for i in range(2)])
    for term, key in (("nll", "w_nll"), ("det", "w_det"), ("theta", "w_theta"), ("3d", "w_3d"), ("2d", "w_2d"), ("rot", "w_rot")):
        module = HandFlowModule(_cfg(tiny_data, tmp_path / "s", 1, **{f"loss.{key}": 0.0}))
        fit_normalizer(module, dm.dataset("train"))
        _, terms, _ = module.compute_losses(batch)
        assert term not in terms and len(terms) == 5, (term, sorted(terms))


@pytest.mark.slow
def test_ddp_two_cpu_processes_gloo(tiny_data, tmp_path) -> None:
    # ddp_spawn: the plain "ddp" launcher re-executes sys.argv (pytest itself) in the children
    cfg = _cfg(tiny_data, tmp_path / "ddp", 2, **{"train.devices": 2, "train.strategy": "ddp_spawn"})
    last = train(cfg, datamodule=_dm(cfg), enable_progress_bar=False)
    assert load_torch_file(last)["global_step"] == 2


def test_mixed_precision_trains_with_a_float32_flow(tiny_data, tmp_path) -> None:
    """bf16-mixed on the CPU runs the autocast path that 16-mixed takes on a GPU: the backbone
    computes in bf16, the flow stays float32 (autocast off inside it), the weights stay finite
    float32, and the run resumes like any other."""
    from handflow.training import HandFlowModule

    cfg = _cfg(tiny_data, tmp_path / "amp", 2, **{"train.precision": "bf16-mixed"})
    last = train(cfg, datamodule=_dm(cfg), enable_progress_bar=False)
    ck = load_torch_file(last)
    assert ck["global_step"] == 2
    assert all(v.dtype != torch.bfloat16 and bool(torch.isfinite(v.float()).all()) for v in ck["state_dict"].values())
    module = HandFlowModule(cfg)
    batch = next(iter(_dm(cfg).train_dataloader()))
    feats = module.batch_features(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf = module.model.backbone(batch["image"])
        y, _ = module.model.flow.forward(torch.zeros(len(feats), module.model.flow.dim), bf)
    assert bf.dtype == torch.bfloat16 and y.dtype == torch.float32


def test_non_finite_gradients_skip_the_step(tmp_path) -> None:
    from handflow.training import HandFlowModule

    module = HandFlowModule(load_config("cpu", ["model.flow_hidden=32", "data.image_size=64"]))
    params = list(module.parameters())
    for p in params:
        p.grad = torch.ones_like(p)
    params[3].grad[0] = float("inf")
    before = [p.detach().clone() for p in params]
    module.on_after_backward()
    assert module.skipped_batches == 1 and all(p.grad is None for p in params)
    torch.optim.AdamW(params, lr=1.0, weight_decay=0.1).step()  # what Lightning runs next
    assert all(torch.equal(a, p) for a, p in zip(before, params))
    # finite gradients are left alone
    for p in params:
        p.grad = torch.ones_like(p)
    module.on_after_backward()
    assert module.skipped_batches == 1 and all(p.grad is not None for p in params)


def test_non_finite_gradients_left_to_the_amp_grad_scaler() -> None:
    """Under 16-bit AMP the GradScaler must see the inf gradients (it skips the step and lowers
    its scale); clearing them made it fail with 'No inf checks were recorded'."""
    from types import SimpleNamespace

    from handflow.training import HandFlowModule

    module = HandFlowModule(load_config("cpu", ["model.flow_hidden=32", "data.image_size=64"]))
    module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=torch.amp.GradScaler("cpu")))
    params = list(module.parameters())
    for p in params:
        p.grad = torch.ones_like(p)
    params[3].grad[0] = float("inf")
    module.on_after_backward()
    assert module.skipped_batches == 0 and all(p.grad is not None for p in params)
    assert torch.isinf(params[3].grad).any()


def test_cli_one_step_smoke_run(tiny_data, tmp_path) -> None:
    """``handflow train`` end to end: one CPU step, then a refused resume with another backbone."""
    from typer.testing import CliRunner

    from handflow.cli import app

    out = tmp_path / "cli"
    args = ["train", "--config", "cpu", "--data", str(tiny_data), "--out", str(out), "--devices", "1",
            "data.image_size=64", "data.batch_size=2", "data.num_workers=0", "model.flow_hidden=32", "train.max_steps=1",
            "train.threads=1", "train.max_minutes=null", "train.val_every=1000"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    ck = load_torch_file(out / "checkpoints" / "last.ckpt")
    assert ck["global_step"] == 1 and ck["hyper_parameters"]["config"]["data"]["image_size"] == 64
    assert (out / "logs").is_dir() and (out / "tb").is_dir()
    bad = CliRunner().invoke(app, args + ["model.backbone=resnet34"])
    assert bad.exit_code == 1 and "backbone" in bad.output and "Traceback" not in bad.output
    typo = CliRunner().invoke(app, args + ["loss.w_tpyo=1"])
    assert typo.exit_code != 0 and "w_tpyo" in typo.output


def test_progress_bar_names_the_last_epoch_only_when_epochs_bound_the_run(tmp_path):
    from types import SimpleNamespace

    from handflow.training.runner import ProgressBar, _trainer

    bar = ProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)  # what a run bounded by max_steps has during fit
    assert bar._get_train_description(5).strip() == "Epoch 5"  # Lightning's own reads "Epoch 5/-2"
    bar._trainer = SimpleNamespace(max_epochs=3)
    assert bar._get_train_description(1).strip() == "Epoch 1/2"
    cfg = load_config("cpu", [f"train.out_dir={tmp_path}", "train.max_steps=10"])
    assert sum(isinstance(c, ProgressBar) for c in _trainer(cfg, tmp_path, logger=False).callbacks) == 1
    assert not any(isinstance(c, ProgressBar) for c in _trainer(cfg, tmp_path, enable_progress_bar=False, logger=False).callbacks)


def test_resume_check_refuses_another_architecture_and_warns_for_other_losses(tmp_path, caplog) -> None:
    """check_compatible's policy (issue #19: the comparison is the shared settings_diff): the
    architecture must match (every differing key named), other loss settings resume with a
    warning naming them, train.* settings may change silently."""
    from handflow.config import to_dict
    from handflow.training.runner import RESUME_FIX, check_compatible

    cfg = load_config("cpu")
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "optimizer_states": [{}], "hyper_parameters": {"config": to_dict(cfg)}}, path)
    with caplog.at_level("WARNING", logger="handflow.training.runner"):
        check_compatible(path, cfg)  # the same settings: resumes silently
        check_compatible(path, load_config("cpu", ["train.max_steps=7", "train.lr=0.5"]))
    assert not caplog.text
    with caplog.at_level("WARNING", logger="handflow.training.runner"):
        check_compatible(path, load_config("cpu", ["loss.w_det=0"]))
    assert "other loss settings" in caplog.text and f"loss.w_det={cfg.loss.w_det} (now 0.0)" in caplog.text
    other = load_config("cpu", ["model.backbone=resnet34", "data.image_size=96", f"model.flow_steps={cfg.model.flow_steps + 1}"])
    with pytest.raises(CheckpointMismatch) as e:
        check_compatible(path, other)
    m, d = cfg.model, cfg.data
    assert str(e.value) == (f"{path} was written with model.backbone={m.backbone}, data.image_size={d.image_size}, "
                            f"model.flow_steps={m.flow_steps} (now resnet34, 96, {m.flow_steps + 1}): {RESUME_FIX}")
    with pytest.raises(CheckpointMismatch, match=r"was written with model\.kind=flow \(now cvae\): use a matching config"):
        check_compatible(path, load_config("cpu", ["model.kind=cvae"]))  # another kind: its own fields are not compared
