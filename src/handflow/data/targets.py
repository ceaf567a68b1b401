"""Image-free training items held in memory, augmented a batch at a time (keypoint evidence).

The keypoint-evidence protocol and 2D-to-3D lifting (``model.backbone=keypoints``) never read
an image, yet the per-item path (:class:`~handflow.data.interhand.InterHandDataset` with
``load_images=False``) rebuilds each item's geometry in Python for every presentation: about
4 ms per item, ~0.15 s of a 0.5 s step at batch 32 on one CPU core. :class:`TargetsDataset`
computes every item's *un-augmented* targets once (float64, as the dataset does), keeps them
as tensors, and augments a whole batch with tensor operations (:func:`augment_targets`): the
virtual crop camera turns about the optical axis by ``angle``, the crop box is the square
around the rotated projected joints, scaled and shifted, and ``K``, ``joints_cam``,
``joints_2d``, ``visible`` and ``y`` follow with the per-item formulas, from the same draws
(``sample_augment(cfg, seed, index, epoch)``). Batches equal the per-item path's collated
batches to float rounding (tested).

``__getitems__`` returns the collated batch; use :func:`~handflow.data.targets.collate_batched`
as the DataLoader's ``collate_fn``.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from handflow.atomic import read_npz, save_npz
from handflow.constants import HAND_PARAM_DIM, SIDES
from handflow.data.augment import AugmentConfig, sample_augment
from handflow.data.interhand import BBOX_SCALE, InterHandDataset
from handflow.geometry.camera import crop_intrinsics, project, square_bbox, world_to_camera
from handflow.geometry.root import root_to_uvs
from handflow.geometry.rotations import matrix_to_rot6d

__all__ = ["TargetsDataset", "item_targets", "split_targets", "augment_targets", "rot_z_batch", "collate_batched", "single_item",
           "META_INT_KEYS", "META_STR_KEYS"]

log = logging.getLogger(__name__)

#: bump when :func:`item_targets` changes what it computes (old caches are then ignored)
TARGETS_VERSION = 2  # 2: the targets of an augmenting base are its un-augmented ones (1 stored epoch 0's y)

#: per-item integer metadata (tensors in a batch) and string metadata (lists of str)
META_INT_KEYS = ("capture", "frame", "image_id", "index")
META_STR_KEYS = ("seq", "camera", "file_name")


def item_targets(ds: InterHandDataset, i: int) -> dict[str, Any]:
    """The un-augmented targets of item ``i`` of an ``InterHandDataset``, with what augmentation
    needs (float64 geometry, computed as the dataset does; the dataset's own augmentation, if
    any, is not applied).

    Returns:
        ``K_full``/``K_crop`` (3, 3), ``joints_cam`` (42, 3), ``joint_valid``/``vis_base`` (42,)
        bool (``vis_base``: visible in the full image, before the crop test), ``y`` (218,),
        ``rot_global`` (2, 3, 3) and ``root`` (2, 3) per side (zeros without parameters),
        ``has_params``, ``hand_type`` and the ``meta`` fields, as numpy values.
    """
    if ds.augment:
        ds = _unaugmented(ds)
    item = ds.annotation(i)
    valid = item["joint_valid"]
    K, camrot, campos = ds._camera(i)
    params, has = ds._params_cam(i, camrot, campos)
    a = ds.index.a
    world = torch.from_numpy(np.array(a["frame_world"][int(a["img_frame"][i])], dtype=np.float64))
    joints = world_to_camera(world, camrot, campos)
    Kc = crop_intrinsics(K, square_bbox(project(joints, K, eps=0.0), valid, scale=BBOX_SCALE), ds.image_size)
    rot = torch.zeros(len(SIDES), 3, 3, dtype=torch.float64)
    root = torch.zeros(len(SIDES), 3, dtype=torch.float64)
    if has:
        for h, side in enumerate(SIDES):
            rot[h], root[h] = params[side][0][0], params[side][2]
    vis_base = ds._visibility(i, valid, joints, K, camrot, campos) & valid
    m = item["meta"]
    return {"K_full": K.numpy(), "K_crop": Kc.numpy(), "joints_cam": joints.numpy(), "joint_valid": valid.numpy(),
            "vis_base": vis_base.numpy(), "y": item["y"].numpy(), "rot_global": rot.numpy(), "root": root.numpy(),
            "has_params": np.bool_(has), "hand_type": item["hand_type"], **{k: m[k] for k in META_INT_KEYS + META_STR_KEYS}}


def _unaugmented(ds: InterHandDataset) -> InterHandDataset:
    """A shallow copy of ``ds`` without augmentation (same index, hand model and caches)."""
    view = copy.copy(ds)
    view.augment = None
    return view


def rot_z_batch(angle: Tensor) -> Tensor:
    """(B, 3, 3) float64 rotations by ``angle`` (B,) radians about the optical axis (``crop.rot_z``)."""
    c, s = torch.cos(angle.double()), torch.sin(angle.double())
    z, o = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(-1, 3, 3)


def _rotate_params(t: dict[str, Tensor], Rz: Tensor, Kc: Tensor, size: int) -> Tensor:
    """(B, 218) float32: the stored ``y`` with each hand's global orientation turned by ``Rz``
    (B, 3, 3) and its wrist re-expressed in the crop ``Kc`` (as ``InterHandDataset`` packs it)."""
    y = t["y"].double().clone()
    has = t["has_params"]
    if not bool(has.any()):
        return t["y"].float()
    for h in range(len(SIDES)):
        o = h * HAND_PARAM_DIM
        R = Rz[has] @ t["rot_global"][has, h]
        root = (Rz[has] @ t["root"][has, h, :, None])[..., 0]
        y[has, o:o + 6] = matrix_to_rot6d(R)
        y[has, o + HAND_PARAM_DIM - 3:o + HAND_PARAM_DIM] = root_to_uvs(root, Kc[has], size)
    return y.float()


def augment_targets(t: dict[str, Tensor], size: int, angle: Tensor | None, scale: Tensor | None = None,
                    shift: Tensor | None = None) -> dict[str, Tensor]:
    """Targets of a batch for the crop camera moved by the augmentation (or not: ``angle=None``).

    Args:
        t: stored targets (:func:`item_targets`, stacked as tensors): ``K_full``/``K_crop``
            (B, 3, 3) f64, ``joints_cam`` (B, 42, 3) f64, ``joint_valid``/``vis_base`` (B, 42) bool,
            ``y`` (B, 218), ``rot_global`` (B, 2, 3, 3) f64, ``root`` (B, 2, 3) f64, ``has_params`` (B,).
        size: crop side S in pixels.
        angle, scale: (B,) in-plane rotation (radians) and crop-side factor; shift (B, 2) the
            crop centre's shift as a fraction of the box side.

    Returns:
        ``K`` (B, 3, 3), ``joints_cam`` (B, 42, 3), ``joints_2d`` (B, 42, 2) float32, ``visible``
        (B, 42) bool, ``y`` (B, 218) float32, and ``Rz`` (B, 3, 3) / ``K_crop64`` (B, 3, 3) float64
        (the rotation and crop camera, for callers that warp an image with them).
    """
    valid = t["joint_valid"]
    if angle is None:
        Kc, joints_v, y = t["K_crop"], t["joints_cam"], t["y"].float()
        Rz = torch.eye(3, dtype=torch.float64).expand(len(Kc), 3, 3)
    else:
        Rz = rot_z_batch(angle)
        joints_v = t["joints_cam"] @ Rz.transpose(1, 2)
        box = square_bbox(project(joints_v, t["K_full"], eps=0.0), valid, scale=BBOX_SCALE)
        side = box[:, 2] * scale
        cx = box[:, 0] + box[:, 2] / 2 + shift[:, 0] * box[:, 2]
        cy = box[:, 1] + box[:, 3] / 2 + shift[:, 1] * box[:, 3]
        Kc = crop_intrinsics(t["K_full"], torch.stack([cx - side / 2, cy - side / 2, side, side], -1), size)
        y = _rotate_params(t, Rz, Kc, size)
    j2d = project(joints_v, Kc, eps=0.0)
    inside = (j2d >= 0).all(-1) & (j2d < size).all(-1)
    return {"K": Kc.float(), "joints_cam": joints_v.float(), "joints_2d": j2d.float(),
            "visible": t["vis_base"] & inside & valid, "y": y, "Rz": Rz, "K_crop64": Kc}


def single_item(batch: dict[str, Any]) -> dict[str, Any]:
    """The one item of a collated batch of one (tensors and lists indexed, the ``meta`` dict too)."""
    return {k: (v[0] if isinstance(v, (Tensor, list)) else {m: w[0] for m, w in v.items()}) for k, v in batch.items()}


def collate_batched(batch: Any) -> Any:
    """DataLoader ``collate_fn`` for datasets whose ``__getitems__`` returns the collated batch."""
    return batch


def stack_records(recs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-item records -> one array per key (strings as fixed-width unicode)."""
    out: dict[str, np.ndarray] = {}
    for k in recs[0]:
        vals = [r[k] for r in recs]
        out[k] = np.asarray(vals, dtype=str) if isinstance(vals[0], str) else np.stack([np.asarray(v) for v in vals])
    return out


def _cache_file(ds: InterHandDataset) -> Path:
    model = getattr(ds.hand_model, "name", "model")
    return ds.index.folder / f"targets_v{TARGETS_VERSION}_{ds.image_size}px_{model}_{ds.visibility}.npz"


def split_targets(ds: InterHandDataset) -> dict[str, np.ndarray]:
    """:func:`item_targets` of every item of ``ds``, stacked; cached in the split's index folder
    (``ROOT/.handflow_cache/<split>/``, which is rebuilt, and the cache with it, when an
    annotation file changes), so the runs of a benchmark compute them once."""
    path = _cache_file(ds)
    if path.is_file():
        try:
            arrays = read_npz(path)
            if len(arrays["y"]) == len(ds):
                return arrays
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring unreadable targets cache %s (%s)", path, e)
    t0 = time.perf_counter()
    base = _unaugmented(ds) if ds.augment else ds
    arrays = stack_records([item_targets(base, i) for i in range(len(ds))])
    log.info("targets of %d items computed in %.1f s", len(ds), time.perf_counter() - t0)
    try:
        save_npz(path, arrays)
    except OSError as e:
        log.warning("cannot write the targets cache %s (%s): computed again next time", path, e)
    return arrays


class TargetsDataset(torch.utils.data.Dataset):
    """A split's image-free items (module docstring), augmented a batch at a time.

    Args:
        base: an ``InterHandDataset`` of the split; only its annotations are read (its own
            ``augment`` setting is ignored: ``augment`` below decides).
        augment: False, True (default ranges) or an :class:`AugmentConfig`.
        seed: augmentation seed (the per-item path's ``seed``).
    """

    #: ``__getitems__`` returns a collated batch (the data module then uses :func:`collate_batched`)
    batched = True

    def __init__(self, base: InterHandDataset, augment: bool | AugmentConfig = False, seed: int = 0) -> None:
        self.image_size = base.image_size
        self.augment = AugmentConfig() if augment is True else (augment or None)
        self.seed, self.epoch = seed, 0
        arrays = split_targets(base)
        self.t = {k: torch.from_numpy(v) for k, v in arrays.items() if v.dtype.kind not in "US"}
        self.strings = {k: v for k, v in arrays.items() if v.dtype.kind in "US"}

    def __len__(self) -> int:
        return int(self.t["y"].shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (called by the sampler each epoch)."""
        self.epoch = int(epoch)

    def __getitems__(self, idx: list[int]) -> dict[str, Any]:
        it = torch.as_tensor(idx, dtype=torch.long)
        t = {k: v[it] for k, v in self.t.items()}
        if self.augment is None:
            out = augment_targets(t, self.image_size, None)
        else:
            draws = [sample_augment(self.augment, self.seed, int(i), self.epoch) for i in idx]
            out = augment_targets(t, self.image_size, torch.tensor([d.angle for d in draws], dtype=torch.float64),
                                  torch.tensor([d.scale for d in draws], dtype=torch.float64),
                                  torch.tensor([d.shift for d in draws], dtype=torch.float64))
        del out["Rz"], out["K_crop64"]
        names = it.numpy()
        meta: dict[str, Any] = {k: t[k] for k in META_INT_KEYS}
        meta.update({k: [str(s) for s in self.strings[k][names]] for k in META_STR_KEYS})
        return {**out, "joint_valid": t["joint_valid"], "has_params": t["has_params"],
                "hand_type": [str(s) for s in self.strings["hand_type"][names]], "meta": meta}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return single_item(self.__getitems__([i]))
