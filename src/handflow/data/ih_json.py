"""Parsing and validation of InterHand2.6M annotation files (``reference/formats.md`` s. 1).

Every error names the file and the key, so a user can fix the input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from handflow.constants import NUM_JOINTS

__all__ = ["AnnotationError", "read_json", "annotation_paths", "SPLITS", "SUBSETS", "require"]

SPLITS = ("train", "val", "test")
#: v0.0 subset folders, in order of preference
SUBSETS = ("all", "human_annot", "machine_annot")
KINDS = ("data", "camera", "joint_3d", "MANO_NeuralAnnot")


class AnnotationError(ValueError):
    """A dataset file is missing, unreadable, or lacks a key / has a wrong value."""


def read_json(path: Path) -> Any:
    """``json.load`` with errors that name the file."""
    if not path.exists():
        raise FileNotFoundError(f"missing annotation file: {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: corrupt JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e


def require(obj: Any, key: str, path: Path, where: str = "") -> Any:
    """``obj[key]`` or an :class:`AnnotationError` naming the file, the place and the key."""
    try:
        return obj[key]
    except (KeyError, TypeError, IndexError):
        raise AnnotationError(f"{path}: missing key {key!r}{' in ' + where if where else ''}") from None


def annotation_paths(root: Path, split: str, subset: str | None = None) -> dict[str, Path]:
    """Locate the split's annotation files: v1.0 ``annotations/<split>/`` or the v0.0
    subset folders ``annotations/{all,human_annot,machine_annot}/``.

    Returns:
        ``{"data", "camera", "joint_3d", "MANO_NeuralAnnot" (may not exist), "extra" (may
        not exist), "skeleton"}`` paths.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    ann = Path(root) / "annotations"
    if not ann.is_dir():
        raise FileNotFoundError(f"no annotations folder: expected {ann} (InterHand2.6M layout, docs/data.md)")
    candidates = [ann / split] if subset is None else []
    candidates += [ann / s for s in ((subset,) if subset else SUBSETS)]
    for folder in candidates:
        if (folder / f"InterHand2.6M_{split}_data.json").exists():
            out = {k: folder / f"InterHand2.6M_{split}_{k}.json" for k in KINDS}
            out["extra"] = folder / f"handflow_{split}_extra.json"
            out["skeleton"] = ann / "skeleton.txt"
            return out
    raise FileNotFoundError(
        f"no InterHand2.6M_{split}_data.json under {ann}/{split}/ or the v0.0 subset folders "
        f"{', '.join(str(ann / s) for s in SUBSETS)}"
    )


def check_joint_list(values: Any, path: Path, where: str) -> None:
    """A 42-entry list (world_coord or joint_valid)."""
    if not isinstance(values, list) or len(values) != NUM_JOINTS:
        raise AnnotationError(f"{path}: {where} must hold {NUM_JOINTS} entries, got {type(values).__name__} of length {len(values) if isinstance(values, list) else '?'}")
