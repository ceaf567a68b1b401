"""The CLI's one error style: a user error is one line ``error: ...`` and exit code 1; a bug is
one line naming its type; ``--verbose``/``HANDFLOW_DEBUG=1`` keep the traceback; logging is
configured once (INFO by default, ``--quiet``/``--verbose``)."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

import handflow.training
from handflow.cli import app
from handflow.cli.app import DEBUG_ENV, configure_logging, error_line
from handflow.config import MODEL_KINDS, ConfigError, check_hardware, load_config
from handflow.errors import HandflowError, InputError


def _train_raising(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> list[str]:
    """``handflow train`` arguments whose training call raises ``exc`` (nothing is trained)."""

    def fake(cfg, resume=True):
        raise exc

    monkeypatch.setattr(handflow.training, "train", fake)
    return ["train", "--config", "cpu", "--data", "somewhere", "--out", "elsewhere", "train.accelerator=cpu"]


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_handflow_error_is_one_line_exit_1(monkeypatch) -> None:
    args = _train_raising(monkeypatch, InputError("the thing is wrong; pass another thing"))
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1
    assert _lines(r.output) == ["error: the thing is wrong; pass another thing"]


def test_empty_file_is_not_aborted(monkeypatch) -> None:
    """Click reads an EOFError as Ctrl-D and prints "Aborted!": ours is one line naming the error."""
    r = CliRunner().invoke(app, _train_raising(monkeypatch, EOFError("Ran out of input")))
    assert r.exit_code == 1 and "Aborted" not in r.output
    assert _lines(r.output) == [error_line(EOFError("Ran out of input"))]
    assert "EOFError" in r.output and "--verbose" in r.output


def test_os_error_names_the_file(monkeypatch) -> None:
    r = CliRunner().invoke(app, _train_raising(monkeypatch, FileNotFoundError("checkpoint not found: x.ckpt")))
    assert r.exit_code == 1 and _lines(r.output) == ["error: checkpoint not found: x.ckpt"]


def test_unexpected_error_is_one_line_flagged_as_bug(monkeypatch) -> None:
    r = CliRunner().invoke(app, _train_raising(monkeypatch, ZeroDivisionError("division by zero")))
    assert r.exit_code == 1 and "Traceback" not in r.output
    (line,) = _lines(r.output)
    assert line.startswith("error: unexpected ZeroDivisionError: division by zero") and DEBUG_ENV in line


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_keeps_the_traceback(monkeypatch, how: str) -> None:
    args = _train_raising(monkeypatch, InputError("boom"))
    if how == "flag":
        args = ["--verbose", *args]
    else:
        monkeypatch.setenv(DEBUG_ENV, "1")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1 and isinstance(r.exception, InputError)


def test_message_with_newlines_stays_one_line() -> None:
    assert error_line(HandflowError("first\n  second")) == "error: first second"


@pytest.mark.parametrize("args, key", [(["--model", "fl0w"], "model.kind"), (["--devices", "0"], "train.devices"),
                                       (["train.accelerator=gpux"], "train.accelerator")])
def test_unknown_model_and_lightning_settings_go_through_config_checks(args: list[str], key: str) -> None:
    r = CliRunner().invoke(app, ["train", "--data", "x", "--out", "y", *args])
    assert r.exit_code == 1
    (line,) = _lines(r.output)
    assert line.startswith(f"error: config: {key}=") and ("choose one of" in line or "use a count" in line)


def test_model_kinds_match_the_registry() -> None:
    from handflow.models import MODEL_REGISTRY, model_class

    for kind in MODEL_KINDS:
        model_class(kind)
    assert sorted(MODEL_REGISTRY) == sorted(MODEL_KINDS)
    with pytest.raises(ConfigError, match="unknown model kind"):
        model_class("fl0w")


def test_gpu_accelerator_without_gpu_is_refused(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="no CUDA device"):
        check_hardware(load_config("cpu", ["train.accelerator=gpu"]))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="2 CUDA device"):
        check_hardware(load_config("cpu", ["train.accelerator=gpu", "train.devices=4"]))
    check_hardware(load_config("cpu", ["train.accelerator=gpu", "train.devices=2"]))
    check_hardware(load_config("cpu", ["train.accelerator=cpu"]))


@pytest.mark.parametrize("devices, ok", [(1, True), (-1, True), (0, False), ("auto", True), ("0,1", True),
                                         ("two", False), ("", False), ("0,,1", False)])
def test_devices_values(devices, ok: bool) -> None:
    over = [f"train.devices={devices}"]
    if ok:
        load_config("cpu", over)
    else:
        with pytest.raises(ConfigError, match="train.devices"):
            load_config("cpu", over)


def test_logging_is_configured_once(capsys) -> None:
    log = logging.getLogger("handflow.test")
    configure_logging()
    configure_logging()
    log.info("resuming from x")
    err = capsys.readouterr().err
    assert err.count("resuming from x") == 1
    configure_logging(quiet=True)
    log.info("hidden")
    assert "hidden" not in capsys.readouterr().err
    configure_logging()


def test_cli_prints_info_logs(monkeypatch) -> None:
    def fake(cfg, resume=True):
        logging.getLogger("handflow.training.runner").info("resuming from last.ckpt")
        return "last.ckpt"

    monkeypatch.setattr(handflow.training, "train", fake)
    args = ["train", "--data", "x", "--out", "y", "train.accelerator=cpu"]
    assert "resuming from last.ckpt" in CliRunner().invoke(app, args).output
    assert "resuming from" not in CliRunner().invoke(app, ["--quiet", *args]).output
