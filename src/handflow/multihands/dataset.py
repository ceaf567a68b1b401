"""MultiHands annotations as training targets (issue 6 §2; SPEC section 4).

Each dataset item gains

* ``multi_y`` (n_max, 218): the item's own ground truth ``y`` first, then up to ``n_max − 1``
  MultiHands annotations, expressed in the *item's* crop (after augmentation);
* ``multi_valid`` (n_max,) bool: which rows are real (padding rows are zeros);
* ``multi_theta`` () long: the row used as the fixed ``L_θ`` target, chosen once per image
  from the seed and the image id (the same in every epoch, as the paper prescribes).

``L_nll`` and ``L_DetMag`` take the minimum over the valid rows; ``L_θ`` uses row
``multi_theta``.

Augmentation changes the crop (``K``) and, for in-plane rotation, the camera frame. The
annotations are stored for the un-augmented crop, so they are mapped into the item's frame
with the rotation ``R_aug = R0_item · R0_stored^T`` recovered from the two ground truths
(the right hand's global orientation), then re-packed with the item's ``K``. The left hand's
orientation and both wrists are checked against the item's ground truth: a mismatch means
the annotations belong to other data and raises an error.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from handflow.constants import PARAM_DIM
from handflow.multihands.engine import params_from_state, state_from_params
from handflow.multihands.io import MultiHandsRecord, load
from handflow.multihands.perturb import TwoHandState

__all__ = ["attach_multihands", "MultiHandsDataset", "FRAME_TOLERANCE_MM", "FRAME_TOLERANCE_ROT"]

#: the stored ground truth mapped into the item's frame must match the item's within these
FRAME_TOLERANCE_MM = 1.0
FRAME_TOLERANCE_ROT = 1e-3


def _image_size(item: dict[str, Any], image_size: int | None) -> int:
    if image_size is not None:
        return int(image_size)
    if "image" in item:
        return int(item["image"].shape[-1])
    raise ValueError("attach_multihands: pass image_size (the item has no image to read it from)")


def _to_item_frame(rec: MultiHandsRecord, y_item: Tensor, K_item: Tensor, size: int, n: int, image_id: int) -> Tensor:
    """(n, 218) annotations of ``rec`` re-expressed in the item's frame and crop."""
    dt = torch.float64
    K_mh = torch.as_tensor(rec.K, dtype=dt)
    gt_mh = state_from_params(torch.as_tensor(rec.gt_params, dtype=dt)[None], K_mh[None], rec.image_size)
    gt_it = state_from_params(y_item.to(dt)[None], K_item.to(dt)[None], size)
    R_aug = gt_it.rotmats[0, 0, 0] @ gt_mh.rotmats[0, 0, 0].T
    rot_err = (R_aug @ gt_mh.rotmats[0, 1, 0] - gt_it.rotmats[0, 1, 0]).abs().max()
    root_err = (gt_mh.root[0] @ R_aug.T - gt_it.root[0]).norm(dim=-1).max()
    if rot_err > FRAME_TOLERANCE_ROT or root_err > FRAME_TOLERANCE_MM:
        raise ValueError(
            f"image {image_id}: the MultiHands ground truth does not match the dataset item "
            f"(wrist off by {float(root_err):.2f} mm, orientation by {float(rot_err):.2e}); were the "
            "annotations generated from this dataset, split and hand model?")
    st = state_from_params(torch.as_tensor(rec.params[:n], dtype=dt), K_mh.expand(n, 3, 3), rec.image_size)
    rot = st.rotmats.clone()
    rot[:, :, 0] = R_aug @ rot[:, :, 0]
    moved = TwoHandState(rot, st.betas, st.root @ R_aug.T)
    return params_from_state(moved, K_item.to(dt).expand(n, 3, 3), size)


def attach_multihands(
    item: dict[str, Any],
    records: Mapping[int, MultiHandsRecord],
    n_max: int,
    image_size: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Add ``multi_y`` (n_max, 218), ``multi_valid`` (n_max,) and ``multi_theta`` () to an item.

    Args:
        item: an ``InterHandDataset`` item (``y``, ``K``, ``has_params``, ``meta["image_id"]``).
        records: from :func:`handflow.multihands.load`.
        n_max: rows of ``multi_y`` (ground truth + up to ``n_max − 1`` annotations), ≥ 1.
        image_size: crop side of the item (default: read from ``item["image"]``).
        seed: seed of the fixed ``L_θ`` choice.

    Returns:
        The same dict, extended (also returned for chaining).
    """
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    y_item = torch.as_tensor(item["y"])
    multi_y = torch.zeros(n_max, PARAM_DIM, dtype=y_item.dtype)
    valid = torch.zeros(n_max, dtype=torch.bool)
    iid = int(item["meta"]["image_id"])
    if bool(item["has_params"]):
        multi_y[0], valid[0] = y_item, True
        rec = records.get(iid)
        n = 0 if rec is None else min(n_max - 1, rec.params.shape[0])
        if n > 0:
            size = _image_size(item, image_size)
            multi_y[1 : 1 + n] = _to_item_frame(rec, y_item, torch.as_tensor(item["K"]), size, n, iid).to(y_item.dtype)
            valid[1 : 1 + n] = True
    n_valid = int(valid.sum())
    theta = zlib.crc32(f"{seed}:{iid}".encode()) % n_valid if n_valid else 0
    item["multi_y"], item["multi_valid"] = multi_y, valid
    item["multi_theta"] = torch.tensor(theta, dtype=torch.long)
    return item


class MultiHandsDataset(Dataset):
    """Wrap a dataset so that every item carries its MultiHands annotations.

    Args:
        base: dataset whose items are ``InterHandDataset`` dicts.
        multihands_dir: output root of ``handflow multihands``.
        split: split name.
        n_max: rows of ``multi_y`` per item.
        image_size: crop side of the items (default: ``base.image_size`` or the item image).
        seed: seed of the fixed ``L_θ`` choice.
    """

    def __init__(self, base: Dataset, multihands_dir: str | Path, split: str, n_max: int,
                 image_size: int | None = None, seed: int = 0) -> None:
        self.base = base
        self.records = load(multihands_dir, split)
        self.n_max = n_max
        self.image_size = image_size if image_size is not None else getattr(base, "image_size", None)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return attach_multihands(self.base[i], self.records, self.n_max, self.image_size, self.seed)
