"""Models shipped with the package: their names, files, and how to write one.

A shipped model is a *weights file*: ``{"hyper_parameters": {"config"}, "state_dict", "handflow"}``
with the network's large tensors in float16 and no optimizer state, read like any checkpoint
with ``weights_only=True`` (:func:`handflow.models.checkpoint.load_model`). Nothing is ever
downloaded: the files are package data under ``handflow/assets/``.

========== ================================ ============================================================
name       file                             what
========== ================================ ============================================================
synthetic  ``image_synthetic.pt``           image model, ``cpu`` preset (docs/training.md, "Shipped model")
lifting    ``lifting_flow.pt``              2D-keypoint lifting model (docs/lifting.md)
========== ================================ ============================================================

``handflow.pretrained(name)`` loads one; ``model.init_from=NAME`` (or a checkpoint path) starts
training from one (docs/training.md, "Fine-tuning").

Examples:
    >>> shipped_names()
    ['synthetic', 'lifting']
    >>> SHIPPED["lifting"].kind
    'keypoints'
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from handflow.atomic import atomic_path
from handflow.errors import InputError, MissingFileError
from handflow.models.checkpoint import checkpoint_step
from handflow.safeio import load_torch_file

__all__ = ["ShippedModel", "SHIPPED", "DEFAULT_IMAGE_MODEL", "shipped_names", "shipped_path", "resolve_weights",
           "export_weights", "HALF_MIN_NUMEL"]


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model: its file under ``handflow/assets/``, its input (``image`` or
    ``keypoints``) and the page that says how it was trained and tested."""

    file: str
    kind: str
    docs: str


#: the shipped models by name
SHIPPED: dict[str, ShippedModel] = {
    "synthetic": ShippedModel("image_synthetic.pt", "image", "docs/training.md"),
    "lifting": ShippedModel("lifting_flow.pt", "keypoints", "docs/lifting.md"),
}
#: the image model ``handflow predict`` uses when no checkpoint is given
DEFAULT_IMAGE_MODEL = "synthetic"
#: tensors of the network with at least this many entries are stored in float16 by :func:`export_weights`
HALF_MIN_NUMEL = 4096


def shipped_names() -> list[str]:
    """The names :func:`shipped_path` and ``handflow.pretrained`` accept."""
    return list(SHIPPED)


def shipped_path(name: str) -> Path:
    """The file of shipped model ``name``.

    Raises:
        InputError: an unknown name (the message lists the known ones).
        MissingFileError: the file is missing from this install.
    """
    if name not in SHIPPED:
        raise InputError(f"no shipped model named {name!r}: choose one of {shipped_names()} or pass a checkpoint path")
    entry = SHIPPED[name]
    path = Path(str(resources.files("handflow").joinpath("assets").joinpath(entry.file)))  # one part each: Python 3.10
    if not path.is_file():
        raise MissingFileError(f"the shipped model {name!r} ({path}) is missing from this install: reinstall handflow, "
                               f"or pass a checkpoint of your own ({entry.docs} says how it was trained)")
    return path


def resolve_weights(name_or_path: str | Path) -> Path:
    """A checkpoint path as given, or the file of the shipped model of that name (a path that
    exists wins over a name)."""
    path = Path(name_or_path)
    if path.exists() or str(name_or_path) not in SHIPPED:
        return path
    return shipped_path(str(name_or_path))


def export_weights(checkpoint: str | Path, out: str | Path, note: dict[str, Any] | None = None, compress: bool = True) -> Path:
    """Write the weights of checkpoint ``checkpoint`` as a small file that every checkpoint reader
    takes (``weights_only=True``): ``{"hyper_parameters": {"config"}, "state_dict", "handflow"}``,
    the network's tensors of at least :data:`HALF_MIN_NUMEL` entries in float16, the rest (small
    tensors, integer buffers, the hand model's buffers) as they are; no optimizer state, so it
    cannot resume training (start a run from it with ``model.init_from``). ``note`` (plain
    data: the command, compute, test figures) is stored under ``handflow.note``.

    ``compress``: store the archive's records deflated (``torch.save`` writes a zip archive
    uncompressed; ``torch.load`` reads deflated records as well): about 8 % smaller for float16
    weights (the ``cpu`` preset's network: 26.7 -> 24.5 MB), read in the same fraction of a second."""
    ck = load_torch_file(checkpoint)
    sd = {}
    for k, v in ck["state_dict"].items():
        small = v.numel() < HALF_MIN_NUMEL or not v.is_floating_point() or not k.startswith("model.")
        sd[k] = v if small else v.half()
    meta = {**ck.get("handflow", {}), "source": Path(checkpoint).name, "global_step": checkpoint_step(ck),
            "note": note or {}}
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save({"hyper_parameters": {"config": ck["hyper_parameters"]["config"]}, "state_dict": sd, "handflow": meta}, tmp)
        if compress:
            _deflate(tmp)
    return out


def _deflate(path: Path) -> None:
    """Rewrite the zip archive ``path`` (a ``torch.save`` file) with every record deflated, in order."""
    with atomic_path(path) as packed, zipfile.ZipFile(path) as src, \
            zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
