"""Parsing and validation of InterHand2.6M annotation files (``reference/formats.md`` s. 1).

Every error names the file and the key, so a user can fix the input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from handflow.constants import IH42_PARENTS, NUM_JOINTS
from handflow.errors import HandflowError

__all__ = [
    "AnnotationError", "read_json", "annotation_paths", "SPLITS", "SUBSETS", "require", "JsonStream", "read_skeleton",
    "read_extra", "as_flag", "check_joint_list", "joint_array", "EXTRA_FORMAT_VERSION", "HAND_MODEL_NAMES", "as_int",
    "key_int", "check_unique",
]

SPLITS = ("train", "val", "test")
#: v0.0 subset folders, in order of preference
SUBSETS = ("all", "human_annot", "machine_annot")
KINDS = ("data", "camera", "joint_3d", "MANO_NeuralAnnot")


class AnnotationError(HandflowError, ValueError):
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


def as_int(v: Any, path: Path, where: str, positive: bool = False) -> int:
    """A JSON integer (an integral float such as ``334.0`` is accepted; strings and booleans
    are not), or an :class:`AnnotationError` naming the file and the entry."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or (positive and v <= 0):
        kind = "a positive integer" if positive else "an integer"
        raise AnnotationError(f"{path}: {where} must be {kind}, got {type(v).__name__} {v!r}: write it as a JSON number")
    return v


def key_int(key: str, path: Path, where: str) -> int:
    """An object key that must spell an integer (capture, frame_idx), or an
    :class:`AnnotationError` naming the file and the place."""
    try:
        return int(key)
    except ValueError:
        raise AnnotationError(f"{path}: {where}: key {key!r} must be an integer (a capture or frame number)") from None


def check_unique(ids: np.ndarray, path: Path, key: str, label: str) -> None:
    """Raise an :class:`AnnotationError` naming the file, the first repeated ``label`` id
    and the entries of list ``key`` that share it, when ``ids`` (in file order) holds a
    value twice. O(n log n)."""
    if len(ids) < 2:
        return
    s = np.sort(ids)
    dup = np.nonzero(s[1:] == s[:-1])[0]
    if len(dup):
        first = int(s[dup[0]])
        entries = ", ".join(f"{key}[{i}]" for i in np.nonzero(ids == first)[0][:4].tolist())
        raise AnnotationError(f"{path}: {label} id {first} is shared by {entries} ({len(dup)} repeated id(s) in all): "
                              "ids must be unique, renumber or remove the duplicates")


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
        length = len(values) if isinstance(values, list) else "?"
        raise AnnotationError(f"{path}: {where} must hold {NUM_JOINTS} entries, got {type(values).__name__} of length {length}")


def read_skeleton(path: Path) -> tuple[list[str], list[int]]:
    """Parse ``annotations/skeleton.txt``: a ``#`` comment line, then 42 lines
    ``name id parent_id`` (single spaces). Returns names and parents in id order.

    Raises:
        FileNotFoundError: the file is missing (names the expected path).
        AnnotationError: a malformed line, missing ids, or parents that differ from
            :data:`handflow.constants.IH42_PARENTS` (the reader assumes the InterHand order).
    """
    if not path.exists():
        raise FileNotFoundError(f"missing skeleton file: {path}")
    names: dict[int, str] = {}
    parents: dict[int, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3:
            raise AnnotationError(f"{path}: line {n} must be 'name id parent_id', got {line!r}")
        try:
            jid, par = int(fields[1]), int(fields[2])
        except ValueError:
            raise AnnotationError(f"{path}: line {n}: id and parent_id must be integers, got {line!r}") from None
        names[jid], parents[jid] = fields[0], par
    if sorted(names) != list(range(NUM_JOINTS)):
        raise AnnotationError(f"{path}: expected joint ids 0..{NUM_JOINTS - 1}, got {len(names)} ids")
    par_list = [parents[j] for j in range(NUM_JOINTS)]
    if tuple(par_list) != tuple(IH42_PARENTS):
        bad = [j for j in range(NUM_JOINTS) if par_list[j] != IH42_PARENTS[j]]
        raise AnnotationError(f"{path}: parents differ from the InterHand2.6M joint order at ids {bad}; "
                              "this reader expects the official 42-joint order (reference/formats.md s. 1.6)")
    return [names[j] for j in range(NUM_JOINTS)], par_list


def read_extra(path: Path) -> dict[str, Any]:
    """Read and validate ``handflow_<split>_extra.json`` (information the real dataset lacks):
    ``{"format_version": 1, "hand_model": "openhand" | "mano", "visibility": {"<image_id>":
    [42 ints 0/1]}}``. Returns ``{}`` when the file does not exist (real data)."""
    if not path.exists():
        return {}
    extra = read_json(path)
    if not isinstance(extra, dict):
        raise AnnotationError(f"{path}: expected a JSON object")
    version = require(extra, "format_version", path)
    if version != EXTRA_FORMAT_VERSION:
        raise AnnotationError(f"{path}: format_version {version!r} is not supported (expected {EXTRA_FORMAT_VERSION})")
    vis = extra.get("visibility", {})
    if not isinstance(vis, dict):
        raise AnnotationError(f"{path}: 'visibility' must map image ids to 42 ints 0/1")
    model = extra.get("hand_model")
    if model is not None and model not in HAND_MODEL_NAMES:
        raise AnnotationError(f"{path}: hand_model {model!r} is unknown (expected one of {HAND_MODEL_NAMES})")
    return extra


#: version of ``handflow_<split>_extra.json`` this reader understands
EXTRA_FORMAT_VERSION = 1
HAND_MODEL_NAMES = ("openhand", "mano")


def as_flag(v: Any, path: Path, where: str) -> bool:
    """A validity entry: ``1``/``0``, ``true``/``false`` or either wrapped in a 1-element list."""
    if isinstance(v, list):
        if len(v) != 1:
            raise AnnotationError(f"{path}: {where}: expected a 1-element list, got {v!r}")
        v = v[0]
    if v in (0, 1) or isinstance(v, bool):
        return bool(v)
    raise AnnotationError(f"{path}: {where}: expected 0/1 or true/false, got {v!r}")


# --------------------------------------------------------------------------- streaming
#: characters that can continue a JSON number (a complete value is never followed by one)
_NUMBER_CONTINUATION = frozenset("0123456789.eE+-")


class JsonStream:
    """Incremental reader of one large JSON file: walk objects/arrays level by level and
    decode only the small leaves, so peak memory is one leaf plus a 1 MiB buffer instead of
    the whole document (the real train files are GBs; ``json.load`` would need ~10x that).

    Usage: ``for key in s.object_keys(): ...`` then consume that key's value with
    :meth:`value`, :meth:`object_keys`, :meth:`array_items` or :meth:`skip`.
    """

    CHUNK = 1 << 20

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"missing annotation file: {path}")
        self.path = path
        self._f = open(path, encoding="utf-8")
        self._buf, self._pos, self._eof = "", 0, False
        self._dec = json.JSONDecoder()

    def __enter__(self) -> JsonStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()

    def _fill(self) -> None:
        chunk = self._f.read(self.CHUNK)
        if not chunk:
            self._eof = True
        self._buf = self._buf[self._pos :] + chunk
        self._pos = 0

    def _error(self, msg: str) -> AnnotationError:
        return AnnotationError(f"{self.path}: corrupt JSON ({msg} near character {self._f.tell() - len(self._buf) + self._pos})")

    def peek(self) -> str:
        """Next non-whitespace character ('' at the end of the file)."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\r\n":
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if self._eof:
                return ""
            self._fill()

    def _expect(self, chars: str) -> str:
        c = self.peek()
        if c == "" or c not in chars:
            raise self._error(f"expected one of {chars!r}, found {c or 'end of file'!r}")
        self._pos += 1
        return c

    def value(self) -> Any:
        """Decode the next complete value."""
        self.peek()
        while True:
            try:
                v, end = self._dec.raw_decode(self._buf, self._pos)
                # a number cut by the buffer end ("12" of "123", "0." of "0.5") is not complete
                if self._eof or (end < len(self._buf) and self._buf[end] not in _NUMBER_CONTINUATION):
                    self._pos = end
                    return v
            except json.JSONDecodeError as e:
                if self._eof:
                    raise self._error(e.msg) from None
            self._fill()

    def skip(self) -> None:
        """Skip the next value (descending, so a huge unused value costs no memory)."""
        c = self.peek()
        if c == "{":
            for _ in self.object_keys():
                self.skip()
        elif c == "[":
            for _ in self.array_items():
                self.skip()
        else:
            self.value()

    def object_keys(self) -> Iterator[str]:
        """Iterate the keys of the next object; the caller consumes each key's value."""
        self._expect("{")
        if self.peek() == "}":
            self._pos += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise self._error("object key is not a string")
            self._expect(":")
            yield key
            if self._expect(",}") == "}":
                return

    def array_items(self) -> Iterator[int]:
        """Iterate the positions of the next array; the caller consumes each element."""
        self._expect("[")
        if self.peek() == "]":
            self._pos += 1
            return
        i = 0
        while True:
            yield i
            i += 1
            if self._expect(",]") == "]":
                return

    def is_null(self) -> bool:
        """True (and consumed) when the next value is ``null``."""
        if self.peek() == "n":
            if self.value() is not None:
                raise self._error("expected null")
            return True
        return False


def joint_array(values: Any, path: Path, where: str, width: int = 3) -> np.ndarray:
    """A 42 x ``width`` list -> float32 array, or an :class:`AnnotationError` naming the place
    (nulls, strings, ragged rows). NaN is kept here; the reader rejects it on valid joints."""
    check_joint_list(values, path, where)
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise AnnotationError(f"{path}: {where}: not a {NUM_JOINTS}x{width} list of numbers ({e})") from None
    if arr.shape != (NUM_JOINTS, width):
        raise AnnotationError(f"{path}: {where}: expected shape ({NUM_JOINTS}, {width}), got {arr.shape}")
    return arr

