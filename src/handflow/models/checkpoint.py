"""Reading handflow checkpoints without Lightning.

A checkpoint (``handflow train``'s ``last.ckpt``, a weights-only snapshot, or a file written by
:meth:`handflow.predictor.Predictor.save`) holds ``hyper_parameters["config"]`` (the run's
config, plain data) and ``state_dict`` (the network under ``model.*``). It is read with
``weights_only=True`` (:func:`handflow.safeio.load_torch_file`): a file whose pickle would run
code is refused before anything runs. Nothing here imports Lightning:
:func:`handflow.training.load_checkpoint` builds its Lightning module on :func:`read_checkpoint`
and :func:`load_state`, and :func:`handflow.load_model` builds a plain predictor on
:func:`load_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from handflow.config import Config, saved_config
from handflow.errors import HandflowError
from handflow.models import HandPoseModel, build_model
from handflow.safeio import load_torch_file

__all__ = ["CheckpointMismatch", "read_checkpoint", "stored_config", "load_state", "load_model", "network_weights",
           "checkpoint_step", "MODEL_PREFIX"]

#: prefix of the network's entries in a checkpoint's state dict (the Lightning module's ``model``)
MODEL_PREFIX = "model."


class CheckpointMismatch(HandflowError, ValueError):
    """A checkpoint was built with another configuration or hand model than requested, or is
    not a handflow checkpoint."""


def stored_config(ck: Any, path: str | Path) -> Config:
    """The config stored in a loaded checkpoint ``ck`` (``hyper_parameters["config"]``).

    Raises:
        CheckpointMismatch: no stored config (not a handflow checkpoint)."""
    hp = ck.get("hyper_parameters") if isinstance(ck, dict) else None
    if not isinstance(hp, dict) or not isinstance(hp.get("config"), dict):
        raise CheckpointMismatch(f"{path} is not a handflow checkpoint (no stored config)")
    if not isinstance(ck.get("state_dict"), dict):
        raise CheckpointMismatch(f"{path} is not a handflow checkpoint (no state_dict)")
    return saved_config(hp["config"])


def read_checkpoint(path: str | Path, map_location: str = "cpu", expect_hand_model: str | None = None,
                    ) -> tuple[dict[str, Any], Config]:
    """Read a checkpoint safely -> ``(checkpoint dict, stored Config)``.

    Raises:
        MissingFileError: no such file (a ``FileNotFoundError``).
        UnsafeFileError: the file holds Python objects beyond tensors and plain data.
        CorruptFileError: empty, truncated or not a torch file.
        CheckpointMismatch: not a handflow checkpoint, or ``expect_hand_model`` differs from its hand model.
    """
    ck = load_torch_file(path, map_location=map_location)
    cfg = stored_config(ck, path)
    if expect_hand_model is not None and cfg.data.hand_model != expect_hand_model:
        raise CheckpointMismatch(f"{path} uses hand model {cfg.data.hand_model!r}, expected {expect_hand_model!r}")
    return ck, cfg


def network_weights(ck: dict[str, Any]) -> dict[str, Any]:
    """The network's entries of a loaded checkpoint's state dict, without their :data:`MODEL_PREFIX`
    (what ``HandPoseModel.load_state_dict`` takes; the hand model's buffers are left out)."""
    return {k[len(MODEL_PREFIX):]: v for k, v in ck["state_dict"].items() if k.startswith(MODEL_PREFIX)}


def checkpoint_step(ck: dict[str, Any]) -> int:
    """The training step a loaded checkpoint was written at: Lightning's ``global_step``, or for a
    weights file (:func:`handflow.models.shipped.export_weights`) the one it recorded; -1 if unknown."""
    return int(ck.get("global_step", ck.get("handflow", {}).get("global_step", -1)))


def load_state(module: nn.Module, state_dict: dict[str, Any], path: str | Path) -> None:
    """Load ``state_dict`` into ``module``; every entry must match.

    Raises:
        CheckpointMismatch: missing or unexpected entries (the file does not match its own config)."""
    missing, unexpected = module.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointMismatch(f"{path} does not match its own config: missing {missing[:5]}, unexpected {unexpected[:5]}")


def load_model(path: str | Path, map_location: str = "cpu", expect_hand_model: str | None = None) -> tuple[HandPoseModel, Config]:
    """The network of a checkpoint, without Lightning -> ``(HandPoseModel in eval mode, Config)``:
    the stored config builds the model (:func:`handflow.models.build_model`), the
    ``model.*`` entries of the state dict fill it (other entries are ignored).

    Raises:
        MissingFileError, UnsafeFileError, CorruptFileError: as :func:`read_checkpoint`.
        CheckpointMismatch: as :func:`read_checkpoint`, or weights that do not fit the stored config.
    """
    ck, cfg = read_checkpoint(path, map_location, expect_hand_model)
    model = build_model(cfg)
    load_state(model, network_weights(ck), path)
    return model.eval(), cfg
