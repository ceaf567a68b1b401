"""A small InterHand2.6M-format dataset written by hand in the exact real layout
(``reference/formats.md`` s. 1): real-style ``file_name`` paths, ``camera`` as str,
``joint_valid`` as 42×[int] in data.json and 42×[bool] in joint_3d.json, ``[1,1,1]``
placeholders for invalid joints, a right-only frame with ``"left": null``, portrait and
landscape images with dots drawn at the projected joints. No handflow writer is used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from handflow.geometry import axis_angle_to_matrix, intrinsics, project, world_to_camera
from handflow.hand import load_hand_model
from handflow.hand.neuralannot import camera_to_neuralannot

CAMERAS = {  # name: (campos, yaw about world y, width, height, focal, princpt)
    "400026": ([0.0, 0.0, -1100.0], 0.0, 334, 512, [1261.5, 1262.0], [167.3, 256.1]),
    "400041": ([700.0, -50.0, -850.0], -0.7, 512, 334, [1270.2, 1270.9], [255.8, 166.4]),
}


def _camrot(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # world->camera, looks at the origin


def write_fixture(root: Path, split: str = "test", left_missing_frame: bool = True, model=None) -> dict:
    """Write 2 frames × 2 cameras; returns ground truth for the tests. The NeuralAnnot
    parameters belong to ``model`` (default OpenHand), world joints are that model's joints."""
    model = load_hand_model("openhand").double() if model is None else model.double()
    g = torch.Generator().manual_seed(0)
    images, annotations, j3d, mano, truth = [], [], {}, {}, {}
    cams = {"campos": {}, "camrot": {}, "focal": {}, "princpt": {}}
    for name, (pos, yaw, _w, _h, f, pp) in CAMERAS.items():
        cams["campos"][name], cams["camrot"][name] = pos, _camrot(yaw).tolist()
        cams["focal"][name], cams["princpt"][name] = f, pp
    eye, zero = torch.eye(3, dtype=torch.float64)[None], torch.zeros(1, 3, dtype=torch.float64)
    image_id = 1000
    for k, frame in enumerate((69148, 69150)):
        world, params = [], {}
        for side, off in (("right", [-40.0, 0.0, 0.0]), ("left", [40.0, 10.0, 20.0])):
            rot = torch.eye(3, dtype=torch.float64).expand(1, 16, 3, 3).clone()
            rot[0, 0] = axis_angle_to_matrix(torch.tensor([1.4, 0.3 * k, 0.2], dtype=torch.float64))
            rot[0, 1:] = axis_angle_to_matrix(torch.randn(15, 3, generator=g, dtype=torch.float64) * 0.2)
            betas = torch.randn(1, 10, generator=g, dtype=torch.float64) * 0.5
            wrist = torch.tensor([off], dtype=torch.float64)
            world.append(model(rot, betas, side).joints[0] + wrist[0])
            pose, shape, trans = camera_to_neuralannot(rot, betas, wrist, eye, zero, model, side)
            params[side] = {"pose": pose[0].tolist(), "shape": shape[0].tolist(), "trans": trans[0].tolist()}
        world = torch.cat(world).numpy()
        valid = np.ones(42, bool)
        if k == 1 and left_missing_frame:  # right-only frame: left invalid, placeholders
            valid[21:] = False
            world[21:] = 1.0
            params["left"] = None
        j3d.setdefault("3", {})[str(frame)] = {"world_coord": world.tolist(), "joint_valid": [[bool(v)] for v in valid],
                                              "hand_type": "interacting" if valid.all() else "right", "hand_type_valid": True}
        mano.setdefault("3", {})[str(frame)] = params
        for name, (pos, yaw, w, h, f, pp) in CAMERAS.items():
            fname = f"Capture3/0390_dh_touchROM/cam{name}/image{frame}.jpg"
            K = intrinsics(*(torch.tensor(v, dtype=torch.float64) for v in (f[0], f[1], pp[0], pp[1])))
            cam = world_to_camera(torch.from_numpy(world), torch.tensor(_camrot(yaw)), torch.tensor(pos, dtype=torch.float64))
            uv = project(cam, K, eps=0).numpy()
            img = Image.new("RGB", (w, h), (40, 40, 40))
            d = ImageDraw.Draw(img)
            for j in np.nonzero(valid)[0]:
                x, y = uv[j]
                d.ellipse([x - 6, y - 6, x + 6, y + 6], fill=(255, 255, 255))
            path = root / "images" / split / fname
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, quality=95)
            images.append({"id": image_id, "file_name": fname, "width": w, "height": h, "capture": 3, "subject": 3,
                           "seq_name": "0390_dh_touchROM", "camera": name, "frame_idx": frame})
            p = uv[valid]
            lo, hi = p.min(0), p.max(0)
            c, s = (lo + hi) / 2, (hi - lo) * 1.2
            annotations.append({"id": image_id, "image_id": image_id, "bbox": [*(c - s / 2).tolist(), *s.tolist()],
                                "joint_valid": [[int(v)] for v in valid], "hand_type": "interacting" if valid.all() else "right",
                                "hand_type_valid": 1})
            truth[image_id] = {"cam": cam.numpy(), "valid": valid, "uv": uv, "K": K.numpy(), "file": path}
            image_id += 1
    ann = root / "annotations" / split
    ann.mkdir(parents=True, exist_ok=True)
    write_skeleton(root / "annotations" / "skeleton.txt")
    (ann / f"InterHand2.6M_{split}_data.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    (ann / f"InterHand2.6M_{split}_camera.json").write_text(json.dumps({"3": cams}))
    (ann / f"InterHand2.6M_{split}_joint_3d.json").write_text(json.dumps(j3d))
    (ann / f"InterHand2.6M_{split}_MANO_NeuralAnnot.json").write_text(json.dumps(mano))
    return truth


def write_skeleton(path: Path) -> None:
    """The real ``skeleton.txt`` (formats.md s. 1.1), written from the table, not from handflow."""
    fingers = ("thumb", "index", "middle", "ring", "pinky")
    lines = ["# keypoint name, keypoint index, parent index"]
    for h, prefix in enumerate(("r_", "l_")):
        off = 21 * h
        for f, finger in enumerate(fingers):
            for k, level in enumerate((4, 3, 2, 1)):
                jid = off + 4 * f + k
                parent = jid + 1 if level > 1 else off + 20
                lines.append(f"{prefix}{finger}{level} {jid} {parent}")
        lines.append(f"{prefix}wrist {off + 20} -1")
    path.write_text("\n".join(lines) + "\n")
