"""``InterHandDataset``: InterHand2.6M folders (real, or the synthetic set in the same layout).

One item (a dict, collate-able by the default collate):

===============  ==============  =========================================================
``image``        (3, S, S) f32   crop around both hands, in [0, 1]
``K``            (3, 3) f32      crop intrinsics (``project(joints_cam, K) == joints_2d``)
``joints_cam``   (42, 3) f32     camera-frame joints, mm (InterHand order)
``joints_2d``    (42, 2) f32     crop pixels
``joint_valid``  (42,) bool      annotation validity (a hand is invalid when its wrist is)
``visible``      (42,) bool      valid, in the crop and not occluded (docs/data.md)
``y``            (218,) f32      parameters (SPEC s. 2); zeros when ``has_params`` is False
``has_params``   bool            both hands have hand-model parameters
``hand_type``    str             right / left / interacting
``meta``         dict            capture, seq, camera, frame, image_id, file_name, index
===============  ==============  =========================================================

The crop box is the square around the projected valid joints of both hands, enlarged by
``BBOX_SCALE = 1.3`` about its centre (joints lie inside the hands; the margin keeps finger
surfaces in view). See ``docs/data.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from handflow.constants import LEFT_ROOT, NUM_HAND_JOINTS, NUM_JOINTS, PARAM_DIM, RIGHT_ROOT, SIDES
from handflow.data.augment import AugmentConfig, color_jitter, sample_augment
from handflow.data.crop import rot_z, warp_to_crop
from handflow.data.ih_json import AnnotationError
from handflow.data.index import SplitIndex
from handflow.geometry.camera import crop_intrinsics, intrinsics, project, square_bbox, world_to_camera
from handflow.hand.neuralannot import neuralannot_to_camera
from handflow.hand.registry import hand_model_named
from handflow.params import pack_hand
from handflow.render import Mesh
from handflow.render import visibility as render_visibility  # module attribute: tests replace joint_visibility

__all__ = ["InterHandDataset", "BBOX_SCALE", "HAND_TYPE_NAMES"]

log = logging.getLogger(__name__)
#: the square crop box around the projected valid joints is enlarged by this factor
BBOX_SCALE = 1.3
HAND_TYPE_NAMES = ("right", "left", "interacting")
VISIBILITY_MODES = ("auto", "extra", "render", "none")
_WARNED: set[str] = set()  # one-time warnings (per process)


def _warn_once(key: str, msg: str, *args: Any) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(msg, *args)


class InterHandDataset(Dataset):
    """InterHand2.6M split reader (real or synthetic). See the module docstring.

    Args:
        root: dataset root (``images/`` and ``annotations/`` inside).
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: crop side S in pixels.
        hand_model: a ``HandModel``, a name for ``load_hand_model`` (``"openhand"``,
            ``"mano"``), or None = the extra file's model, else ``"mano"`` when ``mano_path``
            is given, else no parameters (``has_params`` False, ``y`` zeros).
        mano_path: MANO files when ``hand_model="mano"``.
        augment: False, True (default ranges) or an :class:`AugmentConfig`.
        seed: augmentation seed (items depend on (seed, index, epoch); see :meth:`set_epoch`).
        visibility: ``"extra"`` (synthetic file), ``"render"`` (render the hand-model meshes),
            ``"none"`` (visible = valid), ``"auto"`` (extra if present, else render when a
            hand model is available, else none with a one-time warning).
        on_error: ``"raise"`` or ``"skip"`` (a missing/corrupt image is logged and the next
            item returned).
        cache_dir: where to build the index when ``root`` is read-only.
        subset: v0.0 subset folder name (``all``, ``human_annot``, ``machine_annot``).
        load_images: False leaves ``image`` out of the items (no decoding; the crop camera,
            joints and parameters are the same). For heads trained on cached features.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_size: int = 128,
        hand_model: Any = None,
        mano_path: str | Path | None = None,
        augment: bool | AugmentConfig = False,
        seed: int = 0,
        visibility: str = "auto",
        on_error: str = "raise",
        cache_dir: str | Path | None = None,
        subset: str | None = None,
        load_images: bool = True,
    ) -> None:
        if visibility not in VISIBILITY_MODES:
            raise ValueError(f"visibility must be one of {VISIBILITY_MODES}, got {visibility!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.root, self.split, self.size = Path(root), split, int(image_size)
        self.index = SplitIndex(root, split, cache_dir=cache_dir, subset=subset)
        self.image_dir = self.root / "images" / split
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"missing image folder: {self.image_dir}")
        self.augment = AugmentConfig() if augment is True else (augment or None)
        self.seed, self.epoch, self.on_error = seed, 0, on_error
        self.load_images = bool(load_images)
        if hand_model is None:
            hand_model = self.index.manifest.get("hand_model") or ("mano" if mano_path is not None else None)
            if hand_model == "mano" and mano_path is None:  # MANO files are never shipped: degrade, don't fail
                _warn_once("no-mano", "%s/%s: the parameters are MANO but no mano_path was given: has_params=False, "
                           "y = 0 (pass mano_path= to use them)", root, split)
                hand_model = None
        if isinstance(hand_model, str):
            hand_model = hand_model_named(hand_model, mano_path)
        self.hand_model = hand_model
        stored = self.index.manifest.get("hand_model")
        if hand_model is not None and stored is not None and getattr(hand_model, "name", stored) != stored:
            raise ValueError(f"{self.index.paths['MANO_NeuralAnnot']} holds {stored!r} parameters but hand_model is "
                             f"{hand_model.name!r}: pass hand_model={stored!r} (or None for the dataset's own model)")
        a = self.index.a
        has_extra_vis = bool((np.asarray(a["img_vis"][: min(len(self.index), 64)]) >= 0).any()) if len(self.index) else False
        if visibility == "auto":
            visibility = "extra" if has_extra_vis else ("render" if self.hand_model is not None else "none")
            if visibility == "none":
                _warn_once("no-visibility", "%s/%s: no visibility file and no hand model: visible = joint_valid "
                           "(pass hand_model= / mano_path= to render it, or visibility='none' to silence this)", root, split)
        elif visibility == "extra" and not has_extra_vis:
            raise ValueError(f"visibility='extra' but {self.index.paths['extra']} holds no visibility (real data: use 'render')")
        elif visibility == "render" and self.hand_model is None:
            raise ValueError("visibility='render' needs a hand model: pass hand_model='mano' with mano_path=, or a HandModel")
        self.visibility = visibility
        self._vis_mem: dict[int, Tensor] = {}
        self._vis_disk: Any = None  # memory map, opened lazily per process

    @property
    def image_size(self) -> int:
        """Crop side S in pixels."""
        return self.size

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_vis_disk"] = None  # reopened in the worker
        return state

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (called by the data module each epoch)."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ geometry
    def _camera(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        a = self.index.a
        c = int(a["img_cam"][i])
        f, pp = a["cam_focal"][c], a["cam_princpt"][c]
        K = intrinsics(torch.tensor(f[0]), torch.tensor(f[1]), torch.tensor(pp[0]), torch.tensor(pp[1])).double()
        return K, torch.from_numpy(np.array(a["cam_rot"][c])), torch.from_numpy(np.array(a["cam_pos"][c]))

    def _hand_params_cam(self, i: int, camrot: Tensor, campos: Tensor) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        """Camera-frame ``(rotmats (16,3,3), betas (10,), root (3,))`` of the hands of image
        ``i`` that have parameters (none without a hand model)."""
        a = self.index.a
        fr = int(a["img_frame"][i])
        has = np.asarray(a["frame_has_mano"][fr])
        if self.hand_model is None or not has.any():
            return {}
        p = torch.from_numpy(np.array(a["frame_mano"][fr], dtype=np.float64))
        out = {}
        for h, side in enumerate(SIDES):
            if not has[h]:
                continue
            with torch.no_grad():
                rot, betas, root = neuralannot_to_camera(p[h : h + 1, :48], p[h : h + 1, 48:58], p[h : h + 1, 58:61],
                                                         camrot[None], campos[None], self.hand_model, side)
            out[side] = (rot[0], betas[0], root[0])
        return out

    def _params_cam(self, i: int, camrot: Tensor, campos: Tensor) -> tuple[dict | None, bool]:
        """Both hands' camera-frame parameters, or ``(None, False)`` when one lacks them."""
        out = self._hand_params_cam(i, camrot, campos)
        return (out, True) if len(out) == len(SIDES) else (None, False)

    def annotation(self, i: int) -> dict[str, Any]:
        """Item ``i`` without the image (no decoding or resampling): every key but ``image``."""
        return self._item(i, with_image=False)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.on_error == "raise":
            return self._item(i, with_image=self.load_images)
        for k in range(len(self)):
            j = (i + k) % len(self)
            try:
                return self._item(j, with_image=self.load_images)
            except (FileNotFoundError, OSError, UnidentifiedImageError, ValueError) as e:
                log.warning("skipping item %d: %s", j, e)
        raise RuntimeError("every item of the dataset failed to load")

    def _item(self, i: int, with_image: bool) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        a = self.index.a
        K, camrot, campos = self._camera(i)
        fr = int(a["img_frame"][i])
        world = torch.from_numpy(np.array(a["frame_world"][fr], dtype=np.float64))
        valid = torch.from_numpy(np.array(a["img_valid"][i]))
        for root_j, sl in ((RIGHT_ROOT, slice(0, NUM_HAND_JOINTS)), (LEFT_ROOT, slice(NUM_HAND_JOINTS, NUM_JOINTS))):
            if not valid[root_j]:
                valid[sl] = False
        if not valid.any():
            raise ValueError(f"{self.index.file_name(i)}: no valid joint, cannot place a crop")
        if not torch.isfinite(world[valid]).all():
            raise ValueError(f"{self.index.paths['joint_3d']}: NaN/inf in valid joints of frame {tuple(a['frame_key'][fr])}")
        joints = world_to_camera(world, camrot, campos)
        aug = sample_augment(self.augment, self.seed, i, self.epoch) if self.augment else None
        Rz = rot_z(aug.angle) if aug else torch.eye(3, dtype=torch.float64)
        joints_v = joints @ Rz.T  # virtual (rotated) camera frame
        uv = project(joints_v, K, eps=0.0)
        box = square_bbox(uv, valid, scale=BBOX_SCALE)
        if aug:
            side = box[2] * aug.scale
            cx = box[0] + box[2] / 2 + aug.shift[0] * box[2]
            cy = box[1] + box[3] / 2 + aug.shift[1] * box[3]
            box = torch.stack([cx - side / 2, cy - side / 2, side, side])
        Kc = crop_intrinsics(K, box, self.size)
        j2d = project(joints_v, Kc, eps=0.0)
        inside = (j2d >= 0).all(-1) & (j2d < self.size).all(-1)
        vis = self._visibility(i, valid, joints, K, camrot, campos) & inside & valid
        params, has_params = self._params_cam(i, camrot, campos)
        y = torch.zeros(PARAM_DIM, dtype=torch.float64)
        if has_params:
            ys = []
            for side in SIDES:
                rot, betas, root = params[side]
                rot = rot.clone()
                rot[0] = Rz @ rot[0]
                ys.append(pack_hand(rot[None], betas[None], (Rz @ root)[None], Kc[None], self.size)[0])
            y = torch.cat(ys)
        item: dict[str, Any] = {
            "K": Kc.float(), "joints_cam": joints_v.float(), "joints_2d": j2d.float(), "joint_valid": valid,
            "visible": vis, "y": y.float(), "has_params": has_params,
            "hand_type": HAND_TYPE_NAMES[int(a["img_hand_type"][i])],
            "meta": self._meta(i),
        }
        if with_image:
            img = self._load_image(i)
            crop = warp_to_crop(img, K, Kc, self.size, Rz)
            item["image"] = color_jitter(crop, aug) if aug else crop
        return item

    def _meta(self, i: int) -> dict[str, Any]:
        a = self.index.a
        cap, frame = (int(x) for x in a["frame_key"][int(a["img_frame"][i])])
        return {"capture": cap, "seq": self.index.seq_name(i), "camera": self.index.camera_name(int(a["img_cam"][i])),
                "frame": frame, "image_id": int(a["img_id"][i]), "file_name": self.index.file_name(i), "index": i}

    def _load_image(self, i: int) -> Tensor:
        """Decode image ``i`` to (3, H, W) in [0, 1]. Its size must be the ``width``/``height``
        of its data.json entry: the intrinsics (hence the crop) are in those pixels, so a
        resized file would be cropped from the wrong place (never rescaled silently)."""
        path = self.image_dir / self.index.file_name(i)
        if not path.exists():
            raise FileNotFoundError(f"missing image: {path}")
        try:
            with Image.open(path) as im:
                self._check_image_size(i, path, im.size)  # from the header: before decoding
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as e:
            raise OSError(f"corrupt or unreadable image: {path} ({e})") from e
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def _check_image_size(self, i: int, path: Path, size: tuple[int, int]) -> None:
        """An :class:`AnnotationError` naming the image file, data.json and the image id when
        the file's ``(width, height)`` differs from the annotation's."""
        w, h = (int(x) for x in self.index.a["img_size"][i])
        if tuple(size) != (w, h):
            raise AnnotationError(
                f"{path}: image is {size[0]}x{size[1]} px but {self.index.paths['data']} gives {w}x{h} for image id "
                f"{int(self.index.a['img_id'][i])}: restore the original image (or fix width/height)")

    def _visibility(self, i: int, valid: Tensor, joints: Tensor, K: Tensor, camrot: Tensor, campos: Tensor) -> Tensor:
        if self.visibility == "none":
            return valid.clone()
        if self.visibility == "extra":
            v = np.asarray(self.index.a["img_vis"][i])
            if (v < 0).any():
                raise ValueError(f"{self.index.paths['extra']}: no visibility for image {int(self.index.a['img_id'][i])}")
            return torch.from_numpy(v > 0)
        return self._rendered_visibility(i, valid, joints, K, camrot, campos)

    def _rendered_visibility(self, i: int, valid: Tensor, joints: Tensor, K: Tensor, camrot: Tensor, campos: Tensor) -> Tensor:
        """Render the hand-model meshes in the full camera; cached on disk next to the index
        (``vis_render_<model>.npy``), else in memory. Frames without parameters: ``valid``."""
        if self._vis_disk is None and not self._vis_mem:
            self._vis_disk = self.index.visibility_cache(f"render_{self.hand_model.name}") if len(self) else None
            if self._vis_disk is None:
                self._vis_disk = False
        if self._vis_disk is not False:
            row = np.asarray(self._vis_disk[i])
            if (row >= 0).all():
                return torch.from_numpy(row > 0)
        if i not in self._vis_mem:
            # single-hand frames (the other hand "null" in NeuralAnnot) render the one mesh, so
            # self-occlusion still counts; a hand without parameters keeps visible = valid
            params = self._hand_params_cam(i, camrot, campos)
            if len(params) < len(SIDES):
                _warn_once("render-no-params", "%s: hands without hand-model parameters get visible = joint_valid", self.root)
            vis = valid.clone()
            if not params:
                return vis
            meshes, jl, sl = [], [], []
            for h, side in enumerate(SIDES):
                if side not in params:
                    continue
                rot, betas, root = params[side]
                with torch.no_grad():
                    out = self.hand_model(rot[None].float(), betas[None].float(), side)
                meshes.append(Mesh(vertices=out.vertices[0] + root.float(), faces=self.hand_model.faces_for(side), hand_id=h))
                sl.append(slice(h * NUM_HAND_JOINTS, (h + 1) * NUM_HAND_JOINTS))
                jl.append(joints[sl[-1]].float())
            w, hgt = (int(x) for x in self.index.a["img_size"][i])
            for s_, v_ in zip(sl, render_visibility.joint_visibility(meshes, jl, K.float(), (hgt, w))):
                vis[s_] = v_
            if self._vis_disk is not False:
                self._vis_disk[i] = vis.numpy().astype(np.int8)  # the whole row at once
                return vis
            self._vis_mem[i] = vis
        return self._vis_mem[i]
