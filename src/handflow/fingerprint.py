"""Settings records of output folders: resume with the same settings, refuse other settings.

A command that writes a resumable output (a dataset, parts, chunks) stores the settings that
define its bytes, plus their fingerprint, in a small JSON record *before* writing anything
else. A rerun compares: the same settings resume; other settings are refused with one line
that names what differs and the fix, instead of mixing two outputs in one folder:

>>> import tempfile
>>> from pathlib import Path
>>> rec = Path(tempfile.mkdtemp()) / ".settings.json"
>>> check_or_record(rec, {"seed": 1, "size": 96}, what="out", fix="use another --out")
False
>>> check_or_record(rec, {"seed": 1, "size": 96}, what="out", fix="use another --out")
True
>>> check_or_record(rec, {"seed": 2, "size": 128}, what="out", fix="use another --out")
Traceback (most recent call last):
...
handflow.errors.SettingsMismatch: out was written with seed=1, size=96 (now 2, 128): use another --out

The record is ``{"settings": {...}, "fingerprint": "<16 hex>"}``, created exclusively (a
hard link of a complete temporary file), so processes that start together on one folder
agree on a single record. :func:`remove_outputs` deletes exactly a list of files (and the
``.<name>.tmp-*`` files of an interrupted atomic write of them), for ``--overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from handflow.errors import CorruptFileError, SettingsMismatch

__all__ = [
    "settings_fingerprint",
    "settings_diff",
    "mismatch_message",
    "refuse_if_different",
    "recorded_settings",
    "record_settings",
    "check_or_record",
    "check_stored",
    "matches_stored",
    "stored_settings",
    "remove_outputs",
]

_UNSET = object()
#: the fix of a folder that holds outputs but no record
UNRECORDED_FIX = ("written by an older handflow or by something else, so it cannot be checked or safely replaced: "
                  "move those files away, or use another output folder")


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``settings`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (old value, new value)}`` of the keys that differ (a missing key is ``_UNSET``);
    keys in the order of ``new``, then the keys only ``old`` has."""
    keys = list(new) + [k for k in old if k not in new]
    return {k: (old.get(k, _UNSET), new.get(k, _UNSET)) for k in keys if old.get(k, _UNSET) != new.get(k, _UNSET)}


def _show(value: Any) -> str:
    """A setting's value as the user would type it (lists comma-separated)."""
    if value is _UNSET:
        return "unset"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def mismatch_message(what: str, diff: Mapping[str, tuple[Any, Any]], fix: str) -> str:
    """One line: ``"<what> was written with a=1, b=2 (now 3, 4): <fix>"``."""
    old = ", ".join(f"{k}={_show(o)}" for k, (o, _) in diff.items())
    new = ", ".join(_show(n) for _, n in diff.values())
    return f"{what} was written with {old} (now {new}): {fix}"


def refuse_if_different(old: Mapping[str, Any], new: Mapping[str, Any], what: str, fix: str) -> None:
    """Raise :class:`SettingsMismatch` naming the differing settings, if any."""
    diff = settings_diff(old, new)
    if diff:
        raise SettingsMismatch(mismatch_message(what, diff, fix))


def _read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path`` (``None`` if there is none); checks its shape and fingerprint."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"settings record {path} is unreadable ({e}): move it away, or use another output "
                               "folder") from None
    if (not isinstance(rec, dict) or not isinstance(rec.get("settings"), dict)
            or rec.get("fingerprint") != settings_fingerprint(rec["settings"])):
        raise CorruptFileError(f"settings record {path} is not a handflow settings record (or was edited): "
                               "move it away, or use another output folder")
    return rec


def recorded_settings(path: Path, outputs: Iterable[Path] = (), what: str | None = None) -> dict[str, Any] | None:
    """The settings recorded at ``path``, or ``None`` if there is no record and none of the
    ``outputs`` (files or folders the command writes) exists.

    Raises:
        SettingsMismatch: an output exists but there is no record (unknown content).
        CorruptFileError: the record is unreadable.
    """
    present = [Path(p) for p in outputs if Path(p).exists()]  # before reading: a record precedes its outputs
    rec = _read_record(path)
    if rec is not None:
        return rec["settings"]
    if present:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in present)
        raise SettingsMismatch(f"{what or Path(path).parent} holds {names} but no settings record ({UNRECORDED_FIX})")
    return None


def record_settings(path: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Create the record of ``settings`` at ``path`` unless one exists; returns the settings
    of the record now on disk (another process may have created it first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"settings": dict(settings), "fingerprint": settings_fingerprint(settings)}
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(body, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # exclusive and atomic: fails if a record exists
    except FileExistsError:
        pass
    except OSError:  # pragma: no cover - file systems without hard links
        if not path.exists():
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    rec = _read_record(path)
    assert rec is not None
    return rec["settings"]


def check_or_record(path: Path, settings: Mapping[str, Any], *, what: str, fix: str,
                    outputs: Iterable[Path] = (), record: bool = True, found: Mapping[str, Any] | None = None,
                    expected: Mapping[str, Any] | None = None) -> bool:
    """Resume if the record at ``path`` holds ``settings``, refuse if it holds others, record
    them if there is no record (and none of ``outputs`` exists).

    Args:
        path: the record file.
        settings: JSON-serializable settings that define the output's bytes (not worker
            counts, devices or progress flags).
        what: the output, named in messages (e.g. its folder).
        fix: what the user can do, ending the mismatch message.
        outputs: files or folders the command writes; present without a record, they are
            refused (unknown content).
        record: ``False``: only check; a folder without a record (from an older handflow) is
            accepted as it is, whatever it holds.
        found, expected: facts read from the outputs on disk (e.g. ``{"shards": 4}``) and
            what this run expects of them; compared along with the settings, never recorded.

    Returns:
        True if a record with the same settings existed (resume), False if there was none.

    Raises:
        SettingsMismatch: other settings, or outputs without a record.
    """
    old = recorded_settings(path, outputs if record else (), what)
    existed = old is not None
    if old is None:
        if not record:
            return False
        old = record_settings(path, settings)
    refuse_if_different({**old, **(found or {})}, {**settings, **(expected or {})}, what, fix)
    return existed


def matches_stored(meta: Mapping[str, Any] | None, settings: Mapping[str, Any]) -> bool:
    """``True`` if ``meta`` (an output's own metadata, :func:`stored_settings`) records
    ``settings``: its fingerprint is theirs, or, in metadata written without a fingerprint, its
    ``config`` equals them. ``False`` for no ``meta`` and for other settings."""
    if meta is None:
        return False
    if meta.get("fingerprint") is not None:
        return meta["fingerprint"] == settings_fingerprint(settings)
    return meta.get("config") == dict(settings)


def check_stored(meta: Mapping[str, Any] | None, settings: Mapping[str, Any], *, what: str, fix: str,
                 expected: Mapping[str, Any] | None = None) -> bool:
    """The settings an output stores in its own metadata (a part, a shard file): ``True`` if
    ``meta`` records ``settings`` (done: skip it), ``False`` if there is no ``meta`` (to do).

    ``meta`` holds ``{"config": settings, "fingerprint": ...}`` as :func:`stored_settings`
    writes it (:func:`matches_stored`). ``expected``: other entries of ``meta`` that must hold
    these values for the output to count as done (e.g. ``{"num_images": 512}``, a fact of
    the input rather than a setting).

    Raises:
        SettingsMismatch: ``meta`` records other settings (naming them, when it stores them,
            and the two fingerprints) or other ``expected`` values.
    """
    if meta is None:
        return False
    diff: dict[str, tuple[Any, Any]] = {}
    if not matches_stored(meta, settings):
        old = meta.get("config")
        diff.update(settings_diff(old, settings) if isinstance(old, Mapping) else {})
        diff["fingerprint"] = (meta.get("fingerprint", _UNSET), settings_fingerprint(settings))
    diff.update({k: (meta.get(k, _UNSET), v) for k, v in (expected or {}).items() if meta.get(k, _UNSET) != v})
    if diff:
        raise SettingsMismatch(mismatch_message(what, diff, fix))
    return True


def stored_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``{"config": settings, "fingerprint": ...}``: what an output stores in its own metadata
    for :func:`check_stored`."""
    return {"config": dict(settings), "fingerprint": settings_fingerprint(settings)}


def remove_outputs(folder: Path, files: Iterable[Path]) -> int:
    """Delete exactly ``files`` (inside ``folder``) that exist, the ``.<name>.tmp-*`` files of
    their interrupted atomic writes, and the folders that this leaves empty between them and
    ``folder`` (``folder`` itself stays). Nothing else is touched. Returns the files deleted."""
    folder = Path(os.path.abspath(folder))
    by_dir: dict[Path, set[str]] = {}
    for f in files:
        f = Path(os.path.abspath(f))
        if not f.parent.is_relative_to(folder):
            raise ValueError(f"{f} is outside {folder}: refusing to delete it")
        by_dir.setdefault(f.parent, set()).add(f.name)
    n = 0
    for d, names in by_dir.items():
        if not d.is_dir():
            continue
        for p in d.iterdir():
            tmp_of = p.name[1:].split(".tmp-")[0] if p.name.startswith(".") and ".tmp-" in p.name else None
            if (p.name in names or tmp_of in names) and (p.is_file() or p.is_symlink()):
                p.unlink()
                n += 1
    for d in sorted(by_dir, key=lambda p: len(p.parts), reverse=True):
        while d != folder and d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent
    return n
