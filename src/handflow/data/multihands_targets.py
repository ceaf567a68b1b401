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

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from handflow.constants import PARAM_DIM
from handflow.data.multihands_io import MultiHandsRecord, load
from handflow.data.targets import single_item
from handflow.params import TwoHandState, params_from_state, state_from_params

__all__ = ["attach_multihands", "to_item_frames", "MultiHandsDataset", "BatchedAttach", "FRAME_TOLERANCE_MM",
           "FRAME_TOLERANCE_ROT"]

#: the stored ground truth mapped into the item's frame must match the item's within these
FRAME_TOLERANCE_MM = 1.0
FRAME_TOLERANCE_ROT = 1e-3


def _image_size(item: dict[str, Any], image_size: int | None) -> int:
    if image_size is not None:
        return int(image_size)
    if "image" in item:
        return int(item["image"].shape[-1])
    raise ValueError("attach_multihands: pass image_size (the item has no image to read it from)")


def to_item_frames(gt_mh: Tensor, K_mh: Tensor, mh_size: int, params: Tensor, y_item: Tensor, K_item: Tensor, size: int,
                   image_ids: list[int]) -> Tensor:
    """Annotations re-expressed in their items' frames and crops (the per-item and the batched
    paths share this).

    Args:
        gt_mh: (b, 218) stored ground truths, ``K_mh`` (b, 3, 3) their crops at ``mh_size`` px.
        params: (b, R, 218) stored annotations (same crops).
        y_item: (b, 218) the items' ground truths, ``K_item`` (b, 3, 3) their crops at ``size`` px.
        image_ids: the items' image ids (for the error message).

    Returns:
        (b, R, 218) float64.

    Raises:
        ValueError: a stored ground truth does not match its item (annotations of other data).
    """
    dt = torch.float64
    b, R = params.shape[:2]
    K_mh, K_it = K_mh.to(dt), K_item.to(dt)
    st_mh = state_from_params(gt_mh.to(dt), K_mh, mh_size)
    st_it = state_from_params(y_item.to(dt), K_it, size)
    R_aug = st_it.rotmats[:, 0, 0] @ st_mh.rotmats[:, 0, 0].transpose(1, 2)
    rot_err = (R_aug @ st_mh.rotmats[:, 1, 0] - st_it.rotmats[:, 1, 0]).abs().flatten(1).amax(1)
    root_err = (st_mh.root @ R_aug.transpose(1, 2) - st_it.root).norm(dim=-1).amax(1)
    bad = ((rot_err > FRAME_TOLERANCE_ROT) | (root_err > FRAME_TOLERANCE_MM)).nonzero().flatten()
    if len(bad):
        k = int(bad[0])
        raise ValueError(
            f"image {int(image_ids[k])}: the MultiHands ground truth does not match the dataset item "
            f"(wrist off by {float(root_err[k]):.2f} mm, orientation by {float(rot_err[k]):.2e}); were the "
            "annotations generated from this dataset, split and hand model?")
    st = state_from_params(params.reshape(b * R, PARAM_DIM).to(dt), K_mh.repeat_interleave(R, 0), mh_size)
    Rr = R_aug.repeat_interleave(R, 0)
    rot = st.rotmats.clone()
    rot[:, :, 0] = Rr[:, None] @ rot[:, :, 0]
    moved = TwoHandState(rot, st.betas, st.root @ Rr.transpose(1, 2))
    return params_from_state(moved, K_it.repeat_interleave(R, 0), size).reshape(b, R, PARAM_DIM)


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
            mapped = to_item_frames(torch.as_tensor(rec.gt_params)[None], torch.as_tensor(rec.K)[None], rec.image_size,
                                    torch.as_tensor(rec.params[:n])[None], y_item[None], torch.as_tensor(item["K"])[None], size,
                                    [iid])
            multi_y[1 : 1 + n] = mapped[0].to(y_item.dtype)
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

        #: a base whose ``__getitems__`` returns collated batches gets its annotations attached
        #: a batch at a time (:class:`BatchedAttach`)
        self.batched = bool(getattr(base, "batched", False))
        self._attach = BatchedAttach(base, self.records, n_max, self.image_size, seed) if self.batched else None

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._attach is not None:
            return single_item(self.__getitems__([i]))
        return attach_multihands(self.base[i], self.records, self.n_max, self.image_size, self.seed)

    def __getitems__(self, idx: list[int]) -> Any:
        if self._attach is None:
            return [self[i] for i in idx]
        return self._attach(self.base.__getitems__(idx), idx)


class BatchedAttach:
    """:func:`attach_multihands` for a whole collated batch of a base dataset with ``batched``
    ``__getitems__`` (e.g. :class:`handflow.data.targets.TargetsDataset`): the annotations of
    every item are gathered into tensors once, and each batch maps them into its items' frames
    with one batched :func:`state_from_params` / :func:`params_from_state` (float64, the
    per-item formulas; equal to the per-item path to rounding, tested).

    Args:
        base: the dataset; its ``t["image_id"]`` gives each index's image id.
        records: from :func:`handflow.multihands.load`.
        n_max, image_size, seed: as :func:`attach_multihands` (``image_size`` required).
    """

    def __init__(self, base: Any, records: Mapping[int, MultiHandsRecord], n_max: int, image_size: int | None,
                 seed: int) -> None:
        if n_max < 1:
            raise ValueError(f"n_max must be >= 1, got {n_max}")
        if image_size is None:
            raise ValueError("attach_multihands: pass image_size (the items have no image to read it from)")
        ids = base.t["image_id"].tolist()
        M, R = len(ids), n_max - 1
        self.n_max, self.size = n_max, int(image_size)
        self.count = torch.zeros(M, dtype=torch.long)
        self.params = torch.zeros(M, max(R, 1), PARAM_DIM)
        self.gt = torch.zeros(M, PARAM_DIM)
        self.K = torch.eye(3).repeat(M, 1, 1)
        sizes = {int(r.image_size) for r in records.values()}
        if len(sizes) > 1:
            raise ValueError(f"MultiHands records of one split made at several crop sizes {sorted(sizes)}")
        self.mh_size = sizes.pop() if sizes else self.size
        for k, iid in enumerate(ids):
            rec = records.get(int(iid))
            if rec is None or R == 0:
                continue
            n = min(R, rec.params.shape[0])
            self.count[k] = n
            self.params[k, :n] = torch.from_numpy(np.asarray(rec.params[:n], np.float32))
            self.params[k, n:] = torch.from_numpy(np.asarray(rec.gt_params, np.float32))  # finite padding, masked
            self.gt[k] = torch.from_numpy(np.asarray(rec.gt_params, np.float32))
            self.K[k] = torch.from_numpy(np.asarray(rec.K, np.float32))
        self.crc = torch.tensor([zlib.crc32(f"{seed}:{int(i)}".encode()) for i in ids], dtype=torch.long)

    def __call__(self, batch: dict[str, Any], idx: list[int]) -> dict[str, Any]:
        it = torch.as_tensor(idx, dtype=torch.long)
        y = batch["y"]
        B, R = len(it), self.n_max - 1
        has = batch["has_params"].bool()
        n = torch.where(has, self.count[it], torch.zeros_like(self.count[it]))
        rows = torch.arange(R)
        valid = torch.cat([has[:, None], rows[None] < n[:, None]], 1)
        multi_y = torch.zeros(B, self.n_max, PARAM_DIM, dtype=y.dtype)
        multi_y[has, 0] = y[has]
        sel = (n > 0).nonzero().flatten()
        if len(sel):
            i = it[sel]
            mapped = to_item_frames(self.gt[i], self.K[i], self.mh_size, self.params[i, :R], y[sel], batch["K"][sel], self.size,
                                    batch["meta"]["image_id"][sel].tolist())
            multi_y[sel, 1:] = mapped.to(y.dtype)
            multi_y[:, 1:] = torch.where(valid[:, 1:, None], multi_y[:, 1:], torch.zeros((), dtype=y.dtype))
        n_valid = valid.sum(1)
        theta = torch.where(n_valid > 0, self.crc[it] % n_valid.clamp_min(1), torch.zeros_like(n_valid))
        return {**batch, "multi_y": multi_y, "multi_valid": valid, "multi_theta": theta}
