"""Checkpoint selection on the validation split (handflow.training.select)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_train

from handflow.safeio import load_torch_file
from handflow.training import load_checkpoint
from handflow.training.select import BEST, SELECTION, _val_batches, select_checkpoint, step_checkpoints, validation_loss


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sel") / "run"
    tiny_train(tiny_data, out, 3, **{"train.lr": 3e-3, "train.ckpt_every": 1})  # one checkpoint per step
    return out


def test_best_is_the_lowest_validation_loss(run) -> None:
    ckpts = step_checkpoints(run)
    assert list(ckpts) == [1, 2, 3]
    sel = select_checkpoint(run, split="train", limit=6, batch_size=1)  # the tiny val split has 2 images
    # recompute every score independently, image by image
    losses = {}
    for step, path in ckpts.items():
        module, cfg = load_checkpoint(path)
        module.eval()
        batches = _val_batches(cfg, module.hand_model, "train", 6, 1)
        with torch.no_grad():
            per = [float(module.compute_losses(b)[0]) for b in batches]
        losses[step] = sum(per) / len(per)
        assert sel["steps"][str(step)]["loss"] == pytest.approx(losses[step], rel=1e-6)
    assert len(set(round(v, 6) for v in losses.values())) == 3  # the checkpoints differ
    assert sel["best_step"] == min(losses, key=losses.get) and sel["images"] == 6
    best = load_torch_file(run / "checkpoints" / BEST)
    assert best["global_step"] == sel["best_step"]
    assert json.loads((run / SELECTION).read_text()) == sel


def test_rerun_reuses_scores_and_other_settings_rescore(run, monkeypatch) -> None:
    first = select_checkpoint(run, limit=2, batch_size=4)
    import handflow.training.select as S

    monkeypatch.setattr(S, "validation_loss", lambda *a: pytest.fail("scored again"))
    assert select_checkpoint(run, limit=2, batch_size=4)["steps"] == first["steps"]
    monkeypatch.setattr(S, "validation_loss", validation_loss)
    assert select_checkpoint(run, limit=1, batch_size=4)["images"] == 1  # another limit: scored afresh


def test_no_step_checkpoint_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="ckpt_every"):
        select_checkpoint(tmp_path)


def test_cli(run, tmp_path) -> None:
    from typer.testing import CliRunner

    from handflow.cli import app

    r = CliRunner().invoke(app, ["select", "--run", str(run), "--split", "train", "--limit", "3", "--no-progress"])
    assert r.exit_code == 0, r.output
    sel = json.loads((run / SELECTION).read_text())
    assert f"step {sel['best_step']:>8}" in r.output and "<- best" in r.output and sel["images"] == 3
    r = CliRunner().invoke(app, ["select", "--run", str(tmp_path)])
    assert r.exit_code == 1 and "step*.ckpt" in r.output


def test_step_checkpoints_are_weights_only_snapshots(run, tiny_data, caplog) -> None:
    """Periodic snapshots hold the weights of their step without optimizer state (a third of the
    size of last.ckpt); they load for evaluation, and resuming training from one is refused."""
    from conftest import tiny_cfg

    from handflow.training.runner import CheckpointMismatch, check_compatible

    ckpts = step_checkpoints(run)
    last = run / "checkpoints" / "last.ckpt"
    snap, full = (load_torch_file(p) for p in (ckpts[3], last))
    assert "optimizer_states" not in snap and "optimizer_states" in full and full["global_step"] == 3
    assert snap["state_dict"].keys() == full["state_dict"].keys()
    for k, v in full["state_dict"].items():
        assert torch.equal(snap["state_dict"][k], v), k
    assert ckpts[3].stat().st_size < 0.5 * last.stat().st_size
    module, _ = load_checkpoint(ckpts[3])
    assert torch.equal(module.model.normalizer.mean, full["state_dict"]["model.normalizer.mean"])
    assert bool(module.model.normalizer.fitted)
    cfg = tiny_cfg(tiny_data, run, 4, **{"train.ckpt_every": 1})
    check_compatible(last, cfg)
    with caplog.at_level("WARNING", logger="handflow.training.runner"):
        check_compatible(last, tiny_cfg(tiny_data, run, 4, **{"train.ckpt_every": 1, "loss.joints3d_root_relative": "false"}))
    assert "other loss settings" in caplog.text and "joints3d_root_relative" in caplog.text
    with pytest.raises(CheckpointMismatch, match="weights only.*last.ckpt"):
        check_compatible(ckpts[2], cfg)
