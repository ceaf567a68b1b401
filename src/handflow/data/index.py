"""Compact on-disk index of an InterHand2.6M split (memory-mapped ``.npy`` arrays).

The real annotation JSONs are several GB. They are parsed **once** (one file at a time)
into a cache folder ``ROOT/.handflow_cache/<split>/`` (or ``cache_dir``) of plain ``.npy``
arrays opened with ``mmap_mode="r"``, plus ``manifest.json`` recording each source file's
size and modification time and the index format version. Later reads map the arrays and
touch only what an item needs; the index is rebuilt when any source changed. It is built
in a temporary folder and renamed into place, so a crash never leaves a half index.

Arrays (I images, R frames, C cameras):

=====================  ================  ===========================================
``img_id``             (I,) int64        data.json image id
``img_frame``          (I,) int64        row into the frame arrays
``img_cam``            (I,) int64        row into the camera arrays
``img_valid``          (I, 42) bool      per-image ``joint_valid`` (data.json)
``img_hand_type``      (I,) int8         0 right, 1 left, 2 interacting
``img_size``           (I, 2) int32      width, height
``img_vis``            (I, 42) int8      visibility from the extra file, -1 unknown
``img_name_off``       (I+1,) int64      offsets into ``names.bin`` (file_name, utf-8)
``img_seq_off``        (I+1,) int64      offsets into ``seqs.bin`` (seq_name)
``frame_key``          (R, 2) int64      capture, frame_idx
``frame_world``        (R, 42, 3) f32    world joints, mm
``frame_mano``         (R, 2, 61) f32    NeuralAnnot pose 48 | shape 10 | trans 3 (right, left)
``frame_has_mano``     (R, 2) bool
``cam_key``            (C,) int64        capture
``cam_name_off``       (C+1,) int64      offsets into ``cams.bin``
``cam_pos``            (C, 3) f64        campos, mm
``cam_rot``            (C, 3, 3) f64     camrot
``cam_focal``          (C, 2) f64
``cam_princpt``        (C, 2) f64
=====================  ================  ===========================================
"""

from __future__ import annotations

import json
import logging
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from handflow.atomic import atomic_create, atomic_dir
from handflow.constants import NUM_JOINTS, SIDES
from handflow.data.ih_json import (
    AnnotationError,
    JsonStream,
    annotation_paths,
    as_flag,
    as_int,
    check_joint_list,
    check_unique,
    joint_array,
    key_int,
    read_extra,
    read_json,
    read_skeleton,
    require,
)

__all__ = ["SplitIndex", "build_index", "INDEX_VERSION"]

log = logging.getLogger(__name__)
#: version 4 validates more (unique image ids, positive focal lengths, integer ids and sizes):
#: indexes written by older versions, which accepted such files, are rebuilt and so re-checked
INDEX_VERSION = 4
#: NeuralAnnot fields and their lengths, stored side by side in ``frame_mano``
MANO_SIZES = {"pose": 48, "shape": 10, "trans": 3}
PARAM_FIELDS = sum(MANO_SIZES.values())
HAND_TYPES = {"right": 0, "left": 1, "interacting": 2}


def _sources(paths: dict[str, Path]) -> dict[str, list[int]]:
    return {k: [p.stat().st_size, p.stat().st_mtime_ns] for k, p in paths.items() if p.exists() and k != "skeleton"}


def _blob(strings: list[str]) -> tuple[bytes, np.ndarray]:
    enc = [s.encode() for s in strings]
    off = np.zeros(len(enc) + 1, np.int64)
    off[1:] = np.cumsum([len(e) for e in enc])
    return b"".join(enc), off


def _camera_value(c: dict[str, Any], sub: str, name: str, shape: tuple[int, ...], path: Path, where: str) -> np.ndarray:
    """One camera's ``sub`` entry as float64 of ``shape``, finite; ``focal`` also positive
    (a zero focal length makes the intrinsics singular, a negative one mirrors the image)."""
    raw = require(c[sub], name, path, where)
    try:
        v = np.asarray(raw, np.float64)
    except (TypeError, ValueError):
        v = None
    if v is None or v.shape != shape or not np.isfinite(v).all():
        raise AnnotationError(f"{path}: {where} {sub} must be {shape} finite numbers, got {raw!r}: fix the camera entry")
    if sub == "focal" and not (v > 0).all():
        raise AnnotationError(f"{path}: {where} focal must be positive (pixels), got {raw!r}: fix the camera entry")
    return v


def _cameras(path: Path) -> tuple[dict[tuple[str, str], int], dict[str, Any]]:
    """camera.json is small (KBs): ``json.load``."""
    cams_json = read_json(path)
    if not isinstance(cams_json, dict):
        raise AnnotationError(f"{path}: expected a JSON object of captures, got {type(cams_json).__name__}")
    rows: dict[tuple[str, str], int] = {}
    out: dict[str, list] = {"key": [], "names": [], "pos": [], "rot": [], "focal": [], "pp": []}
    for cap, c in cams_json.items():
        for sub in ("campos", "camrot", "focal", "princpt"):
            require(c, sub, path, f"capture {cap}")
        for name in c["campos"]:
            where = f"capture {cap} camera {name}"
            rows[(str(cap), str(name))] = len(out["key"])
            out["key"].append(key_int(cap, path, f"capture {cap}"))
            out["names"].append(str(name))
            for k, sub, n in (("pos", "campos", (3,)), ("rot", "camrot", (3, 3)), ("focal", "focal", (2,)),
                              ("pp", "princpt", (2,))):
                out[k].append(_camera_value(c, sub, name, n, path, where))
    return rows, out


def _joint_3d(path: Path) -> tuple[dict[tuple[str, str], int], list[tuple[int, int]], list[np.ndarray]]:
    """Stream joint_3d.json: v1.0 dicts with ``world_coord`` or v0.0 bare 42x3 lists."""
    rows: dict[tuple[str, str], int] = {}
    keys: list[tuple[int, int]] = []
    world: list[np.ndarray] = []
    with JsonStream(path) as s:
        for cap in s.object_keys():
            for fr in s.object_keys():
                e = s.value()
                w = e if isinstance(e, list) else require(e, "world_coord", path, f"capture {cap} frame {fr}")
                w = joint_array(w, path, f"capture {cap} frame {fr} world_coord")
                rows[(cap, fr)] = len(keys)
                keys.append((key_int(cap, path, f"capture {cap}"), key_int(fr, path, f"capture {cap} frame {fr}")))
                world.append(w)
    return rows, keys, world


def _neuralannot(path: Path, rows: dict[tuple[str, str], int]) -> tuple[np.ndarray, np.ndarray, set[str]]:
    """Stream MANO_NeuralAnnot.json into (R, 2, 61) [pose 48 | shape 10 | trans 3] + flags."""
    R = len(rows)
    params, has = np.zeros((R, 2, PARAM_FIELDS), np.float32), np.zeros((R, 2), bool)
    models: set[str] = set()
    if not path.exists():
        return params, has, models
    with JsonStream(path) as s:
        for cap in s.object_keys():
            for fr in s.object_keys():
                e = s.value()
                row = rows.get((cap, fr))
                if row is None or e is None:
                    continue
                for h, side in enumerate(SIDES):
                    p = e.get(side)
                    if p is None:
                        continue
                    where = f"capture {cap} frame {fr} {side}"
                    vals = []
                    for k, n in MANO_SIZES.items():
                        v = require(p, k, path, where)
                        try:
                            v = np.asarray(v, np.float64).reshape(-1)
                        except (TypeError, ValueError):
                            v = None
                        if v is None or v.shape != (n,) or not np.isfinite(v).all():
                            raise AnnotationError(f"{path}: {where} {k!r} must hold {n} finite numbers")
                        vals.append(v)
                    params[row, h] = np.concatenate(vals)
                    has[row, h] = True
                    if "hand_model" in p:  # synthetic sets name their model; real NeuralAnnot is MANO
                        models.add(str(p["hand_model"]))
    return params, has, models


def _data(path: Path, frame_rows: dict[tuple[str, str], int], cam_rows: dict[tuple[str, str], int],
          paths: dict[str, Path]) -> dict[str, Any]:
    """Stream data.json: ``images`` and ``annotations`` (any order), joined on image id."""
    im_cols = {k: array("q") for k in ("id", "frame", "cam", "w", "h")}
    names: list[str] = []
    seqs: list[str] = []
    an_id, an_type, an_valid = array("q"), array("b"), bytearray()
    seen: set[str] = set()
    with JsonStream(path) as s:
        for key in s.object_keys():
            seen.add(key)
            if key == "images":
                for i in s.array_items():
                    im, where = s.value(), f"images[{i}]"
                    iid = as_int(require(im, "id", path, where), path, f"{where} 'id'")
                    cap, fr, cam = (str(require(im, k, path, where)) for k in ("capture", "frame_idx", "camera"))
                    if (cap, fr) not in frame_rows:
                        raise AnnotationError(f"{paths['joint_3d']}: no entry for capture {cap} frame {fr} "
                                              f"(needed by image {iid} of {path})")
                    if (cap, cam) not in cam_rows:
                        raise AnnotationError(f"{paths['camera']}: no camera {cam} in capture {cap} "
                                              f"(needed by image {iid} of {path})")
                    size = [as_int(require(im, k, path, where), path, f"{where} (image {iid}) {k!r}", positive=True)
                            for k in ("width", "height")]
                    for col, v in (("id", iid), ("frame", frame_rows[(cap, fr)]), ("cam", cam_rows[(cap, cam)]),
                                   ("w", size[0]), ("h", size[1])):
                        im_cols[col].append(v)
                    names.append(str(require(im, "file_name", path, where)))
                    seqs.append(str(require(im, "seq_name", path, where)))
            elif key == "annotations":
                for i in s.array_items():
                    a, where = s.value(), f"annotations[{i}]"
                    iid = as_int(require(a, "image_id", path, where), path, f"{where} 'image_id'")
                    valid = require(a, "joint_valid", path, f"{where} (image {iid})")
                    check_joint_list(valid, path, f"{where} (image {iid}) joint_valid")
                    ht = require(a, "hand_type", path, f"{where} (image {iid})")
                    if ht not in HAND_TYPES:
                        raise AnnotationError(f"{path}: {where} hand_type must be one of {tuple(HAND_TYPES)}, got {ht!r}")
                    an_id.append(iid)
                    an_type.append(HAND_TYPES[ht])
                    an_valid.extend(as_flag(v, path, f"{where} joint_valid") for v in valid)
            else:
                s.skip()
    if "images" not in seen:  # an empty dataset would hide a wrong file
        raise AnnotationError(f"{path}: missing key 'images' (the list of image entries): "
                              "is this the split's data.json? (docs/data.md)")
    ids = np.frombuffer(im_cols["id"], np.int64) if len(im_cols["id"]) else np.zeros(0, np.int64)
    check_unique(ids, path, "images", "image")
    a_ids = np.frombuffer(an_id, np.int64) if len(an_id) else np.zeros(0, np.int64)
    order = np.argsort(a_ids, kind="stable")
    pos = np.searchsorted(a_ids[order], ids)
    found = np.zeros(len(ids), bool)
    if len(a_ids):
        found = (pos < len(a_ids)) & (a_ids[order][np.minimum(pos, len(a_ids) - 1)] == ids)
    if not found.all():
        raise AnnotationError(f"{path}: image {int(ids[~found][0])} has no entry in 'annotations' "
                              f"({int((~found).sum())} images lack one)")
    sel = order[pos]
    valid_all = np.frombuffer(bytes(an_valid), np.uint8).reshape(-1, NUM_JOINTS).astype(bool)
    return {
        "img_id": ids.copy(), "img_frame": np.asarray(im_cols["frame"], np.int64),
        "img_cam": np.asarray(im_cols["cam"], np.int64),
        "img_valid": valid_all[sel], "img_hand_type": np.frombuffer(an_type, np.int8)[sel].copy(),
        "img_size": np.stack([np.asarray(im_cols["w"], np.int32), np.asarray(im_cols["h"], np.int32)], 1).reshape(-1, 2),
        "names": names, "seqs": seqs,
    }


def build_index(paths: dict[str, Path], out: Path) -> None:
    """Parse the split's files into the array folder ``out`` (atomically). The large files
    are streamed (:class:`~handflow.data.ih_json.JsonStream`); the peak memory is the
    compact arrays themselves (about 1 KB per frame and 100 B per image), plus the
    ``(capture, frame) -> row`` dictionary."""
    if paths["skeleton"].exists():
        read_skeleton(paths["skeleton"])
    else:
        log.warning("no %s: assuming the official InterHand2.6M 42-joint order", paths["skeleton"])
    cam_rows, cams = _cameras(paths["camera"])
    frame_rows, frame_key, frame_world = _joint_3d(paths["joint_3d"])
    R = len(frame_key)
    frame_mano, frame_has, models = _neuralannot(paths["MANO_NeuralAnnot"], frame_rows)
    if len(models) > 1:
        raise AnnotationError(f"{paths['MANO_NeuralAnnot']}: parameters of several hand models {sorted(models)} in one split")
    img = _data(paths["data"], frame_rows, cam_rows, paths)
    del frame_rows
    names, seqs = img.pop("names"), img.pop("seqs")
    I = len(names)
    extra = read_extra(paths["extra"])
    img["img_vis"] = np.full((I, NUM_JOINTS), -1, np.int8)
    vis = extra.get("visibility", {})
    for i, iid in enumerate(img["img_id"].tolist()):
        v = vis.get(str(iid))
        if v is not None:
            check_joint_list(v, paths["extra"], f"visibility of image {iid}")
            img["img_vis"][i] = [as_flag(x, paths["extra"], f"visibility of image {iid}") for x in v]
    hand_model = extra.get("hand_model") or (next(iter(models)) if models else None)
    arrays = dict(img)
    nb, arrays["img_name_off"] = _blob(names)
    sb, arrays["img_seq_off"] = _blob(seqs)
    cb, arrays["cam_name_off"] = _blob(cams["names"])
    arrays.update(
        frame_key=np.asarray(frame_key, np.int64).reshape(R, 2),
        frame_world=np.stack(frame_world) if R else np.zeros((0, NUM_JOINTS, 3), np.float32),
        frame_mano=frame_mano, frame_has_mano=frame_has, cam_key=np.asarray(cams["key"], np.int64),
        cam_pos=np.asarray(cams["pos"], np.float64).reshape(-1, 3),
        cam_rot=np.asarray(cams["rot"], np.float64).reshape(-1, 3, 3),
        cam_focal=np.asarray(cams["focal"], np.float64).reshape(-1, 2),
        cam_princpt=np.asarray(cams["pp"], np.float64).reshape(-1, 2),
    )
    manifest = {"version": INDEX_VERSION, "sources": _sources(paths), "hand_model": hand_model, "num_images": I, "num_frames": R}
    with atomic_dir(out) as tmp:
        for k, a in arrays.items():
            np.save(tmp / f"{k}.npy", a)
        for name, blob in (("names.bin", nb), ("seqs.bin", sb), ("cams.bin", cb)):
            (tmp / name).write_bytes(blob)
        (tmp / "manifest.json").write_text(json.dumps(manifest))


class SplitIndex:
    """Memory-mapped index of one split; built or rebuilt on demand (module docstring)."""

    def __init__(self, root: str | Path, split: str, cache_dir: str | Path | None = None, subset: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root does not exist: {self.root}")
        self.paths = annotation_paths(self.root, split, subset)
        base = Path(cache_dir) if cache_dir is not None else self.root / ".handflow_cache"
        self.folder = base / split
        self.rebuilt = False
        if not self._fresh():
            # lazy: fcntl is POSIX-only; only building the index locks
            import fcntl

            self.folder.parent.mkdir(parents=True, exist_ok=True)
            # one builder at a time (DDP ranks, data workers); the others wait and reuse it
            with open(self.folder.parent / f".{split}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not self._fresh():
                    build_index(self.paths, self.folder)
                    self.rebuilt = True
        self._open()

    def _open(self) -> None:
        self.manifest = json.loads((self.folder / "manifest.json").read_text())
        self.a = {p.stem: np.load(p, mmap_mode="r") for p in self.folder.glob("*.npy") if not p.stem.startswith("vis_")}
        self._blobs = {n: (self.folder / f"{n}.bin").read_bytes() for n in ("names", "seqs", "cams")}

    def __getstate__(self) -> dict:
        # memory maps would pickle as full copies (spawned workers, DDP): reopen them instead
        return {k: v for k, v in self.__dict__.items() if k not in ("a", "_blobs", "manifest")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def _fresh(self) -> bool:
        m = self.folder / "manifest.json"
        if not m.exists():
            return False
        try:
            manifest = json.loads(m.read_text())
        except json.JSONDecodeError:
            return False
        return manifest.get("version") == INDEX_VERSION and manifest.get("sources") == _sources(self.paths)

    def __len__(self) -> int:
        return int(self.a["img_id"].shape[0])

    def _str(self, blob: str, off: str, i: int) -> str:
        o = self.a[off]
        return self._blobs[blob][int(o[i]) : int(o[i + 1])].decode()

    def file_name(self, i: int) -> str:
        return self._str("names", "img_name_off", i)

    def seq_name(self, i: int) -> str:
        return self._str("seqs", "img_seq_off", i)

    def camera_name(self, c: int) -> str:
        return self._str("cams", "cam_name_off", c)

    def visibility_cache(self, key: str) -> np.ndarray | None:
        """(I, 42) int8 memory map ``vis_<key>.npy`` in the index folder (-1 = not computed,
        0/1 = occluded/visible), shared by processes (rows are written whole; a row holding
        any -1 counts as not computed). It goes away with the index when a source changes.
        None when the folder is not writable (the caller keeps results in memory)."""
        path = self.folder / f"vis_{key}.npy"
        try:
            if not path.exists():
                with atomic_create(path) as tmp:  # create-if-absent: never clobbers another process's file
                    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int8, shape=(len(self), NUM_JOINTS))
                    arr[:] = -1
                    arr.flush()
                    del arr
            return np.lib.format.open_memmap(path, mode="r+")
        except OSError as e:
            log.warning("cannot write the visibility cache %s (%s): keeping it in memory", path, e)
            return None
