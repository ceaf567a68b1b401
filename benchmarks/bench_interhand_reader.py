"""InterHand2.6M reader costs: building the on-disk index (streamed) vs a plain ``json.load``
of the same annotation files (time and peak Python memory), reopening the memory-mapped
index, and items per second on a synthetic set (with and without augmentation).

    OMP_NUM_THREADS=1 python benchmarks/bench_interhand_reader.py [--frames 4000 --cameras 8]

The annotation files are written in the real format (no images needed for the index part).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from handflow.constants import NUM_JOINTS


def write_annotations(root: Path, frames: int, cameras: int, split: str = "train") -> int:
    """Real-format data/camera/joint_3d/MANO_NeuralAnnot files for ``frames`` x ``cameras`` images."""
    rng = np.random.default_rng(0)
    ann = root / "annotations" / split
    ann.mkdir(parents=True, exist_ok=True)
    cams = [str(400000 + c) for c in range(cameras)]
    camera = {"0": {"campos": {c: rng.normal(size=3).tolist() for c in cams},
                    "camrot": {c: np.eye(3).tolist() for c in cams},
                    "focal": {c: [1260.0, 1260.0] for c in cams}, "princpt": {c: [167.0, 256.0] for c in cams}}}
    j3d, mano, images, anns = {"0": {}}, {"0": {}}, [], []
    for f in range(frames):
        j3d["0"][str(f)] = {"world_coord": (rng.normal(size=(NUM_JOINTS, 3)) * 50 + [0, 0, 1000]).tolist(),
                            "joint_valid": [[True]] * NUM_JOINTS, "hand_type": "interacting", "hand_type_valid": True}
        hand = {"pose": rng.normal(size=48).tolist(), "shape": rng.normal(size=10).tolist(), "trans": rng.normal(size=3).tolist()}
        mano["0"][str(f)] = {"right": hand, "left": hand}
        for c in cams:
            iid = len(images)
            images.append({"id": iid, "file_name": f"Capture0/0000_seq/cam{c}/image{f}.jpg", "width": 334, "height": 512,
                           "capture": 0, "subject": 0, "seq_name": "0000_seq", "camera": c, "frame_idx": f})
            anns.append({"id": iid, "image_id": iid, "bbox": [0.0, 0.0, 100.0, 100.0], "joint_valid": [[1]] * NUM_JOINTS,
                         "hand_type": "interacting", "hand_type_valid": 1})
    for kind, obj in (("data", {"images": images, "annotations": anns}), ("camera", camera), ("joint_3d", j3d),
                      ("MANO_NeuralAnnot", mano)):
        (ann / f"InterHand2.6M_{split}_{kind}.json").write_text(json.dumps(obj))
    return len(images)


def measure(fn) -> tuple[float, float]:
    """(seconds without tracing, peak traced MiB)."""
    t = time.perf_counter()
    fn()
    sec = time.perf_counter() - t
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return sec, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=4000)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--items", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from handflow.data.ih_json import annotation_paths
    from handflow.data.index import SplitIndex, build_index

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ih"
        n = write_annotations(root, args.frames, args.cameras)
        paths = annotation_paths(root, "train")
        size = sum(p.stat().st_size for p in paths.values() if p.exists()) / 2**20
        print(f"annotations: {n} images, {args.frames} frames, {size:.1f} MiB of JSON")

        def plain() -> None:
            for k in ("camera", "joint_3d", "MANO_NeuralAnnot", "data"):
                with open(paths[k]) as f:
                    json.load(f)

        t_plain, m_plain = measure(plain)
        t_build, m_build = measure(lambda: build_index(paths, Path(tmp) / "cache" / "train"))
        print(f"{'':32s}{'seconds':>10s}{'peak MiB':>10s}")
        print(f"{'json.load of the 4 files':32s}{t_plain:10.2f}{m_plain:10.1f}")
        print(f"{'build_index (streamed)':32s}{t_build:10.2f}{m_build:10.1f}")
        print(f"ratio build/json.load: time {t_build / t_plain:.2f}x, peak memory {m_build / m_plain:.2f}x")
        t = time.perf_counter()
        idx = SplitIndex(root, "train", cache_dir=Path(tmp) / "cache")
        ms = 1e3 * (time.perf_counter() - t)
        print(f"reopen the memory-mapped index: {ms:.1f} ms ({len(idx)} images, rebuilt={idx.rebuilt})")

        from handflow.data import InterHandDataset
        from handflow.data.synth.generate import SynthConfig, generate

        syn = Path(tmp) / "synth"
        generate(syn, SynthConfig(frames=8, cameras=8, image_size=256, seed=0), progress=False)
        for aug in (False, True):
            ds = InterHandDataset(syn, "train", 128, augment=aug)
            m = min(args.items, len(ds))
            ds[0]
            t = time.perf_counter()
            for i in range(m):
                ds[i]
            dt = time.perf_counter() - t
            t = time.perf_counter()
            for i in range(m):
                ds.annotation(i)
            da = time.perf_counter() - t
            print(f"synthetic 256 px -> 128 px crops, augment={aug!s:5s}: {m / dt:7.1f} items/s, "
                  f"annotation only {m / da:7.1f} items/s")


if __name__ == "__main__":
    main()
