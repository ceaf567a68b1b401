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
import os
import shutil
from pathlib import Path

import numpy as np

from handflow.constants import NUM_JOINTS
from handflow.data.ih_json import AnnotationError, annotation_paths, check_joint_list, read_json, require

__all__ = ["SplitIndex", "build_index", "INDEX_VERSION"]

INDEX_VERSION = 1
HAND_TYPES = {"right": 0, "left": 1, "interacting": 2}


def _sources(paths: dict[str, Path]) -> dict[str, list[int]]:
    return {k: [p.stat().st_size, p.stat().st_mtime_ns] for k, p in paths.items() if p.exists() and k != "skeleton"}


def _blob(strings: list[str]) -> tuple[bytes, np.ndarray]:
    enc = [s.encode() for s in strings]
    off = np.zeros(len(enc) + 1, np.int64)
    off[1:] = np.cumsum([len(e) for e in enc])
    return b"".join(enc), off


def build_index(paths: dict[str, Path], out: Path) -> None:
    """Parse the split's JSON files into the array folder ``out`` (atomically)."""
    cams_json = read_json(paths["camera"])
    cam_rows: dict[tuple[str, str], int] = {}
    cam_key, cam_names, cam_pos, cam_rot, cam_focal, cam_pp = [], [], [], [], [], []
    for cap, c in cams_json.items():
        for sub in ("campos", "camrot", "focal", "princpt"):
            require(c, sub, paths["camera"], f"capture {cap}")
        for name in c["campos"]:
            where = f"capture {cap} camera {name}"
            cam_rows[(str(cap), str(name))] = len(cam_key)
            cam_key.append(int(cap))
            cam_names.append(str(name))
            cam_pos.append(require(c["campos"], name, paths["camera"], where))
            cam_rot.append(require(c["camrot"], name, paths["camera"], where))
            cam_focal.append(require(c["focal"], name, paths["camera"], where))
            cam_pp.append(require(c["princpt"], name, paths["camera"], where))
    del cams_json
    j3d = read_json(paths["joint_3d"])
    frame_rows: dict[tuple[str, str], int] = {}
    frame_key, frame_world = [], []
    for cap, frames in j3d.items():
        for fr, e in frames.items():
            world = e if isinstance(e, list) else require(e, "world_coord", paths["joint_3d"], f"capture {cap} frame {fr}")
            check_joint_list(world, paths["joint_3d"], f"capture {cap} frame {fr} world_coord")
            frame_rows[(str(cap), str(fr))] = len(frame_key)
            frame_key.append((int(cap), int(fr)))
            frame_world.append(world)
    del j3d
    R = len(frame_key)
    frame_mano = np.zeros((R, 2, 61), np.float32)
    frame_has = np.zeros((R, 2), bool)
    if paths["MANO_NeuralAnnot"].exists():
        mano = read_json(paths["MANO_NeuralAnnot"])
        for cap, frames in mano.items():
            for fr, e in frames.items():
                row = frame_rows.get((str(cap), str(fr)))
                if row is None or e is None:
                    continue
                for h, side in enumerate(("right", "left")):
                    p = e.get(side)
                    if p is None:
                        continue
                    where = f"capture {cap} frame {fr} {side}"
                    vals = [require(p, k, paths["MANO_NeuralAnnot"], where) for k in ("pose", "shape", "trans")]
                    if [len(v) for v in vals] != [48, 10, 3]:
                        raise AnnotationError(f"{paths['MANO_NeuralAnnot']}: {where}: pose/shape/trans must have 48/10/3 values")
                    frame_mano[row, h] = np.concatenate([np.asarray(v, np.float32) for v in vals])
                    frame_has[row, h] = True
        del mano
    data = read_json(paths["data"])
    images = require(data, "images", paths["data"])
    anns = {int(require(a, "image_id", paths["data"], "annotations")): a for a in require(data, "annotations", paths["data"])}
    I = len(images)
    img = {
        "img_id": np.zeros(I, np.int64), "img_frame": np.zeros(I, np.int64), "img_cam": np.zeros(I, np.int64),
        "img_valid": np.zeros((I, NUM_JOINTS), bool), "img_hand_type": np.zeros(I, np.int8),
        "img_size": np.zeros((I, 2), np.int32), "img_vis": np.full((I, NUM_JOINTS), -1, np.int8),
    }
    names, seqs = [], []
    for i, im in enumerate(images):
        where = f"images[{i}]"
        iid = int(require(im, "id", paths["data"], where))
        cap, fr, cam = (str(require(im, k, paths["data"], where)) for k in ("capture", "frame_idx", "camera"))
        if (cap, fr) not in frame_rows:
            raise AnnotationError(f"{paths['joint_3d']}: no entry for capture {cap} frame {fr} (needed by image {iid})")
        if (cap, cam) not in cam_rows:
            raise AnnotationError(f"{paths['camera']}: no camera {cam} in capture {cap} (needed by image {iid})")
        a = anns.get(iid)
        if a is None:
            raise AnnotationError(f"{paths['data']}: image {iid} has no entry in 'annotations'")
        valid = require(a, "joint_valid", paths["data"], f"annotation of image {iid}")
        check_joint_list(valid, paths["data"], f"annotation of image {iid} joint_valid")
        img["img_id"][i] = iid
        img["img_frame"][i] = frame_rows[(cap, fr)]
        img["img_cam"][i] = cam_rows[(cap, cam)]
        img["img_valid"][i] = [bool(v[0] if isinstance(v, list) else v) for v in valid]
        img["img_hand_type"][i] = HAND_TYPES.get(a.get("hand_type", "interacting"), 2)
        img["img_size"][i] = (int(require(im, "width", paths["data"], where)), int(require(im, "height", paths["data"], where)))
        names.append(str(require(im, "file_name", paths["data"], where)))
        seqs.append(str(im.get("seq_name", "")))
    del data, anns
    extra = read_json(paths["extra"]) if paths["extra"].exists() else {}
    vis = extra.get("visibility", {})
    for i, iid in enumerate(img["img_id"].tolist()):
        v = vis.get(str(iid))
        if v is not None:
            check_joint_list(v, paths["extra"], f"visibility of image {iid}")
            img["img_vis"][i] = np.asarray(v, np.int8)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    arrays = dict(img)
    nb, arrays["img_name_off"] = _blob(names)
    sb, arrays["img_seq_off"] = _blob(seqs)
    cb, arrays["cam_name_off"] = _blob(cam_names)
    arrays.update(
        frame_key=np.asarray(frame_key, np.int64).reshape(R, 2), frame_world=np.asarray(frame_world, np.float32).reshape(R, NUM_JOINTS, 3),
        frame_mano=frame_mano, frame_has_mano=frame_has, cam_key=np.asarray(cam_key, np.int64),
        cam_pos=np.asarray(cam_pos, np.float64), cam_rot=np.asarray(cam_rot, np.float64),
        cam_focal=np.asarray(cam_focal, np.float64), cam_princpt=np.asarray(cam_pp, np.float64),
    )
    for k, a in arrays.items():
        np.save(tmp / f"{k}.npy", a)
    for name, blob in (("names.bin", nb), ("seqs.bin", sb), ("cams.bin", cb)):
        (tmp / name).write_bytes(blob)
    manifest = {"version": INDEX_VERSION, "sources": _sources(paths), "hand_model": extra.get("hand_model"), "num_images": I}
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    if out.exists():
        shutil.rmtree(out)
    os.rename(tmp, out)


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
            import fcntl

            self.folder.parent.mkdir(parents=True, exist_ok=True)
            # one builder at a time (DDP ranks, data workers); the others wait and reuse it
            with open(self.folder.parent / f".{split}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not self._fresh():
                    build_index(self.paths, self.folder)
                    self.rebuilt = True
        self.manifest = json.loads((self.folder / "manifest.json").read_text())
        self.a = {p.stem: np.load(p, mmap_mode="r") for p in self.folder.glob("*.npy")}
        self._blobs = {n: (self.folder / f"{n}.bin").read_bytes() for n in ("names", "seqs", "cams")}

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
