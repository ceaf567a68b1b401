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
``meta.json``             JSON                   thresholds, seed, config, statistics
========================  =====================  ==============================================

Why ``.npy`` folders rather than NPZ/HDF5/zarr: no extra dependency, memory-mappable
(NPZ members are not), trivially appendable by adding parts, and an atomic rename of a
folder gives crash safety without a database.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MultiHandsRecord", "write_part", "load", "part_name", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_ARRAYS = ("image_ids", "count", "params", "joints", "gt_params", "gt_joints")


@dataclass
class MultiHandsRecord:
    """Annotations of one image.

    Attributes:
        params: (n, 218) float32, n ≤ N accepted annotations.
        joints: (n, 42, 3) float32 camera-frame mm.
        gt_params: (218,) float32.
        gt_joints: (42, 3) float32.
    """

    params: np.ndarray
    joints: np.ndarray
    gt_params: np.ndarray
    gt_joints: np.ndarray


def part_name(shard: int, num_shards: int, chunk: int) -> str:
    return f"part-{shard:04d}of{num_shards:04d}-{chunk:05d}"


def write_part(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Atomically write one part folder (write to ``.tmp-*``, fsync, rename)."""
    folder = Path(folder)
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"write_part: missing arrays {missing}")
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for k in _ARRAYS:
        with open(tmp / f"{k}.npy", "wb") as f:
            np.save(f, arrays[k])
            f.flush()
            os.fsync(f.fileno())
    with open(tmp / "meta.json", "w") as f:
        json.dump({"format_version": FORMAT_VERSION, **meta}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    if folder.exists():
        shutil.rmtree(folder)
    os.rename(tmp, folder)
    return folder


def load(root: str | Path, split: str) -> dict[int, MultiHandsRecord]:
    """Read all parts of ``root/<split>`` into ``{image_id: MultiHandsRecord}``.

    Raises:
        FileNotFoundError: no such folder or no finished part in it.
        ValueError: a part from another format version, or an image id present twice.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"no MultiHands annotations for split {split!r}: {folder} does not exist "
                                f"(run `handflow multihands --data DIR --split {split} --out {root}`)")
    parts = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("part-"))
    if not parts:
        raise FileNotFoundError(f"{folder} holds no finished part (an interrupted run? rerun it to resume)")
    out: dict[int, MultiHandsRecord] = {}
    for p in parts:
        meta = json.loads((p / "meta.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{p}: format_version {meta.get('format_version')} != {FORMAT_VERSION}")
        a = {k: np.load(p / f"{k}.npy", mmap_mode="r") for k in _ARRAYS}
        for m, iid in enumerate(a["image_ids"].tolist()):
            if iid in out:
                raise ValueError(f"image id {iid} appears in two parts (second: {p})")
            n = int(a["count"][m])
            out[iid] = MultiHandsRecord(
                params=np.asarray(a["params"][m, :n]),
                joints=np.asarray(a["joints"][m, :n]),
                gt_params=np.asarray(a["gt_params"][m]),
                gt_joints=np.asarray(a["gt_joints"][m]),
            )
    return out
