"""Safe reading of torch files that a user passes (checkpoints, weights, feature caches).

Every such file is read with ``torch.load(..., weights_only=True)``: the restricted unpickler
builds tensors, containers and plain Python values only, so a planted ``.ckpt`` whose pickle
calls ``os.system`` is refused before anything runs. handflow's own checkpoints (the full
``last.ckpt`` with optimizer, loop, callback and Timer state, and the weights-only periodic
snapshots) hold nothing else and load this way (``tests/test_safe_loading.py``).

Failures become one-line :class:`~handflow.errors.HandflowError` subclasses naming the file:

* :class:`~handflow.errors.MissingFileError` (also a ``FileNotFoundError``): no such file;
* :class:`~handflow.errors.UnsafeFileError`: the file needs objects beyond tensors and plain
  data (the offending global is named, e.g. ``posix.system``);
* :class:`~handflow.errors.CorruptFileError`: empty, truncated, random bytes or another format.
"""

from __future__ import annotations

import pickle
import re
import struct
from pathlib import Path
from typing import Any

import torch

from handflow.errors import CorruptFileError, MissingFileError, UnsafeFileError

__all__ = ["load_torch_file"]

#: what torch's weights-only unpickler says when a file is refused (torch >= 2.4)
_WEIGHTS_ONLY_FAILED = "Weights only load failed"
#: the restricted unpickler's reasons that name a Python object it will not build or call (the
#: group is that object's name); anything else it refuses is malformed data, not an object
_UNSAFE_PATTERNS = (
    re.compile(r"GLOBAL ([\w.]+)"),  # "Unsupported global: GLOBAL x.y ..." and "unsupported GLOBAL x.y whose module ..."
    re.compile(r"call reduce for unrecognized function (.+?)(?: which belongs to|$)"),
    re.compile(r"(?:Can only build|Can only create new object).* but got (?:<class '([^']+)'>|(\S+))"),
    re.compile(r"``(torch\.\w+(?:\.\w+)?)`` must be imported"),
)
#: RuntimeError texts of torch's zip / legacy readers for a damaged file (others, e.g. a CUDA
#: ``map_location`` without a GPU, are not the file's fault and propagate unchanged)
_CORRUPT_RUNTIME = re.compile(r"PytorchStreamReader|inline_container|unexpected EOF|corrupt|archive", re.IGNORECASE)


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed, ANSI styling dropped), at most ``limit`` chars."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refused_object(message: str) -> str | None:
    """The object the weights-only unpickler refused, from its message; ``None`` when it refused
    malformed data (an unknown opcode, a broken stack) rather than an object."""
    for pattern in _UNSAFE_PATTERNS:
        m = pattern.search(message)
        if m:
            return next(g for g in m.groups() if g)
    return None


def _unpickler_reason(message: str) -> str:
    """The restricted unpickler's own reason inside torch's multi-paragraph refusal."""
    for line in message.splitlines():
        line = line.strip()
        if line and _WEIGHTS_ONLY_FAILED not in line and "Check the documentation" not in line \
                and "Please file an issue" not in line:
            return _one_line(line.removeprefix("WeightsUnpickler error:"), 120)
    tail = message.split("WeightsUnpickler error:")[-1]
    return _one_line(tail.split("Check the documentation")[0], 120) or "refused by the weights-only unpickler"


def load_torch_file(path: str | Path, *, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """Read ``path`` with ``torch.load(weights_only=True)``; a file can never run code.

    Args:
        path: a file written by ``torch.save`` (a handflow checkpoint, backbone weights, a
            feature-cache split).
        what: what the file should be, for the messages ("checkpoint", "feature cache", ...).
        map_location: passed to ``torch.load``.

    Returns:
        What the file holds (tensors, containers and plain Python values only).

    Raises:
        MissingFileError: no such file (also a ``FileNotFoundError``).
        UnsafeFileError: the file holds Python objects beyond tensors and plain data.
        CorruptFileError: a folder, an empty or truncated file, random bytes or another format.
    """
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"{what} not found: {p}")
    if p.is_dir():
        raise CorruptFileError(f"cannot read {what} {p}: it is a folder, not a file")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        name = _refused_object(message) if _WEIGHTS_ONLY_FAILED in message else None
        if name is not None:
            raise UnsafeFileError(
                f"refused to load {p}: it holds Python objects beyond tensors and plain data ({_one_line(name, 80)}); "
                f"handflow loads files with weights_only=True so that a file cannot run code; use a {what} written by handflow"
            ) from None
        reason = _unpickler_reason(message) if _WEIGHTS_ONLY_FAILED in message else _one_line(message)
        raise CorruptFileError(f"cannot read {what} {p} (not a torch file, or damaged: {reason})") from None
    except EOFError:
        raise CorruptFileError(f"cannot read {what} {p} (empty or truncated: it ends before its data)") from None
    except RuntimeError as e:
        if not _CORRUPT_RUNTIME.search(str(e)):
            raise
        raise CorruptFileError(f"cannot read {what} {p} (truncated or damaged: {_one_line(str(e), 160)})") from None
    except (KeyError, IndexError, ValueError, TypeError, AttributeError, AssertionError, struct.error, OverflowError) as e:
        raise CorruptFileError(f"cannot read {what} {p} (another format, or damaged: "
                               f"{type(e).__name__}: {_one_line(str(e), 120)})") from None
