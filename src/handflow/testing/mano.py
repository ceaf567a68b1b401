"""Fake MANO model files in the **real on-disk format**, for tests and benchmarks.

No MANO file is ever shipped. :func:`write_fake_mano` writes random but valid arrays the
way the released ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` store them (``reference/formats.md``
section 3): a Python-2-compatible pickle (protocol 2, latin-1 strings) of a dict whose
``shapedirs`` is a ``chumpy.reordering.Select`` wrapping a ``chumpy.ch.Ch`` and whose
``J_regressor`` is a ``scipy.sparse.csc.csc_matrix``, with the real state keys; numpy arrays
under ``numpy.core.multiarray._reconstruct``. Neither chumpy nor scipy is imported: stand-in
classes are registered under the real module paths only while pickling.

The left file mirrors the right one (x negated) with the *same* faces and the *same*
x-component of ``shapedirs``, reproducing the released left file's known defect.
"""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_fake_mano", "fake_mano_arrays"]

_N_VERTS, _N_FACES = 778, 1538
_REST_WRIST_M = np.array([0.0957, 0.0064, 0.0062])


def _sphere(rings: int, segs: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed UV sphere: 2 + rings*segs vertices, 2*rings*segs faces, outward winding."""
    theta = np.linspace(0, np.pi, rings + 2)[1:-1]
    phi = np.linspace(0, 2 * np.pi, segs, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    v = np.stack([np.cos(t), np.sin(t) * np.cos(p), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    v = np.concatenate([[[1.0, 0, 0]], v, [[-1.0, 0, 0]]])
    faces = []
    ring = lambda r, s: 1 + r * segs + (s % segs)  # noqa: E731
    for s in range(segs):
        faces.append([0, ring(0, s), ring(0, s + 1)])
        faces.append([len(v) - 1, ring(rings - 1, s + 1), ring(rings - 1, s)])
        for r in range(rings - 1):
            a, b, c, d = ring(r, s), ring(r, s + 1), ring(r + 1, s), ring(r + 1, s + 1)
            faces += [[a, c, b], [b, c, d]]
    f = np.asarray(faces)
    vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum()
    return v, (f if vol > 0 else f[:, ::-1])


def fake_mano_arrays(seed: int = 0) -> dict[str, dict[str, Any]]:
    """Random but valid MANO arrays per side (float64 numpy), hand-sized, in metres."""
    rng = np.random.default_rng(seed)
    v, f = _sphere(16, 48)  # 770 vertices, 1536 faces
    v = v * np.array([0.09, 0.02, 0.045]) + _REST_WRIST_M - np.array([0.09, 0.0, 0.0])
    extra = v[rng.choice(len(v), _N_VERTS - len(v))] + rng.normal(scale=1e-3, size=(_N_VERTS - len(v), 3))
    v = np.concatenate([v, extra])
    f = np.concatenate([f, f[:2]])  # pad to 1538 faces
    joints = _REST_WRIST_M + rng.normal(scale=0.03, size=(16, 3)) * np.array([1.5, 0.3, 1.0])
    joints[0] = _REST_WRIST_M
    d = np.linalg.norm(v[:, None] - joints[None], axis=-1)
    weights = np.exp(-d / 0.015)
    weights /= weights.sum(1, keepdims=True)
    J = np.zeros((16, _N_VERTS))
    for j in range(16):
        near = np.argsort(d[:, j])[:8]
        w = rng.uniform(0.5, 1.0, size=8)
        J[j, near] = w / w.sum()
    comps, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    right = {
        "v_template": v,
        "f": f.astype(np.uint32),
        "shapedirs": rng.normal(scale=3e-3, size=(_N_VERTS, 3, 10)),
        "posedirs": rng.normal(scale=2e-3, size=(_N_VERTS, 3, 135)),
        "J_regressor": J,
        "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], list(range(16))],
                                  dtype=np.int64),
        "hands_components": comps.T.copy(),
        "hands_mean": rng.normal(scale=0.15, size=45),
        "hands_coeffs": rng.normal(size=(200, 45)) * np.linspace(0.8, 0.05, 45),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    mirror = np.array([-1.0, 1.0, 1.0])
    left = dict(right)
    left["v_template"] = right["v_template"] * mirror
    left["posedirs"] = right["posedirs"] * mirror[None, :, None]
    # mirrored rotations: axis-angle (x, y, z) -> (x, -y, -z)
    left["hands_mean"] = (right["hands_mean"].reshape(15, 3) * np.array([1.0, -1.0, -1.0])).reshape(45)
    return {"right": right, "left": left}


def _stub_type(module: str, name: str) -> type:
    return type(name, (), {"__module__": module, "__qualname__": name})


@contextmanager
def _fake_modules() -> Iterator[dict[str, type]]:
    """Register stand-in chumpy/scipy modules in ``sys.modules`` only while pickling."""
    classes = {
        "Ch": _stub_type("chumpy.ch", "Ch"),
        "Select": _stub_type("chumpy.reordering", "Select"),
        "csc_matrix": _stub_type("scipy.sparse.csc", "csc_matrix"),
    }
    mods = {
        "chumpy": types.ModuleType("chumpy"),
        "chumpy.ch": types.ModuleType("chumpy.ch"),
        "chumpy.reordering": types.ModuleType("chumpy.reordering"),
        "scipy": types.ModuleType("scipy"),
        "scipy.sparse": types.ModuleType("scipy.sparse"),
        "scipy.sparse.csc": types.ModuleType("scipy.sparse.csc"),
    }
    mods["chumpy.ch"].Ch = classes["Ch"]
    mods["chumpy.reordering"].Select = classes["Select"]
    mods["scipy.sparse.csc"].csc_matrix = classes["csc_matrix"]
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        yield classes
    finally:
        for k, old in saved.items():
            if old is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = old


def _instance(cls: type, state: dict) -> Any:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _chumpy_state() -> dict:
    return {"_dirty_vars": set(), "_itr": None, "_make_dense": False, "_make_sparse": False, "_status": "undefined",
            "_depends_on_deps": {}}


def _to_real_format(arrays: dict[str, Any], classes: dict[str, type]) -> dict[str, Any]:
    out = dict(arrays)
    sd = np.asarray(arrays["shapedirs"])
    ch = _instance(classes["Ch"], {"x": sd.reshape(-1).copy(), **_chumpy_state()})
    out["shapedirs"] = _instance(
        classes["Select"],
        {"a": ch, "idxs": np.arange(sd.size), "preferred_shape": sd.shape, **_chumpy_state()},
    )
    J = np.asarray(arrays["J_regressor"])
    data, indices, indptr = [], [], [0]
    for col in range(J.shape[1]):
        nz = np.nonzero(J[:, col])[0]
        data += J[nz, col].tolist()
        indices += nz.tolist()
        indptr.append(len(indices))
    out["J_regressor"] = _instance(
        classes["csc_matrix"],
        {"data": np.asarray(data), "indices": np.asarray(indices, np.int32), "indptr": np.asarray(indptr, np.int32),
         "_shape": J.shape, "maxprint": 50},
    )
    return out


def write_fake_mano(
    folder: str | Path,
    sides: tuple[str, ...] = ("right", "left"),
    seed: int = 0,
    chumpy: bool = True,
    fmt: str = "pkl",
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Path]:
    """Write ``MANO_RIGHT``/``MANO_LEFT`` fixtures into ``folder``.

    Args:
        folder: output folder (created).
        sides: which files to write.
        seed: random seed of the arrays.
        chumpy: True = the released format (chumpy + scipy objects); False = a chumpy-free
            pickle of plain ndarrays.
        fmt: ``"pkl"`` or ``"npz"``.
        edit: called with each file's dict just before it is written, to make damaged or
            unusual files in the real format: with ``chumpy=True`` its ``shapedirs`` and
            ``J_regressor`` are the stand-in objects, whose attributes are the pickled state
            (``obj["shapedirs"].a.x``, ``.idxs``, ``.preferred_shape``; ``obj["J_regressor"]._shape``,
            ``.data``, ``.indices``, ``.indptr``).

    Returns:
        ``{side: path}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = fake_mano_arrays(seed)
    paths = {}
    for side in sides:
        a = arrays[side]
        stem = "MANO_RIGHT" if side == "right" else "MANO_LEFT"
        if fmt == "npz":
            path = folder / f"{stem}.npz"
            a = dict(a)
            if edit is not None:
                edit(a)
            np.savez(path, **{k: np.asarray(v) for k, v in a.items() if not isinstance(v, str)})
        elif fmt == "pkl":
            path = folder / f"{stem}.pkl"
            with _fake_modules() as classes:
                obj = _to_real_format(a, classes) if chumpy else dict(a)
                if edit is not None:
                    edit(obj)
                raw = pickle.dumps(obj, protocol=2)
            # Python 2 / numpy 1.x class paths, as in the released files
            raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            path.write_bytes(raw)
        else:
            raise ValueError(f"fmt must be 'pkl' or 'npz', got {fmt!r}")
        paths[side] = path
    return paths
