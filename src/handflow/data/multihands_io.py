"""On-disk format of MultiHands annotations, and the reader.

Format (``format_version`` 1): one folder per split, ``<out>/<split>/``, holding *parts*,
each a folder ``part-<shard>-<chunk>/`` written atomically (written under a temporary
name, then renamed) with plain ``.npy`` arrays, so any part can be memory-mapped and a
half-written part is never visible:

========================  =====================  ==============================================
file                      shape / dtype          meaning
========================  =====================  ==============================================
``image_ids.npy``         (M,) int64             data.json image ids
``count.npy``             (M,) int32             accepted annotations per image (≤ N)
``params.npy``            (M, N, 218) float32    annotations as parameters (NaN past ``count``)
``joints.npy``            (M, N, 42, 3) float32  camera-frame joints, mm (NaN past ``count``)
``gt_params.npy``         (M, 218) float32       the ground truth (not counted in N)
``gt_joints.npy``         (M, 42, 3) float32     ground-truth joints, mm
``gt_visible.npy``        (M, 42) bool           ground-truth visibility (valid and visible)
``K.npy``                 (M, 3, 3) float32      crop intrinsics the parameters refer to
``meta.json``             JSON                   thresholds, seed, config, statistics
========================  =====================  ==============================================

Parts are named by their chunk index alone (``part-00003``: images ``3·B … 4·B−1`` of the
split's sorted image list, ``B`` the part size), whatever ``--shard i/n`` wrote them, so the
folders written by ``n`` shards are exactly those of one unsharded run. The split folder also
holds ``meta.json`` (settings, per-criterion statistics over all finished parts) and
``summary.json`` (diversity diagnostics, :mod:`handflow.multihands.diagnostics`).

Why ``.npy`` folders rather than NPZ/HDF5/zarr: no extra dependency, memory-mappable
(NPZ members are not), trivially appendable by adding parts, and an atomic rename of a
folder gives crash safety without a database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handflow.atomic import atomic_dir, write_json

__all__ = ["MultiHandsRecord", "MultiHandsIndex", "write_part", "load", "part_name", "read_part_meta", "write_json_atomic",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1
_ARRAYS = ("image_ids", "count", "params", "joints", "gt_params", "gt_joints", "gt_visible", "K")


@dataclass
class MultiHandsRecord:
    """Annotations of one image.

    Attributes:
        params: (n, 218) float32, n ≤ N accepted annotations.
        joints: (n, 42, 3) float32 camera-frame mm.
        gt_params: (218,) float32.
        gt_joints: (42, 3) float32.
        gt_visible: (42,) bool, joints valid and visible in the ground truth.
        K: (3, 3) float32 crop intrinsics of ``params`` (``handflow.params.unpack(params, K, S)``,
            ``S`` = ``image_size``).
        image_size: crop side ``S`` (pixels) that ``params`` refer to.
    """

    params: np.ndarray
    joints: np.ndarray
    gt_params: np.ndarray
    gt_joints: np.ndarray
    gt_visible: np.ndarray
    K: np.ndarray
    image_size: int = 0


def part_name(chunk: int) -> str:
    """Folder name of part ``chunk`` (independent of the shard that writes it)."""
    return f"part-{chunk:05d}"


def read_part_meta(folder: Path) -> dict | None:
    """``meta.json`` of a finished part, or None when the part does not exist.

    Raises:
        ValueError: the part exists but its meta.json is unreadable (corrupt).
    """
    f = Path(folder) / "meta.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f} is corrupt ({e}); delete {folder} and rerun to regenerate it") from None


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON (indent 1) through a temporary file, fsync and an atomic rename (:mod:`handflow.atomic`)."""
    write_json(path, data, fsync=True)


def write_part(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Atomically write one part folder (:func:`handflow.atomic.atomic_dir`: a temporary folder, fsync, rename)."""
    folder = Path(folder)
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"write_part: missing arrays {missing}")
    with atomic_dir(folder, fsync=True) as tmp:
        for k in _ARRAYS:
            np.save(tmp / f"{k}.npy", arrays[k])
        (tmp / "meta.json").write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=1))
    return folder


class MultiHandsIndex(Mapping[int, MultiHandsRecord]):
    """Read-only mapping ``image_id -> MultiHandsRecord`` over the parts of one split.

    Only the small ``image_ids``/``count`` arrays are read up front; a record is read from the
    memory-mapped part arrays when it is accessed, so a training split of any size costs a few
    bytes per image of RAM. Safe to pass to DataLoader workers (the memory maps are reopened
    in each process, never pickled).
    """

    def __init__(self, folder: Path, parts: list[Path]) -> None:
        self.folder = folder
        self.parts = parts
        self.image_size: dict[int, int] = {}
        self._where: dict[int, tuple[int, int]] = {}
        for k, p in enumerate(parts):
            meta = read_part_meta(p)
            if meta is None:
                raise FileNotFoundError(f"{p} has no meta.json (not written by handflow multihands?)")
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"{p}: format_version {meta.get('format_version')} != {FORMAT_VERSION}")
            self.image_size[k] = int(meta.get("image_size", 0))
            missing = [a for a in _ARRAYS if not (p / f"{a}.npy").is_file()]
            if missing:
                raise FileNotFoundError(f"{p} lacks {missing}; delete the part and rerun to regenerate it")
            for m, iid in enumerate(np.load(p / "image_ids.npy").tolist()):
                if iid in self._where:
                    raise ValueError(f"image id {iid} appears in two parts (second: {p})")
                self._where[int(iid)] = (k, m)
        self._arrays: dict[int, dict[str, np.ndarray]] = {}

    def _part(self, k: int) -> dict[str, np.ndarray]:
        if k not in self._arrays:
            self._arrays[k] = {a: np.load(self.parts[k] / f"{a}.npy", mmap_mode="r") for a in _ARRAYS}
        return self._arrays[k]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}

    def __getitem__(self, image_id: int) -> MultiHandsRecord:
        k, m = self._where[int(image_id)]
        a = self._part(k)
        n = int(a["count"][m])
        return MultiHandsRecord(
            params=np.array(a["params"][m, :n]),
            joints=np.array(a["joints"][m, :n]),
            gt_params=np.array(a["gt_params"][m]),
            gt_joints=np.array(a["gt_joints"][m]),
            gt_visible=np.array(a["gt_visible"][m]),
            K=np.array(a["K"][m]),
            image_size=self.image_size[k],
        )

    def __iter__(self) -> Iterator[int]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._where


def load(root: str | Path, split: str) -> MultiHandsIndex:
    """Open all finished parts of ``root/<split>``: a mapping ``{image_id: MultiHandsRecord}``
    (records are read lazily from memory-mapped arrays).

    Raises:
        FileNotFoundError: no such folder, no finished part in it, or a part lacking a file.
        ValueError: a part from another format version, a corrupt meta.json, or an image id
            present twice.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"no MultiHands annotations for split {split!r}: {folder} does not exist "
                                f"(run `handflow multihands --data DIR --split {split} --out {root}`)")
    parts = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("part-"))
    if not parts:
        raise FileNotFoundError(f"{folder} holds no finished part (an interrupted run? rerun it to resume)")
    return MultiHandsIndex(folder, parts)
