"""Reading the official MANO files without chumpy and without importing scipy.

The released ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` are Python-2 pickles that name
``chumpy.ch.Ch``, ``chumpy.reordering.Select`` and ``scipy.sparse.csc.csc_matrix``
(``reference/formats.md`` section 3). :class:`RestrictedUnpickler` resolves **only** an
explicit allow-list of classes, maps the chumpy and scipy ones to inert stand-ins that
merely store their pickled state, and refuses everything else with
:class:`ManoFormatError` *before* anything is constructed, so a malicious pickle cannot run
code. The stand-ins are then turned into plain numpy arrays.

Accepted inputs: the original pkl, chumpy-free pkls (plain ndarrays, dense or sparse
``J_regressor``), and ``.npz`` files with the same keys.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from handflow.errors import HandflowError

__all__ = ["ManoFormatError", "RestrictedUnpickler", "load_mano_arrays", "MANO_SHAPES", "ALLOWED_CLASSES"]


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
_BUILTINS_ALLOWED = {("builtins", "set"), ("builtins", "object"), ("copyreg", "_reconstructor"), ("_codecs", "encode")}
#: Python-2 module names as they appear in the released (Python-2) files
_PY2_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
#: every (module, name) a MANO file may reference
ALLOWED_CLASSES: frozenset[tuple[str, str]] = frozenset(_NUMPY_ALLOWED | set(_STUBS) | _BUILTINS_ALLOWED)

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
        if key in _NUMPY_ALLOWED:
            import importlib

            mod = "numpy._core.multiarray" if module.endswith("multiarray") and hasattr(np, "_core") else module
            return getattr(importlib.import_module(mod), name)
        if key in _BUILTINS_ALLOWED:
            import _codecs
            import builtins
            import copyreg

            return getattr({"builtins": builtins, "copyreg": copyreg, "_codecs": _codecs}[module], name)
        raise ManoFormatError(
            f"refusing to load class {module}.{name} from a MANO file: only the classes a MANO "
            "model file needs (chumpy Ch/Select, scipy csc_matrix, numpy arrays) are allowed, "
            "so this file is not a MANO model or has been tampered with"
        )


def _to_array(v: Any) -> Any:
    """Stand-ins and array-likes -> numpy; other values unchanged."""
    if isinstance(v, ChStub):
        return np.asarray(v.state["x"])
    if isinstance(v, SelectStub):
        s = v.state
        return _to_array(s["a"]).ravel()[np.asarray(s["idxs"])].reshape(s["preferred_shape"])
    if isinstance(v, CscStub):
        s = v.state
        shape = tuple(s.get("_shape", s.get("shape")))
        data, indices, indptr = (np.asarray(s[k]) for k in ("data", "indices", "indptr"))
        dense = np.zeros(shape, dtype=data.dtype)
        for col in range(shape[1]):
            a, b = indptr[col], indptr[col + 1]
            dense[indices[a:b], col] = data[a:b]
        return dense
    return v


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
    nverts = len(np.asarray(_to_array(obj["v_template"]))) if "v_template" in obj else None
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
        arr = np.asarray(_to_array(obj[key]))
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            raise ManoFormatError(f"{path}: {key} has shape {arr.shape}, expected {shape} (None = any)")
        if key in ("f", "kintree_table"):
            arr = arr.astype(np.int64)
            arr[arr == np.iinfo(np.uint32).max] = -1  # the root's "parent" is uint32 -1
        else:
            arr = arr.astype(np.float64)
            if not np.isfinite(arr).all():
                raise ManoFormatError(f"{path}: {key} contains NaN or inf")
        out[key] = arr
    return out
