r"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every write goes to a hidden temporary file in the destination's folder,
``.<name>.tmp-<pid>``, which is then renamed over the destination with :func:`os.replace`
(atomic on POSIX and Windows within one file system). If the write raises, the temporary
file is removed and the destination is untouched; a killed process leaves at most a
``.<name>.tmp-*`` file, which ``--overwrite`` cleans (:func:`handflow.fingerprint.remove_outputs`)
and which no reader lists (it starts with a dot and does not end in the destination's suffix).

``fsync=True`` also flushes the file and the folder entry to disk before returning (durable
across a power cut, at a few milliseconds per file); the default only guarantees atomicity.

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handflow.atomic import atomic_path, read_npz, save_npz, write_json
    >>> out = Path(tempfile.mkdtemp()) / "run.json"
    >>> write_json(out, {"step": 3})
    >>> out.read_text()
    '{\n "step": 3\n}'
    >>> with atomic_path(out) as tmp:       # any writer that takes a path
    ...     _ = tmp.write_text("{}")
    >>> out.read_text(), sorted(p.name for p in out.parent.iterdir())
    ('{}', ['run.json'])
    >>> import numpy as np
    >>> save_npz(out.with_name("a.npz"), {"x": np.arange(3)})
    >>> read_npz(out.with_name("a.npz"))["x"]
    array([0, 1, 2])
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_path", "atomic_create", "atomic_dir", "temp_path", "write_bytes", "write_text", "write_json", "save_npz",
           "read_npz"]


def temp_path(path: str | Path) -> Path:
    """The temporary name an atomic write of ``path`` uses: ``.<name>.tmp-<pid>`` beside it."""
    path = Path(path)
    return path.parent / f".{path.name}.tmp-{os.getpid()}"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:  # make the rename itself durable
        _fsync_file(folder)
    except OSError:  # pragma: no cover - platforms without directory fsync (Windows)
        pass


@contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a normal exit rename it over ``path``.

    The caller writes the whole file at the yielded path (with any writer that takes a path:
    ``torch.save``, ``Trainer.save_checkpoint``, ``os.link``...). The parent folder is created.
    If the block raises (or the rename fails), the temporary file is removed and ``path`` keeps
    its old content.

    Args:
        path: the destination.
        fsync: flush the written file and the folder entry to disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
        # rename() between two hard links of one file does nothing: drop the extra name
        tmp.unlink(missing_ok=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


@contextmanager
def atomic_create(path: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_path`, but never replaces: the file written at the yielded path appears
    at ``path`` whole and only if no file is there yet (``os.link`` fails on an existing name), so
    two processes racing to create the same file both see exactly one of them, never a mix. The
    temporary file is always removed; a write that raises leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # created by someone else first: theirs stays
        except OSError:  # pragma: no cover - file systems without hard links: atomic, not exclusive
            if not path.exists():
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on a normal exit it replaces ``path``.

    A reader sees the old folder, briefly none (the old one is removed just before the rename),
    or the complete new one, never a partial one. If the block raises, the temporary folder is
    removed and ``path`` is untouched. ``fsync`` flushes every file written and the parent entry.
    """
    path = Path(path)
    tmp = temp_path(path)
    if tmp.exists():  # left by a killed process that had this pid
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if fsync:
            for f in tmp.rglob("*"):
                if f.is_file():
                    _fsync_file(f)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str, *, fsync: bool = False, encoding: str = "utf-8", newline: str | None = None) -> None:
    """Write ``text`` to ``path`` atomically (``newline`` as in :func:`open`: ``""`` keeps ``\\r\\n`` of csv rows)."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "w", encoding=encoding, newline=newline) as f:
        f.write(text)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 1, fsync: bool = False) -> None:
    """Write ``json.dumps(obj, indent=indent)`` to ``path`` atomically (no trailing newline)."""
    write_text(path, json.dumps(obj, indent=indent), fsync=fsync)


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray], *, compressed: bool = False, fsync: bool = False) -> None:
    """Write ``arrays`` as an ``.npz`` archive at exactly ``path`` (NumPy appends no suffix), atomically."""
    save = np.savez_compressed if compressed else np.savez
    named: dict[str, Any] = dict(arrays)  # Any: numpy's stubs would match a key against savez's own keywords
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as f:
        save(f, **named)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` archive, loaded into memory (no pickled objects)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
