"""No checkpoint may run code (issue #15 §1): every torch file a user passes is read with
``weights_only=True`` through :func:`handflow.safeio.load_torch_file`.

A hostile checkpoint (its pickle calls ``os.system("touch MARKER")``) goes through every entry
point that reads one; each must refuse it with :class:`UnsafeFileError` naming the file, and the
marker must never appear. ``test_the_hostile_file_runs_code_when_fully_unpickled`` shows that the
file is indeed hostile: the ``torch.load(weights_only=False)`` the entry points used before runs it.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_cfg, tiny_train

from handflow.errors import CorruptFileError, HandflowError, MissingFileError, UnsafeFileError
from handflow.safeio import load_torch_file

ROOT = Path(__file__).resolve().parents[1]
#: the CLI's overrides for a tiny CPU run (as in tests/test_training.py)
TRAIN_ARGS = ("--config", "cpu", "--devices", "1", "data.image_size=64", "data.batch_size=2", "data.num_workers=0",
              "model.flow_hidden=32", "train.max_steps=1", "train.threads=1", "train.max_minutes=null", "train.val_every=1000")


class _RunsCode:
    """Unpickles as a call of ``os.system(command)``: what a planted checkpoint would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def _hostile(folder: Path, name: str = "hostile.ckpt") -> tuple[Path, Path]:
    """``(checkpoint, marker)``: a checkpoint shaped like ours whose unpickling creates ``marker``."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{name}.RAN"
    path = folder / name
    torch.save({"state_dict": {}, "optimizer_states": [], "hyper_parameters": {"config": {}}, "global_step": 1,
                "payload": _RunsCode(f"touch '{marker}'")}, path)
    return path, marker


def _check_refused(error: BaseException | str, path: Path) -> None:
    """``error`` (an exception or the CLI's output) is the one-line refusal naming ``path``."""
    if isinstance(error, BaseException):
        assert isinstance(error, UnsafeFileError), repr(error)
        error = str(error)
    assert re.search(rf"refused to load \S*{re.escape(path.name)}: it holds Python objects .*\(posix\.system\)", error), error


def _check_cli_refused(result: Any, path: Path, marker: Path) -> None:
    """A CLI run refused ``path`` (exit code not 0) without running it, whichever way the CLI
    reports the error (the exception itself, or one ``error: ...`` line and exit code 1)."""
    assert not marker.exists(), "the hostile checkpoint ran code"
    assert result.exit_code != 0, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        _check_refused(result.exception, path)
    else:
        _check_refused(" ".join(result.output.split()), path)


def _cli(*args: Any) -> Any:
    from typer.testing import CliRunner

    from handflow.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


# ----------------------------------------------------------------------------- the file itself
def test_the_hostile_file_runs_code_when_fully_unpickled(tmp_path) -> None:
    """The code before this change (``torch.load(weights_only=False)`` in load_checkpoint,
    check_compatible and the report) ran the planted command: every test below failed there."""
    path, marker = _hostile(tmp_path)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


def test_load_torch_file_refuses_code_and_reports_bad_files_in_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's switch to unsafe defaults: no effect here
    path, marker = _hostile(tmp_path)
    with pytest.raises(UnsafeFileError) as e:
        load_torch_file(path)
    _check_refused(e.value, path)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and isinstance(e.value, HandflowError)
    legacy = tmp_path / "legacy.ckpt"  # the pre-zip torch.save format goes through the same unpickler
    torch.save({"x": _RunsCode(f"touch '{marker}'")}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeFileError, match="legacy.ckpt"):
        load_torch_file(legacy)
    assert not marker.exists()

    empty, noise, cut = tmp_path / "empty.ckpt", tmp_path / "noise.ckpt", tmp_path / "cut.ckpt"
    empty.write_bytes(b"")
    noise.write_bytes(random.Random(0).randbytes(4096))
    buf = tmp_path / "real.pt"
    torch.save({"w": torch.arange(1000.0)}, buf)
    cut.write_bytes(buf.read_bytes()[:600])
    for bad, why in ((empty, "empty"), (noise, "not a torch file"), (cut, "truncated")):
        with pytest.raises(CorruptFileError) as e:
            load_torch_file(bad, what="checkpoint")
        msg = str(e.value)
        assert "\n" not in msg and str(bad) in msg and why in msg and msg.startswith("cannot read checkpoint"), msg
    with pytest.raises(MissingFileError, match="not found") as e:
        load_torch_file(tmp_path / "missing.ckpt")
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(CorruptFileError, match="folder"):
        load_torch_file(tmp_path)


def test_load_checkpoint_reports_corrupt_files(tmp_path) -> None:
    from handflow.training import load_checkpoint

    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty.ckpt"):
        load_checkpoint(empty)
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(random.Random(1).randbytes(2048))
    with pytest.raises(CorruptFileError, match="noise.ckpt"):
        load_checkpoint(noise)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")


# ----------------------------------------------------------------------------- every entry point
def test_cli_predict_refuses(tiny_data, tmp_path) -> None:
    path, marker = _hostile(tmp_path)
    image = sorted((tiny_data / "images" / "test").rglob("*.jpg"))[0]
    _check_cli_refused(_cli("predict", "--checkpoint", path, "--images", image, "--out", tmp_path / "pred"), path, marker)


def test_cli_evaluate_refuses(tiny_data, tmp_path) -> None:
    path, marker = _hostile(tmp_path)
    result = _cli("evaluate", "--checkpoint", path, "--data", tiny_data, "--out", tmp_path / "ev", "--no-progress")
    _check_cli_refused(result, path, marker)


def test_cli_features_refuses(tiny_data, tmp_path) -> None:
    path, marker = _hostile(tmp_path)
    result = _cli("features", "--checkpoint", path, "--data", tiny_data, "--out", tmp_path / "feat", "--workers", 0,
                  "--no-progress")
    _check_cli_refused(result, path, marker)


def test_cli_select_refuses_a_planted_step_checkpoint(tmp_path) -> None:
    path, marker = _hostile(tmp_path / "run" / "checkpoints", "step0000001.ckpt")
    _check_cli_refused(_cli("select", "--run", tmp_path / "run", "--no-progress"), path, marker)


def test_cli_train_refuses_a_hostile_backbone_checkpoint(tiny_data, tmp_path) -> None:
    path, marker = _hostile(tmp_path)
    result = _cli("train", "--data", tiny_data, "--out", tmp_path / "out", *TRAIN_ARGS, f"model.backbone_checkpoint={path}")
    _check_cli_refused(result, path, marker)


def test_cli_train_refuses_a_hostile_resume_file(tiny_data, tmp_path) -> None:
    path, marker = _hostile(tmp_path)
    result = _cli("train", "--data", tiny_data, "--out", tmp_path / "out", "--resume", path, *TRAIN_ARGS)
    _check_cli_refused(result, path, marker)


def test_cli_train_refuses_a_planted_last_checkpoint(tiny_data, tmp_path) -> None:
    """``--resume auto`` (the default) resumes from OUT/checkpoints/last.ckpt when present."""
    out = tmp_path / "out"
    path, marker = _hostile(out / "checkpoints", "last.ckpt")
    _check_cli_refused(_cli("train", "--data", tiny_data, "--out", out, *TRAIN_ARGS), path, marker)
    _check_cli_refused(_cli("train", "--data", tiny_data, "--out", out, "--resume", "auto", *TRAIN_ARGS), path, marker)


def test_lightning_resume_itself_reads_weights_only(tiny_data, tmp_path, monkeypatch) -> None:
    """Defence in depth: even without check_compatible in front, Lightning's own resume
    (``trainer.fit(ckpt_path=...)``) is called with an explicit ``weights_only=True``, which
    torch's ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` cannot turn off (it does turn off the default)."""
    import importlib
    import pickle

    from handflow.data.datamodule import InterHandDataModule

    T = importlib.import_module("handflow.training.runner")

    path, marker = _hostile(tmp_path)
    monkeypatch.setattr(T, "check_compatible", lambda *a, **k: None)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    cfg = tiny_cfg(tiny_data, tmp_path / "out", 1)
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        T.train(cfg, resume=str(path), datamodule=InterHandDataModule.from_config(cfg, num_workers=0, augment=False),
                enable_progress_bar=False)
    assert not marker.exists()


def test_python_predict_refuses(tmp_path) -> None:
    import handflow

    path, marker = _hostile(tmp_path)
    with pytest.raises(UnsafeFileError) as e:
        handflow.predict(path, torch.rand(3, 64, 64), samples=2)
    _check_refused(e.value, path)
    with pytest.raises(UnsafeFileError):
        handflow.predict(str(path), torch.rand(3, 64, 64), samples=2)
    assert not marker.exists()


def test_report_reads_refuse(tmp_path) -> None:
    from handflow.pipeline.stages import finished_step, training_done

    path, marker = _hostile(tmp_path / "runs" / "flow-0" / "checkpoints", "last.ckpt")
    with pytest.raises(UnsafeFileError) as e:
        finished_step(path)
    _check_refused(e.value, path)
    with pytest.raises(UnsafeFileError):
        training_done(path, steps=10, minutes=1.0)
    assert not marker.exists()
    assert finished_step(tmp_path / "none.ckpt") == -1 and not training_done(tmp_path / "none.ckpt", 10, None)


def test_backbone_weights_and_feature_cache_refuse(tiny_data, tmp_path) -> None:
    """The two readers that were weights_only=True already now refuse in the same one line."""
    import json

    from handflow.data.features import FEATURES_META, FeatureCacheError, load_split_features
    from handflow.models.backbone import Backbone

    path, marker = _hostile(tmp_path)
    with pytest.raises(UnsafeFileError) as e:
        Backbone("resnet18", pretrained_path=str(path))
    _check_refused(e.value, path)
    feats = tmp_path / "feats"
    planted, _ = _hostile(feats, "train.pt")
    (feats / FEATURES_META).write_text(json.dumps({"splits": {"train": 1}}))
    with pytest.raises(UnsafeFileError) as e:
        load_split_features(feats, "train")
    _check_refused(e.value, planted)
    planted.write_bytes(b"")
    with pytest.raises(FeatureCacheError, match="empty.*handflow features"):
        load_split_features(feats, "train")
    assert not marker.exists()


# ----------------------------------------------------------------------------- our own files
@pytest.fixture(scope="module")
def timed_run(tiny_data, tmp_path_factory) -> Path:
    """Two steps with a wall-clock cap (Lightning's Timer state in last.ckpt), a snapshot per step."""
    out = tmp_path_factory.mktemp("safe") / "run"
    tiny_train(tiny_data, out, 2, **{"train.ckpt_every": 1, "train.max_minutes": 5})
    return out


def test_our_checkpoints_load_weights_only(timed_run) -> None:
    """The full last.ckpt (optimizer, loops, callbacks with Timer, LR schedule, hyper-parameters)
    and the periodic snapshots hold tensors and plain data only: no global to allowlist."""
    try:
        from torch.serialization import get_unsafe_globals_in_checkpoint
    except ImportError:  # torch < 2.5 (the lower bound is 2.4): a weights_only load of the file must succeed
        def get_unsafe_globals_in_checkpoint(f: str) -> list:
            torch.load(f, map_location="cpu", weights_only=True)
            return []

    from handflow.pipeline.stages import finished_step, training_done
    from handflow.training import load_checkpoint

    ckpts = timed_run / "checkpoints"
    last, snap = ckpts / "last.ckpt", ckpts / "step0000002.ckpt"
    for p in (last, snap, ckpts / "step0000001.ckpt"):
        assert get_unsafe_globals_in_checkpoint(str(p)) == [], p
    full = load_torch_file(last)
    assert {"optimizer_states", "loops", "callbacks", "lr_schedulers", "hyper_parameters", "handflow"} <= set(full)
    assert full["callbacks"]["Timer"]["time_elapsed"]["train"] > 0 and full["lr_schedulers"]
    assert type(full["hyper_parameters"]) is dict and full["global_step"] == 2
    weights = load_torch_file(snap)
    assert "optimizer_states" not in weights and weights["state_dict"].keys() == full["state_dict"].keys()
    module, cfg = load_checkpoint(snap)
    assert cfg.train.max_minutes == 5 and bool(module.model.normalizer.fitted)
    assert finished_step(last) == 2 and training_done(last, 2, None) and not training_done(last, 3, 5.0)


def test_mid_epoch_resume_is_logged_in_our_words_without_lightnings_warning(timed_run, tiny_data, tmp_path, caplog) -> None:
    """Step 2 of 8 per epoch is mid-epoch: Lightning would warn that resuming there "can cause
    unreliable results"; ours is exact (tests/test_training.py), so the warning is replaced by one
    info line."""
    import warnings

    out = tmp_path / "run"
    shutil.copytree(timed_run, out)
    with warnings.catch_warnings(record=True) as seen, caplog.at_level("INFO", logger="handflow.training.runner"):
        warnings.simplefilter("always")
        tiny_train(tiny_data, out, 3, **{"train.ckpt_every": 1, "train.max_minutes": 5})
    assert not [w for w in seen if "unreliable" in str(w.message)], [str(w.message) for w in seen]
    assert len(re.findall(r"resuming inside epoch 0 at batch 2: exact", caplog.text)) == 1, caplog.text
    assert load_torch_file(out / "checkpoints" / "last.ckpt")["global_step"] == 3


def test_no_unsafe_load_is_left_in_the_sources() -> None:
    """No ``weights_only=False`` anywhere in src/ or benchmarks/, and every torch.load of a file
    goes through handflow.safeio (one refusal, one set of messages)."""
    unsafe, direct = [], []
    for folder in (ROOT / "src", ROOT / "benchmarks"):
        for f in sorted(folder.rglob("*.py")):
            text = f.read_text(encoding="utf-8")
            rel = f.relative_to(ROOT)
            unsafe += [f"{rel}:{text[:m.start()].count(chr(10)) + 1}" for m in re.finditer(r"weights_only\s*=\s*False", text)]
            if f.name != "safeio.py":
                direct += [f"{rel}:{text[:m.start()].count(chr(10)) + 1}" for m in re.finditer(r"\btorch\.load\(", text)]
    assert not unsafe, f"weights_only=False (a file could run code): {unsafe}"
    assert not direct, f"torch.load outside handflow.safeio.load_torch_file: {direct}"


def test_saving_checkpoints_logs_no_weights_only_note(tiny_data, tmp_path, caplog) -> None:
    """Lightning notes "`weights_only` was not set, defaulting to `False`" on every full
    checkpoint *save*; beside our weights_only=True loads it reads like an unsafe load, so a
    training run drops it (and only it: the filter is gone after the run)."""
    import logging

    from handflow.training.runner import _LIGHTNING_CHECKPOINT_LOGGER

    with caplog.at_level("INFO", logger=_LIGHTNING_CHECKPOINT_LOGGER):
        tiny_train(tiny_data, tmp_path / "run", 2, **{"train.ckpt_every": 1})
        assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
        assert "weights_only` was not set" not in caplog.text
        logging.getLogger(_LIGHTNING_CHECKPOINT_LOGGER).info("`weights_only` was not set, defaulting to `False`.")
    assert "weights_only` was not set" in caplog.text  # the filter was scoped to the run; the capture works
