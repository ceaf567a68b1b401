"""Write a dataset in the InterHand2.6M v1.0 on-disk format (``reference/formats.md`` 1.1–1.8).

Everything is written atomically: to a hidden temporary name in the same folder, flushed,
``fsync``-ed, then renamed, so a reader never sees a half-written file (a killed run leaves
at most a ``.*.tmp-*`` file, ignored and overwritten by the next run).

Layout written under ``ROOT``::

    images/<split>/Capture<c>/<seq_name>/cam<camera>/image<frame_idx>.jpg
    annotations/skeleton.txt
    annotations/<split>/InterHand2.6M_<split>_{data,camera,joint_3d,MANO_NeuralAnnot}.json
    annotations/<split>/handflow_<split>_extra.json        (extra: visibility, hand model, seed)
    annotations/<split>/.shards/shard_<i>_of_<n>.json     (partial results of one shard)

Sharding: every shard writes one partial file per split; :func:`merge_shards` joins them
into the four real files (sorted by id / capture / frame, so the result does not depend on
the number of shards).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from handflow.atomic import write_bytes
from handflow.constants import IH42_JOINT_NAMES, IH42_PARENTS, NUM_JOINTS
from handflow.fingerprint import check_stored, matches_stored

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "read_json",
    "skeleton_text",
    "write_skeleton",
    "encode_jpeg",
    "image_rel_path",
    "split_files",
    "shard_path",
    "write_shard",
    "shard_done",
    "merge_shards",
    "EXTRA_FORMAT_VERSION",
    "JPEG_QUALITY",
    "SKELETON_HEADER",
]

EXTRA_FORMAT_VERSION = 1
JPEG_QUALITY = 90
SKELETON_HEADER = "# keypoint name, keypoint index, parent index"
SHARD_DIR = ".shards"
#: keys of one split's partial (shard) file
SHARD_KEYS = ("config", "shard", "images", "annotations", "camera", "joint_3d", "mano", "visibility", "stats")


# ----------------------------------------------------------------------------- atomic IO
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (:func:`handflow.atomic.write_bytes`, fsync)."""
    write_bytes(path, data, fsync=True)


def dumps(obj: Any) -> bytes:
    """Deterministic compact JSON bytes (key order as built; floats as Python ``repr``)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def atomic_write_json(path: Path, obj: Any) -> None:
    """Serialize ``obj`` with :func:`dumps` and write it atomically."""
    atomic_write_bytes(path, dumps(obj))


def read_json(path: Path) -> Any:
    """Load a JSON file with a clear error for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing JSON file {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt JSON in {path}: {e}; delete it and rerun `handflow synth`") from e


# ----------------------------------------------------------------------------- layout
def skeleton_text() -> str:
    """Content of ``annotations/skeleton.txt``: header, then 42 lines ``name id parent``."""
    lines = [SKELETON_HEADER]
    lines += [f"{IH42_JOINT_NAMES[j]} {j} {IH42_PARENTS[j]}" for j in range(NUM_JOINTS)]
    return "\n".join(lines) + "\n"


def write_skeleton(root: Path) -> None:
    """Write ``ROOT/annotations/skeleton.txt`` atomically."""
    atomic_write_bytes(Path(root) / "annotations" / "skeleton.txt", skeleton_text().encode())


def image_rel_path(capture: int, seq_name: str, camera: str, frame_idx: int) -> str:
    """``file_name`` of an image, relative to ``images/<split>/`` (as in the real data.json)."""
    return f"Capture{capture}/{seq_name}/cam{camera}/image{frame_idx}.jpg"


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes (baseline, no subsampling change, deterministic)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_jpeg expects (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def split_files(root: Path, split: str) -> dict[str, Path]:
    """Paths of the five annotation files of ``split`` (keys data, camera, joint_3d, mano, extra)."""
    d = Path(root) / "annotations" / split
    p = f"InterHand2.6M_{split}"
    return {
        "data": d / f"{p}_data.json",
        "camera": d / f"{p}_camera.json",
        "joint_3d": d / f"{p}_joint_3d.json",
        "mano": d / f"{p}_MANO_NeuralAnnot.json",
        "extra": d / f"handflow_{split}_extra.json",
    }


# ----------------------------------------------------------------------------- shards
def shard_path(root: Path, split: str, index: int, count: int) -> Path:
    """Partial file of shard ``index`` of ``count`` for ``split``."""
    return Path(root) / "annotations" / split / SHARD_DIR / f"shard_{index}_of_{count}.json"


def write_shard(root: Path, split: str, index: int, count: int, part: dict[str, Any]) -> None:
    """Atomically write one shard's partial results for ``split`` (dict with ``SHARD_KEYS``)."""
    missing = [k for k in SHARD_KEYS if k not in part]
    if missing:
        raise ValueError(f"shard part lacks keys {missing}")
    atomic_write_json(shard_path(root, split, index, count), part)


def shard_done(root: Path, splits: list[str], index: int, count: int, config: dict[str, Any]) -> bool:
    """True when shard ``index`` wrote its file for every split with the same ``config``
    (:func:`handflow.fingerprint.matches_stored`); a missing or unreadable file, or one of other
    settings, is not done (the shard writes it again)."""
    for split in splits:
        p = shard_path(root, split, index, count)
        if not p.is_file():
            return False
        try:
            if not matches_stored(read_json(p), config):
                return False
        except ValueError:
            return False
    return True


def _sorted_nested(d: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c: {f: d[c][f] for f in sorted(d[c], key=int)} for c in sorted(d, key=int)}


def merge_shards(root: Path, split: str, count: int, config: dict[str, Any]) -> dict[str, Any]:
    """Join the ``count`` shard files of ``split`` into the four InterHand2.6M files and the
    extra file. Returns the merged per-split statistics (lists concatenated, counts summed).

    Raises:
        FileNotFoundError: if a shard file is missing.
        SettingsMismatch: a shard file was written with other settings than ``config`` (a
            ``ValueError``; :func:`handflow.fingerprint.check_stored`).
    """
    images: list[dict] = []
    annots: list[dict] = []
    camera: dict[str, dict] = {}
    joint_3d: dict[str, dict] = {}
    mano: dict[str, dict] = {}
    vis: dict[str, list] = {}
    stats: dict[str, Any] = {}
    for i in range(count):
        p = shard_path(root, split, i, count)
        part = read_json(p)
        check_stored(part, config, what=str(p), fix="delete it and rerun its shard")
        images += part["images"]
        annots += part["annotations"]
        for cap, cams in part["camera"].items():
            camera[cap] = cams
        for src, dst in ((part["joint_3d"], joint_3d), (part["mano"], mano)):
            for cap, frames in src.items():
                dst.setdefault(cap, {}).update(frames)
        vis.update(part["visibility"])
        for k, v in part["stats"].items():
            if isinstance(v, list):
                stats.setdefault(k, []).extend(v)
            else:
                stats[k] = stats.get(k, 0) + v
    images.sort(key=lambda r: r["id"])
    annots.sort(key=lambda r: r["id"])
    files = split_files(root, split)
    atomic_write_json(files["data"], {"images": images, "annotations": annots})
    atomic_write_json(files["camera"], {c: camera[c] for c in sorted(camera, key=int)})
    atomic_write_json(files["joint_3d"], _sorted_nested(joint_3d))
    atomic_write_json(files["mano"], _sorted_nested(mano))
    extra = {
        "format_version": EXTRA_FORMAT_VERSION,
        "hand_model": config["hand_model"],
        "visibility": {k: vis[k] for k in sorted(vis, key=int)},
        "seed": config["seed"],
    }
    atomic_write_json(files["extra"], extra)
    return stats
