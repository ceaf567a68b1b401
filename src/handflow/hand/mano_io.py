"""Reading the official MANO files without chumpy and without importing scipy.

The released ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` are Python-2 pickles that name
``chumpy.ch.Ch``, ``chumpy.reordering.Select`` and ``scipy.sparse.csc.csc_matrix``
(``reference/formats.md`` section 3). :class:`RestrictedUnpickler` resolves **only** an
explicit allow-list of classes, maps the chumpy and scipy ones to inert stand-ins that
merely store their pickled state, and refuses everything else with
:class:`ManoFormatError` *before* anything is constructed, so a malicious pickle cannot run
code. The stand-ins are then turned into plain numpy arrays, each only after its state has
been checked against the size the key must have (keys present, index ranges, sparse
shapes), so an altered file can neither raise a bare ``KeyError``/``IndexError`` nor make
the loader allocate gigabytes.

Accepted inputs: the original pkl, chumpy-free pkls (plain ndarrays, dense or sparse
``J_regressor``), and ``.npz`` files with the same keys.
"""

from __future__ import annotations

import builtins
import copyreg
import importlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from handflow.errors import HandflowError

__all__ = ["ManoFormatError", "RestrictedUnpickler", "load_mano_arrays", "MANO_SHAPES", "ALLOWED_CLASSES", "MAX_ELEMENTS"]

#: the fix named by the messages about a damaged file
REDOWNLOAD = "re-download the MANO files from https://mano.is.tue.mpg.de"
#: largest array a stand-in may be expanded into (80 MB of float64); MANO's largest has 315k
MAX_ELEMENTS = 10_000_000


class ManoFormatError(HandflowError, ValueError):
    """A MANO file is missing keys, has wrong shapes, or names a class we refuse to load."""


class _Stub:
    """Stand-in for a pickled foreign object: keeps its state, runs no code."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class ChStub(_Stub):
    """``chumpy.ch.Ch``: the value is ``state['x']``."""


class SelectStub(_Stub):
    """``chumpy.reordering.Select``: value ``a.x.ravel()[idxs].reshape(preferred_shape)``."""


class CscStub(_Stub):
    """``scipy.sparse.csc_matrix``: dense form rebuilt from data/indices/indptr."""


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()`` as protocol-2 pickles write an empty buffer (e.g. the data of an empty
    array); any argument (``bytes(10**12)`` would allocate a terabyte) is refused."""
    if args:
        raise ManoFormatError("refusing bytes(...) with arguments in a MANO file: it has been tampered with")
    return b""


def _latin1_encode(text: Any, encoding: str = "latin1", *rest: Any) -> bytes:
    """``_codecs.encode(str, 'latin1')``, the way protocol-2 pickles store array data; other
    codecs are refused."""
    name = encoding.replace("-", "").replace("_", "").lower() if isinstance(encoding, str) else None
    if not isinstance(text, str) or name not in ("latin1", "iso88591") or rest:
        raise ManoFormatError(f"refusing _codecs.encode with encoding {encoding!r} in a MANO file: it has been tampered with")
    return text.encode("latin1")


_NUMPY_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
_STUBS: dict[tuple[str, str], type] = {
    ("chumpy.ch", "Ch"): ChStub,
    ("chumpy.reordering", "Select"): SelectStub,
    ("scipy.sparse.csc", "csc_matrix"): CscStub,
    ("scipy.sparse._csc", "csc_matrix"): CscStub,
}
_BUILTINS_ALLOWED = {("builtins", "set"), ("builtins", "object"), ("copyreg", "_reconstructor")}
#: names resolved to a checked replacement instead of the real callable
_SAFE_CALLS: dict[tuple[str, str], Any] = {("builtins", "bytes"): _empty_bytes, ("_codecs", "encode"): _latin1_encode}
#: Python-2 module names as they appear in the released (Python-2) files
_PY2_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
#: every (module, name) a MANO file may reference
ALLOWED_CLASSES: frozenset[tuple[str, str]] = frozenset(_NUMPY_ALLOWED | set(_STUBS) | _BUILTINS_ALLOWED | set(_SAFE_CALLS))

MANO_SHAPES: dict[str, tuple[int | None, ...]] = {
    "v_template": (778, 3),
    "f": (1538, 3),
    "shapedirs": (778, 3, 10),
    "posedirs": (778, 3, 135),
    "J_regressor": (16, 778),
    "weights": (778, 16),
    "kintree_table": (2, 16),
    "hands_components": (45, 45),
    "hands_mean": (45,),
    "hands_coeffs": (None, 45),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler resolving only :data:`ALLOWED_CLASSES` (Python-2 names are mapped first)."""

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_NAMES.get(module, module)
        key = (module, name)
        if key in _STUBS:
            return _STUBS[key]
        if key in _SAFE_CALLS:
            return _SAFE_CALLS[key]
        if key in _NUMPY_ALLOWED:
            mod = "numpy._core.multiarray" if module.endswith("multiarray") and hasattr(np, "_core") else module
            return getattr(importlib.import_module(mod), name)
        if key in _BUILTINS_ALLOWED:
            return getattr({"builtins": builtins, "copyreg": copyreg}[module], name)
        raise ManoFormatError(
            f"refusing to load class {module}.{name} from a MANO file: only the classes a MANO "
            "model file needs (chumpy Ch/Select, scipy csc_matrix, numpy arrays) are allowed, "
            "so this file is not a MANO model or has been tampered with"
        )


class _Expand:
    """Checked expansion of one key's stand-ins into a numpy array (errors name file and key)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self.expected = MANO_SHAPES.get(key)

    def error(self, what: str) -> ManoFormatError:
        """One-line error naming the file, the key and the fix."""
        return ManoFormatError(f"{self.path}: {self.key}: {what}; the file is damaged or altered: {REDOWNLOAD}")

    def state(self, v: _Stub, kind: str, keys: tuple[str, ...]) -> dict[str, Any]:
        """The stand-in's pickled state, which must be a dict holding ``keys``."""
        s = getattr(v, "state", None)
        if not isinstance(s, dict):
            raise self.error(f"{kind} object without its state")
        missing = [k for k in keys if k not in s]
        if missing:
            raise self.error(f"{kind} object lacks {missing[0]!r}")
        return s

    def numbers(self, v: Any, what: str, integer: bool = False, flat: bool = False) -> np.ndarray:
        """``v`` as a numeric (or integer) array, optionally 1-D."""
        try:
            arr = np.asarray(v)
        except (TypeError, ValueError) as e:
            raise self.error(f"{what} is not an array ({e})") from None
        kinds = "biu" if integer else "biuf"
        if arr.dtype.kind not in kinds or (flat and arr.ndim != 1):
            raise self.error(f"{what} must be {'a 1-D' if flat else 'an'} array of {'integers' if integer else 'numbers'}, "
                             f"got dtype {arr.dtype} shape {arr.shape}")
        return arr

    def shape(self, shape: Any, what: str) -> tuple[int, ...]:
        """A declared shape: non-negative ints, matching :data:`MANO_SHAPES` (``None`` = any)
        and at most :data:`MAX_ELEMENTS` elements, checked before anything is allocated."""
        try:
            out = tuple(int(n) for n in shape)
            ok = all(isinstance(n, (int, np.integer)) and n >= 0 for n in shape)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise self.error(f"{what} {shape!r} is not a shape")
        exp = self.expected
        if exp is not None and (len(out) != len(exp) or any(e is not None and e != n for e, n in zip(exp, out))):
            raise self.error(f"{what} {out} differs from MANO's {exp} (None = any)")
        if int(np.prod(out, dtype=np.float64)) > MAX_ELEMENTS:
            raise self.error(f"{what} {out} is larger than any MANO array")
        return out

    def __call__(self, v: Any) -> Any:
        """Stand-ins -> numpy arrays; other values unchanged."""
        if isinstance(v, ChStub):
            return self.numbers(self.state(v, "chumpy Ch", ("x",))["x"], "chumpy Ch 'x'")
        if isinstance(v, SelectStub):
            return self.select(self.state(v, "chumpy Select", ("a", "idxs", "preferred_shape")))
        if isinstance(v, CscStub):
            return self.csc(v)
        return v

    def select(self, s: dict[str, Any]) -> np.ndarray:
        """``a.x.ravel()[idxs].reshape(preferred_shape)`` with ``idxs`` inside ``a``."""
        shape = self.shape(s["preferred_shape"], "chumpy Select 'preferred_shape'")
        if isinstance(s["a"], (SelectStub, CscStub)):  # chumpy nests a Ch; anything else could even be a cycle
            raise self.error(f"chumpy Select 'a' is a {type(s['a']).__name__}, expected a chumpy Ch or an array")
        a = self.numbers(self(s["a"]), "chumpy Select 'a'").ravel()
        idxs = self.numbers(s["idxs"], "chumpy Select 'idxs'", integer=True, flat=True)
        if len(idxs) != int(np.prod(shape)):
            raise self.error(f"chumpy Select 'idxs' holds {len(idxs)} indices for 'preferred_shape' {shape}")
        if len(idxs) and (idxs.min() < 0 or idxs.max() >= a.size):
            raise self.error(f"chumpy Select 'idxs' range {idxs.min()}..{idxs.max()} is outside 'a' (size {a.size})")
        return a[idxs].reshape(shape)

    def csc(self, v: CscStub) -> np.ndarray:
        """Dense form of a ``csc_matrix``: column j holds ``data[indptr[j]:indptr[j+1]]`` in rows
        ``indices[...]`` (duplicates add up, as in scipy), every index checked first."""
        s = self.state(v, "scipy csc_matrix", ("data", "indices", "indptr"))
        if "_shape" not in s and "shape" not in s:
            raise self.error("scipy csc_matrix lacks '_shape'")
        rows, cols = self.shape(s.get("_shape", s.get("shape")), "scipy csc_matrix shape")
        data = self.numbers(s["data"], "scipy csc_matrix 'data'", flat=True)
        indices = self.numbers(s["indices"], "scipy csc_matrix 'indices'", integer=True, flat=True)
        indptr = self.numbers(s["indptr"], "scipy csc_matrix 'indptr'", integer=True, flat=True).astype(np.int64)
        if len(indptr) != cols + 1 or indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != len(indices):
            raise self.error(f"scipy csc_matrix 'indptr' does not describe {cols} columns of {len(indices)} entries")
        if len(data) != len(indices):
            raise self.error(f"scipy csc_matrix has {len(data)} 'data' values for {len(indices)} 'indices'")
        if len(indices) and (indices.min() < 0 or indices.max() >= rows):
            raise self.error(f"scipy csc_matrix row 'indices' range {indices.min()}..{indices.max()} is outside 0..{rows - 1}")
        dense = np.zeros((rows, cols), dtype=data.dtype)
        np.add.at(dense, (indices, np.repeat(np.arange(cols), np.diff(indptr))), data)
        return dense


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(
            f"MANO file not found: {path}. Expected MANO_RIGHT.pkl / MANO_LEFT.pkl (or .npz) "
            "from https://mano.is.tue.mpg.de (not shipped with handflow: its licence forbids it)"
        )
    raw = path.read_bytes()
    if path.suffix == ".npz" or raw[:2] == b"PK":
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, ValueError, OSError) as e:
            raise ManoFormatError(f"{path}: not a readable .npz file ({e})") from e
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except ManoFormatError as e:
        raise ManoFormatError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, KeyError) as e:
        raise ManoFormatError(f"{path}: not a readable MANO pickle (truncated or corrupt?): {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise ManoFormatError(f"{path}: expected a dict of MANO arrays, found {type(obj).__name__}")
    return obj


def load_mano_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Load one MANO file into float64/int64 numpy arrays with validated shapes.

    Args:
        path: ``MANO_RIGHT.pkl``, ``MANO_LEFT.pkl``, a chumpy-free variant or an ``.npz``.

    Returns:
        dict with the keys of :data:`MANO_SHAPES` (``f`` and ``kintree_table`` as int64).

    Raises:
        FileNotFoundError: no such file.
        ManoFormatError: refused class, unreadable file, missing key or wrong shape.
    """
    path = Path(path)
    obj = _read(path)
    nverts = None
    if "v_template" in obj:  # first, so that a body model is named as such
        expand = _Expand(path, "v_template")
        vt = expand.numbers(expand(obj["v_template"]), "the value")
        nverts = vt.shape[0] if vt.ndim else None
    if nverts is not None and nverts != MANO_SHAPES["v_template"][0]:
        raise ManoFormatError(
            f"{path}: v_template has {nverts} vertices, MANO has {MANO_SHAPES['v_template'][0]}"
            + (" (this is an SMPL/SMPL-H body model, not a MANO hand)" if nverts == 6890 else "")
        )
    missing = [k for k in MANO_SHAPES if k not in obj]
    if missing:
        raise ManoFormatError(f"{path}: not a MANO model file, missing keys {missing}; found {sorted(obj)}")
    out: dict[str, np.ndarray] = {}
    for key, shape in MANO_SHAPES.items():
        expand = _Expand(path, key)
        arr = expand.numbers(expand(obj[key]), "the value")
        if arr.size == 0 and None in shape:  # an empty table (hands_coeffs of some releases): legitimate
            arr = np.zeros(tuple(0 if n is None else n for n in shape))
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            raise ManoFormatError(f"{path}: {key} has shape {arr.shape}, expected {shape} (None = any)")
        integer = key in ("f", "kintree_table")
        arr = arr.astype(np.int64 if integer else np.float64)
        if integer:
            arr[arr == np.iinfo(np.uint32).max] = -1  # the root's "parent" is uint32 -1
        else:
            if not np.isfinite(arr).all():
                raise ManoFormatError(f"{path}: {key} contains NaN or inf")
        out[key] = arr
    nv = MANO_SHAPES["v_template"][0]
    if out["f"].min() < 0 or out["f"].max() >= nv:
        raise _Expand(path, "f").error(f"vertex indices {out['f'].min()}..{out['f'].max()} are outside 0..{nv - 1}")
    return out
