"""Lifting 2D keypoints to a distribution of 3D two-hand poses (docs/lifting.md).

A model of the keypoint-evidence protocol (``model.backbone=keypoints``) takes, per image, the
42 two-hand 2D joints in **InterHand order** (right hand 0-20, left 21-41; per finger tip ->
base, thumb first, wrist last) in pixels of the full image, a visibility or confidence per
joint, and the camera (``K``, or focal length and principal point). The crop box is built from
the visible keypoints exactly as the dataset builds its crops (:func:`~handflow.geometry.camera.square_bbox`
enlarged by :data:`~handflow.data.interhand.BBOX_SCALE`), the evidence from the crop-frame
joints (no noise at inference), and the model returns the z = 0 estimate and samples as the
same :class:`~handflow.inference.Prediction` objects as image prediction.

Without a checkpoint the shipped lifting model (:data:`LIFTING_MODEL`, weights only, read with
``weights_only=True``) is used.

Examples:
    >>> preds = predict_from_keypoints(None, uv, conf, K=K, samples=100)   # doctest: +SKIP
    >>> preds[0].sample_joints.shape                                       # doctest: +SKIP
    torch.Size([100, 42, 3])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from handflow.config import Config
from handflow.constants import NUM_JOINTS
from handflow.data.interhand import BBOX_SCALE
from handflow.errors import InputError, MissingFileError
from handflow.geometry.camera import crop_intrinsics, square_bbox
from handflow.inference import Prediction, check_finite, parse_camera, write_predictions
from handflow.models.base import decode_joints
from handflow.models.checkpoint import load_model
from handflow.models.keypoint_encoder import build_evidence
from handflow.models.shipped import shipped_path
from handflow.predictor import hand_model_of

if TYPE_CHECKING:
    from handflow.hand.base import HandModel
    from handflow.models.base import HandPoseModel

__all__ = ["predict_from_keypoints", "lifting_command", "read_keypoints_file", "load_lifting_model",
           "KeypointInput", "LiftingModel", "LIFTING_MODEL", "HAND_ORDERS", "VISIBLE_THRESHOLD"]

#: the name of the shipped lifting model (:data:`handflow.models.shipped.SHIPPED`; docs/lifting.md: how it was
#: trained and tested)
LIFTING_MODEL = "lifting"
#: joint orders understood in the JSON input (``"hand_order"``)
HAND_ORDERS = ("interhand",)
#: a joint with confidence above this is visible evidence; the others are hidden (coordinates ignored)
VISIBLE_THRESHOLD = 0.5


class KeypointInput:
    """One image's validated input: ``name``, ``keypoints`` (42, 2) px, ``confidence`` (42,),
    ``K`` (3, 3) float64 full-image intrinsics."""

    def __init__(self, name: str, keypoints: Tensor, confidence: Tensor, K: Tensor) -> None:
        self.name, self.keypoints, self.confidence, self.K = name, keypoints, confidence, K


# ----------------------------------------------------------------------------- model
@dataclass
class LiftingModel:
    """A keypoint-protocol network with its hand model and config (what lifting needs of a
    training module; no Lightning)."""

    model: HandPoseModel
    hand_model: HandModel
    cfg: Config

    def eval(self) -> LiftingModel:
        self.model.eval()
        return self


def load_lifting_model(model_or_path: Any = None) -> Any:
    """A keypoint-protocol model in eval mode (``.model``, ``.hand_model``, ``.cfg``): ``None``
    (the shipped model), a checkpoint / exported weights path (read with ``weights_only=True``,
    without Lightning), or a loaded module.

    Raises:
        MissingFileError: no such file (or the shipped model is missing from the install).
        InputError: a model that is not a keypoint-protocol model (an image model).
    """
    if model_or_path is None:
        model_or_path = shipped_path(LIFTING_MODEL)
    if isinstance(model_or_path, (str, Path)):
        model, cfg = load_model(model_or_path)
        module = LiftingModel(model, hand_model_of(cfg), cfg)
    else:
        module = model_or_path
    if not module.model.uses_keypoints:
        raise InputError(f"{model_or_path if isinstance(model_or_path, (str, Path)) else 'the model'} is an image model "
                         f"(model.backbone={module.cfg.model.backbone}): lifting needs a model trained with "
                         "model.backbone=keypoints")
    return module.eval()


# ----------------------------------------------------------------------------- validation
def _as_f64(value: Any) -> Tensor:
    """Numbers (nested lists, arrays, tensors, lists of 0-d tensors) -> float64 tensor."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(value, dtype=np.float64))


def _finite_numbers(value: Any, shape: tuple[int, ...], what: str) -> Tensor:
    """``value`` as a float64 tensor of ``shape`` with finite entries; InputError otherwise."""
    try:
        t = _as_f64(value)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{what} must be numbers of shape {shape}, got {str(value)[:60]}") from None
    if tuple(t.shape) != shape:
        raise InputError(f"{what} must have shape {shape}, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{what} holds NaN or inf (give 0, 0 with confidence 0 for an undetected joint)")
    return t


def _camera_matrix(K: Any, focal: Any, princpt: Any, where: str) -> Tensor:
    """(3, 3) float64 intrinsics from ``K`` or ``focal`` (f or [fx, fy]) + ``princpt`` [cx, cy],
    checked as image prediction checks cameras (:func:`handflow.inference.parse_camera`)."""
    if K is None and (focal is None or princpt is None):
        raise InputError(f"{where}: no camera: give \"K\" (3 × 3, pixels) or \"focal\" (f or [fx, fy]) and \"princpt\" [cx, cy]")
    if K is None:
        try:
            f = _as_f64(focal).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"{where}: focal must be f or [fx, fy] in pixels, got {str(focal)[:60]}") from None
        camera = {"focal": f[0] if f.numel() == 1 else f, "princpt": princpt}
    else:
        camera = {"K": K}
    return parse_camera(camera, f"{where}: camera").matrix(0, 0)[0]


def make_input(name: str, keypoints: Any, confidence: Any = None, K: Any = None, focal: Any = None, princpt: Any = None,
               hand_order: str = "interhand") -> KeypointInput:
    """Validate one image's input. ``keypoints``: (42, 2) pixels, or (42, 3) ``[u, v, confidence]``
    rows when ``confidence`` is None; ``confidence`` (42,) in [0, 1] (a bool visibility works).

    Raises:
        InputError: (one line) unknown hand order, wrong joint count, NaN/inf, confidence outside
            [0, 1], no visible joint, missing or malformed camera.
    """
    where = f"image {name!r}"
    if hand_order not in HAND_ORDERS:
        raise InputError(f"{where}: unknown hand_order {hand_order!r}; handflow reads {list(HAND_ORDERS)} (right hand "
                         "joints 0-20 then left 21-41, per finger tip to base, thumb first, wrist last)")
    try:
        rows = len(keypoints)
    except TypeError:
        raise InputError(f"{where}: keypoints must be a list of {NUM_JOINTS} joints") from None
    if rows != NUM_JOINTS:
        raise InputError(f"{where}: keypoints must hold {NUM_JOINTS} joints in InterHand order (21 right then 21 left), "
                         f"got {rows}")
    cols = 2 if confidence is not None else 3
    kp = _finite_numbers(keypoints, (NUM_JOINTS, cols), f"{where}: keypoints ([u, v{', confidence' if cols == 3 else ''}] rows)")
    conf = kp[:, 2] if confidence is None else _finite_numbers(confidence, (NUM_JOINTS,), f"{where}: confidence")
    if bool(((conf < 0) | (conf > 1)).any()):
        raise InputError(f"{where}: confidences must be in [0, 1], got min {float(conf.min()):g}, max {float(conf.max()):g}")
    if not bool((conf > VISIBLE_THRESHOLD).any()):
        raise InputError(f"{where}: no joint has confidence > {VISIBLE_THRESHOLD}: nothing to lift")
    return KeypointInput(str(name), kp[:, :2].clone(), conf.clone(), _camera_matrix(K, focal, princpt, where))


def read_keypoints_file(path: str | Path) -> list[KeypointInput]:
    """The images of a keypoints JSON file (format in docs/lifting.md)::

        {"hand_order": "interhand",                        # optional, the only order read
         "images": [{"name": "img1", "keypoints": [[u, v, conf] × 42],
                     "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]}      # or "focal" + "princpt"
                    , ...]}

    A top-level ``"K"`` or ``"focal"`` + ``"princpt"`` is the camera of images without one.

    Raises:
        MissingFileError: no such file. InputError: malformed JSON or any invalid image (one line).
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"keypoints file not found: {p}")
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{p} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not doc["images"]:
        raise InputError(f"{p} must hold {{\"images\": [{{\"name\", \"keypoints\", \"K\" | \"focal\" + \"princpt\"}}, ...]}} "
                         "with at least one image (docs/lifting.md)")
    order = doc.get("hand_order", "interhand")
    out, seen = [], set()
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or "keypoints" not in im:
            raise InputError(f"{p}: images[{i}] must be an object with \"keypoints\" (42 rows [u, v, confidence])")
        name = str(im.get("name", f"image{i:04d}"))
        if name in seen:
            raise InputError(f"{p}: two images are named {name!r}; names must be unique (they name the outputs)")
        seen.add(name)
        own = any(k in im for k in ("K", "focal", "princpt"))  # an image's own camera, else the top-level one
        cam = {k: im.get(k) if own else doc.get(k) for k in ("K", "focal", "princpt")}
        hand_order: Any = im.get("hand_order", order)  # make_input checks it
        out.append(make_input(name, im["keypoints"], None, cam["K"], cam["focal"], cam["princpt"], hand_order))
    return out


# ----------------------------------------------------------------------------- prediction
def crop_geometry(keypoints: Tensor, visible: Tensor, K: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """The dataset's crop convention on user keypoints: the square box around the visible
    keypoints enlarged by ``BBOX_SCALE``, its crop intrinsics, and the keypoints in the crop.

    Args:
        keypoints: (B, 42, 2) full-image pixels; visible: (B, 42) bool (≥ 1 per image).
        K: (B, 3, 3) full-image intrinsics; size: crop side S.

    Returns:
        box (B, 4) ``[x0, y0, side, side]``, K_crop (B, 3, 3), joints_2d (B, 42, 2) crop pixels (float64).
    """
    box = square_bbox(keypoints.double(), visible, scale=BBOX_SCALE)
    Kc = crop_intrinsics(K.double(), box, size)
    j2d = (keypoints.double() - box[:, None, :2]) * (size / box[:, None, 2:3])
    return box, Kc, j2d


def _drawn_keypoints(j2d: Tensor, visible: Tensor, size: int) -> Tensor:
    """(3, S, S) light-grey canvas with the visible keypoints as dots (right red, left blue):
    the ``crop`` of a lifting :class:`~handflow.inference.Prediction`."""
    img = torch.full((3, size, size), 0.9)
    r = max(1, size // 64)
    for j in range(NUM_JOINTS):
        if not visible[j]:
            continue
        u, v = int(j2d[j, 0]), int(j2d[j, 1])
        color = torch.tensor([0.85, 0.25, 0.1]) if j < NUM_JOINTS // 2 else torch.tensor([0.1, 0.4, 0.75])
        img[:, max(0, v - r): max(0, v + r + 1), max(0, u - r): max(0, u + r + 1)] = color[:, None, None]
    return img


@torch.no_grad()
def predict_from_keypoints(model_or_path: Any, keypoints: Any, visibility: Any, K: Any = None, focal: Any = None,
                           princpt: Any = None, samples: int = 100, seed: int = 0,
                           names: Sequence[str] | None = None) -> list[Any]:
    """Lift B images' 2D keypoints to distributions of 3D two-hand poses.

    Args:
        model_or_path: a keypoint-protocol checkpoint path, a loaded module, or None (the
            shipped model, :data:`LIFTING_MODEL`).
        keypoints: (B, 42, 2) full-image pixels, InterHand order (right 0-20, left 21-41).
        visibility: (B, 42) visibility (bool) or confidence in [0, 1]; joints above
            :data:`VISIBLE_THRESHOLD` are the evidence, the others are hidden.
        K: (B, 3, 3) or (3, 3) intrinsics in pixels; or ``focal`` (f, [fx, fy] or (B, 2)) and
            ``princpt`` ([cx, cy] or (B, 2)).
        samples: S ≥ 0 samples per image; seed: sampling seed.
        names: B names (the outputs' names; default ``image0000`` ...).

    Returns:
        B :class:`~handflow.inference.Prediction` (``z0_joints`` (42, 3), ``sample_joints``
        (S, 42, 3) camera-frame mm, parameters, ``K_crop``; ``crop`` is a drawing of the
        visible keypoints), as :func:`handflow.predict` returns for images.

    Raises:
        InputError: wrong joint count, NaN, confidence outside [0, 1], a missing camera, an
            image model. ModelOutputError: a non-finite output.
    """
    try:
        kp, vis = _as_f64(keypoints), None if visibility is None else _as_f64(visibility)
    except (TypeError, ValueError, RuntimeError):
        raise InputError("keypoints and visibility must be numbers: (B, 42, 2) pixels and (B, 42) values in [0, 1]") from None
    if kp.dim() == 2:
        kp = kp[None]
    if kp.dim() != 3:
        raise InputError(f"keypoints must be (B, {NUM_JOINTS}, 2) pixels, got shape {tuple(kp.shape)}")
    B = kp.shape[0]
    if vis is None or vis.numel() != B * NUM_JOINTS:
        raise InputError(f"visibility must be (B, {NUM_JOINTS}) visibility or confidence values for B = {B} images, got "
                         f"{None if vis is None else tuple(vis.shape)}")
    vis = vis.reshape(B, NUM_JOINTS)
    names = [f"image{b:04d}" for b in range(B)] if names is None else list(names)
    if len(names) != B:
        raise InputError(f"names must give one name per image ({B}), got {len(names)}")

    def per_image(v: Any, b: int, shape: tuple[int, ...]) -> Any:
        if v is None:
            return None
        t = _as_f64(v)
        return t[b] if t.dim() == len(shape) + 1 else t

    inputs = [make_input(names[b], kp[b], vis[b], per_image(K, b, (3, 3)), per_image(focal, b, (2,)), per_image(princpt, b, (2,)))
              for b in range(B)]
    return _predict_inputs(load_lifting_model(model_or_path), inputs, samples, seed)


def _predict_inputs(module: Any, inputs: list[KeypointInput], samples: int, seed: int) -> list[Any]:
    """Validated inputs -> Predictions (one batch)."""
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
        raise InputError(f"samples must be an integer >= 0, got {samples!r}")
    size, model = module.cfg.data.image_size, module.model
    kp = torch.stack([i.keypoints for i in inputs])
    visible = torch.stack([i.confidence for i in inputs]) > VISIBLE_THRESHOLD
    K = torch.stack([i.K for i in inputs])
    box, Kc, j2d = crop_geometry(kp, visible, K, size)
    valid = torch.ones_like(visible)  # both hands are present: every joint has a place, hidden or not
    ev = build_evidence(j2d, visible, valid, Kc, size)  # no noise at inference
    g = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    res = model.predict(ev.to(dev), samples, g)
    y = torch.cat([res["z0"][:, None], res["samples"]], 1)
    J = decode_joints(y, Kc.float().to(dev), size, module.hand_model).cpu()
    preds = []
    for b, inp in enumerate(inputs):
        p = Prediction(Path(inp.name), res["z0"][b].cpu(), res["samples"][b].cpu(), J[b, 0], J[b, 1:], Kc[b].float(),
                       _drawn_keypoints(j2d[b], visible[b], size), float(inp.K[0, 0]), False, K=inp.K, box=box[b])
        check_finite(p, repr(inp.name))
        preds.append(p)
    return preds


def lifting_command(keypoints_file: str | Path, checkpoint: str | Path | None, out: str | Path, samples: int = 100,
                    seed: int = 0, meshes: str | None = None, html: bool = True) -> list[str]:
    """``handflow predict --keypoints FILE``: read and validate ``keypoints_file`` (everything is
    checked before the model is loaded), lift every image with ``checkpoint`` (None: the
    shipped model), write ``OUT/<name>.npz/.png[/.html]`` as image prediction does
    (:func:`handflow.inference.write_predictions`). Returns one summary line per image.

    Raises:
        MissingFileError, InputError: a missing file or invalid input (one line each).
    """
    inputs = read_keypoints_file(keypoints_file)
    module = load_lifting_model(checkpoint)
    preds = _predict_inputs(module, inputs, samples, seed)
    return write_predictions(preds, out, module, meshes=meshes, html=html)
