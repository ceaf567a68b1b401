"""One sequence of the plan -> rendered JPEGs and its InterHand2.6M records.

For every frame and every camera of the sequence's capture: both hands are transformed to
the camera, a camera where a hand is out of view (fewer than ``MIN_JOINTS_IN_VIEW`` joints
projecting into the image, or too few pixels after rendering) is dropped for that frame
(counted as ``dropped_views``); otherwise the image is rendered with the subject's skin
tones, a random light and background (RNG per image), encoded to JPEG and written
atomically, and its ``data.json`` records and per-joint visibility are returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from handflow.constants import NUM_BETAS, NUM_JOINTS
from handflow.data.synth.cameras import Camera, dome_cameras
from handflow.data.synth.ih_writer import atomic_write_bytes, encode_jpeg, image_rel_path
from handflow.data.synth.scenes import sample_sequence
from handflow.geometry import project
from handflow.seeding import stream

if TYPE_CHECKING:
    from handflow.data.synth.plan_types import Backends, SeqPlan
    from handflow.data.synth.settings import SynthConfig

__all__ = ["SeqResult", "process_sequence", "subject_betas", "bbox_from_joints", "RIGHT_HAND_ID", "LEFT_HAND_ID"]

RIGHT_HAND_ID = 0
LEFT_HAND_ID = 1
MIN_JOINTS_IN_VIEW = 3
MIN_HAND_PIXEL_FRACTION = 2e-4
BBOX_SCALE = 1.2
BETA_STD = 0.7
SIDES = ("right", "left")


@dataclass
class SeqResult:
    """Records of one sequence (plain JSON-ready Python objects)."""

    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    joint_3d: dict[str, dict] = field(default_factory=dict)
    mano: dict[str, dict] = field(default_factory=dict)
    visibility: dict[str, list[int]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def subject_betas(seed: int, subject: int) -> Tensor:
    """(10,) float64 shape of a subject, ``N(0, BETA_STD²)`` (both hands share it)."""
    return torch.randn(NUM_BETAS, generator=stream(seed, "subject", subject), dtype=torch.float64) * BETA_STD


def bbox_from_joints(uv: np.ndarray, valid: np.ndarray, scale: float = BBOX_SCALE) -> list[float]:
    """``[x, y, w, h]``: tight box of the valid projected joints (N, 2), scaled about its
    centre (the real data.json rule, IH-repo ``get_bbox``)."""
    p = uv[valid.astype(bool)]
    x0, y0 = p.min(0)
    x1, y1 = p.max(0)
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * scale, (y1 - y0) * scale
    return [float(cx - w / 2), float(cy - h / 2), float(w), float(h)]


def _to_uint8(rgb: Any) -> np.ndarray:
    a = rgb.detach().cpu().numpy() if isinstance(rgb, Tensor) else np.asarray(rgb)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def process_sequence(plan: SeqPlan, config: SynthConfig, backends: Backends, root: Path, renderer: Any,
                     timers: dict[str, float]) -> SeqResult:
    """Generate one :class:`~handflow.data.synth.plan_types.SeqPlan`. ``timers`` accumulates
    seconds per stage (sampling, skinning, rendering, encoding, writing)."""
    t0 = time.perf_counter()
    model = backends.model
    S = config.image_size
    seed, split = config.seed, plan.split
    betas = subject_betas(seed, plan.subject)
    g_subj = stream(seed, "subject-skin", plan.subject)
    tones = {s: backends.random_skin_tone(g_subj) for s in SIDES}
    cams: list[Camera] = dome_cameras(config.cameras_for(split), S, stream(seed, split, "capture", plan.capture))
    seq = sample_sequence(plan.length, model, backends.collide, {s: betas for s in SIDES},
                          stream(seed, split, "sequence", plan.index), template=plan.template)
    t1 = time.perf_counter()
    timers["sampling"] = timers.get("sampling", 0.0) + t1 - t0
    L = plan.length
    B = betas.expand(L, -1)
    outs = {s: model(seq.rotmats[s], B, s).translate(seq.wrists[s]) for s in SIDES}
    eye, zero = torch.eye(3, dtype=torch.float64).expand(L, 3, 3), torch.zeros(L, 3, dtype=torch.float64)
    params = {s: backends.to_neuralannot(seq.rotmats[s], B, seq.wrists[s], eye, zero, model, s) for s in SIDES}
    faces = {s: model.faces_for(s) for s in SIDES}
    parts = model.part_labels
    t2 = time.perf_counter()
    timers["skinning"] = timers.get("skinning", 0.0) + t2 - t1

    res = SeqResult()
    st = {"frames": L, "sequences": 1, "images": 0, "dropped_views": 0, "hand_occlusion_images": 0,
          "occluded_fraction": []}
    for k in ("collision_rejections", "distance_rejections", "sequence_rejections", "static_fallbacks"):
        st[k] = int(seq.stats.get(k, 0))
    min_px = max(1, int(round(MIN_HAND_PIXEL_FRACTION * S * S)))
    for f in range(L):
        frame_idx = plan.frame_start + f
        gframe = plan.global_frame + f
        jw = torch.cat([outs["right"].joints[f], outs["left"].joints[f]], 0)  # (42, 3) world mm
        res.joint_3d[str(frame_idx)] = {
            "world_coord": [[float(v) for v in row] for row in jw.tolist()],
            "joint_valid": [[True] for _ in range(NUM_JOINTS)],
            "hand_type": "interacting",
            "hand_type_valid": True,
        }
        res.mano[str(frame_idx)] = {
            s: {"pose": [float(v) for v in params[s][0][f].tolist()],
                "shape": [float(v) for v in params[s][1][f].tolist()],
                "trans": [float(v) for v in params[s][2][f].tolist()],
                "hand_model": config.hand_model}
            for s in SIDES
        }
        for ci, cam in enumerate(cams):
            ta = time.perf_counter()
            K = cam.K
            vc = {s: cam.world_to_camera(outs[s].vertices[f]) for s in SIDES}
            jc = cam.world_to_camera(jw)
            uv = project(jc, K)
            inside = (jc[:, 2] > 0) & (uv >= 0).all(-1) & (uv < S).all(-1)
            n_in = inside.view(2, -1).sum(1)
            if bool((n_in < MIN_JOINTS_IN_VIEW).any()):
                st["dropped_views"] += 1
                continue
            g_img = stream(seed, split, "image", gframe, cam.name)
            light = backends.random_light(g_img)
            bg = backends.random_background(S, S, g_img)
            meshes = [backends.make_mesh(vc[s].float(), faces[s], tones[s], parts, hid)
                      for s, hid in (("right", RIGHT_HAND_ID), ("left", LEFT_HAND_ID))]
            K32 = K.float()
            ren = renderer.render(meshes, K32, background=bg, light=light)
            hid_map = _np(ren.hand_id)
            if min((hid_map == RIGHT_HAND_ID).sum(), (hid_map == LEFT_HAND_ID).sum()) < min_px:
                st["dropped_views"] += 1
                timers["rendering"] = timers.get("rendering", 0.0) + time.perf_counter() - ta
                continue
            jr, jl = jc[:NUM_JOINTS // 2].float(), jc[NUM_JOINTS // 2:].float()
            vis_list = backends.joint_visibility(meshes, [jr, jl], K32, (S, S), render=ren)
            vis = np.concatenate([_np(v).astype(bool) for v in vis_list])
            tb = time.perf_counter()
            timers["rendering"] = timers.get("rendering", 0.0) + tb - ta
            uvn = uv.numpy()
            # one hand hides the other: an in-image joint whose pixel shows the other hand
            px = np.clip(np.floor(uvn).astype(np.int64), 0, S - 1)
            owner = hid_map[px[:, 1], px[:, 0]]
            other = np.array([LEFT_HAND_ID] * (NUM_JOINTS // 2) + [RIGHT_HAND_ID] * (NUM_JOINTS // 2))
            ins = inside.numpy()
            if bool(((owner == other) & ~vis & ins).any()):
                st["hand_occlusion_images"] += 1
            st["occluded_fraction"].append(float(1.0 - vis.mean()))
            jpeg = encode_jpeg(_to_uint8(ren.rgb))
            tc = time.perf_counter()
            timers["encoding"] = timers.get("encoding", 0.0) + tc - tb
            rel = image_rel_path(plan.capture, plan.seq_name, cam.name, frame_idx)
            atomic_write_bytes(Path(root) / "images" / split / rel, jpeg)
            image_id = gframe * config.id_stride + ci
            res.images.append({"id": image_id, "file_name": rel, "width": S, "height": S, "capture": plan.capture,
                               "subject": plan.subject, "seq_name": plan.seq_name, "camera": cam.name,
                               "frame_idx": frame_idx})
            res.annotations.append({"id": image_id, "image_id": image_id,
                                    "bbox": bbox_from_joints(uvn, np.ones(NUM_JOINTS, bool)),
                                    "joint_valid": [[1] for _ in range(NUM_JOINTS)],
                                    "hand_type": "interacting", "hand_type_valid": 1})
            res.visibility[str(image_id)] = [int(v) for v in vis]
            st["images"] += 1
            timers["writing"] = timers.get("writing", 0.0) + time.perf_counter() - tc
    res.stats = st
    return res


def camera_json(cams: list[Camera]) -> dict[str, dict]:
    """Per-capture entry of ``camera.json``: ``{campos|camrot|focal|princpt: {name: value}}``."""
    out: dict[str, dict] = {"campos": {}, "camrot": {}, "focal": {}, "princpt": {}}
    for c in cams:
        for k, v in c.to_json().items():
            out[k][c.name] = v
    return out
