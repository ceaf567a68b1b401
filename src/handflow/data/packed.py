"""Packed training store and batched augmentation (issue #17).

``handflow pack`` decodes every image of a split once and writes its crop, with a margin,
as uint8 into one memory-mapped array next to the item's targets. Training then reads
batches of crops with one gather (no JPEG decoding, no per-sample resampling) and augments
a whole batch with tensor operations: one affine warp (``affine_grid``/``grid_sample``) for
scale, rotation and translation, colour jitter, then the float conversion. The same code
runs on the CPU and, with the store moved to the GPU, on the device.

On disk (``STORE/<split>/``)::

    images.u8            (N, 3, P, P) uint8, raw memory map, P = S + 2 * pad
    targets.npz          per-item targets (numpy, ``allow_pickle=False``), dataset order
    meta.json            settings, annotation digest, N, P, pad (written last: the store is complete)
    .pack_settings.json  the settings record (a rerun resumes; other annotations/settings are refused)
    .chunks/             targets of finished chunks while packing (removed at the end)

Geometry. The packed crop is the dataset's un-augmented crop (``InterHandDataset`` without
augmentation: the square around the joints ×``BBOX_SCALE``, at S px) extended by ``pad``
pixels on every side *at the same pixel density*, so its centre ``S × S`` is that crop (same
pixel centres; up to uint8 rounding). Augmentation follows ``augment.py`` exactly: the
virtual crop camera turns about the real optical axis by ``angle``, the crop box is the
square around the rotated projected joints, scaled and shifted; the targets (``K``,
``joints_cam``, ``joints_2d``, ``visible``, ``y``) are computed with the per-sample path's
formulas in float64 (equal to it to rounding), and the image is the packed crop warped by the
affine map ``K_packed · Rzᵀ · K_crop⁻¹`` (an affine map because both intrinsics are crops of
one camera and ``Rz`` turns about its optical axis).

Trade-off against the per-sample path (docs/training.md, "Packed store and batched
augmentation"): two bilinear resamplings instead of one (slightly softer images), uint8
quantization of the intermediate crop (±0.5/255), and pixels of an augmented crop beyond the
stored margin are filled with ``FILL_VALUE`` grey where the per-sample path shows more
background (``margin`` 1.5 covers every pixel of most draws; the hands are always inside).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as Fn
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from handflow.atomic import save_npz, write_text
from handflow.data.augment import AugmentConfig, AugmentParams, sample_augment
from handflow.data.crop import FILL_VALUE, warp_to_crop
from handflow.data.datamodule import EpochShuffleSampler, InterHandDataModule, worker_init
from handflow.data.index import annotation_paths
from handflow.data.interhand import InterHandDataset
from handflow.data.targets import META_INT_KEYS, META_STR_KEYS, augment_targets, item_targets, single_item, stack_records
from handflow.errors import HandflowError
from handflow.fingerprint import check_or_record

__all__ = ["PACK_FORMAT_VERSION", "DEFAULT_MARGIN", "PackedStoreError", "AugmentBatch", "annotation_digest",
           "pad_for", "pack_split", "open_store", "PackedDataset", "augment_batch", "batch_color_jitter",
           "collate_packed", "PackedDataModule"]

log = logging.getLogger(__name__)

PACK_FORMAT_VERSION = 1
#: stored crop side = S × margin (rounded to an even pad): room for scale, rotation and shift
DEFAULT_MARGIN = 1.5
#: items per chunk (a chunk's images are flushed, then its targets written: the resume unit)
DEFAULT_CHUNK = 256
IMAGES_FILE, TARGETS_FILE, META_FILE = "images.u8", "targets.npz", "meta.json"
RECORD_FILE, CHUNK_DIR = ".pack_settings.json", ".chunks"
UINT8_MAX = 255.0
#: items per host-to-device copy when a store becomes resident
RESIDENT_COPY_ITEMS = 1024
#: the annotation files of a split whose bytes define a store (``SplitIndex.paths`` keys)
DIGESTED_FILES = ("data", "camera", "joint_3d", "MANO_NeuralAnnot", "extra", "skeleton")
#: per-item string metadata (``META_STR_KEYS``) is stored as fixed-width unicode arrays
#: stored as strings, returned as lists of str
STR_KEYS = ("hand_type", *META_STR_KEYS)


class PackedStoreError(HandflowError, ValueError):
    """A packed store is missing, incomplete, or does not match the data or settings."""


# ----------------------------------------------------------------------------- writing
def annotation_digest(paths: dict[str, Path]) -> str:
    """SHA-256 (16 hex digits) of the bytes of a split's annotation files (``DIGESTED_FILES``
    that exist), each prefixed by its key: a store is tied to exactly these annotations."""
    h = hashlib.sha256()
    for key in DIGESTED_FILES:
        p = paths.get(key)
        if p is None or not Path(p).is_file():
            continue
        h.update(key.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def pad_for(size: int, margin: float) -> int:
    """Pixels added on each side of an ``size`` crop for a stored crop ``margin`` × larger."""
    if margin < 1.0:
        raise PackedStoreError(f"pack margin must be >= 1, got {margin}")
    return int(round(size * (margin - 1.0) / 2.0))


def _item_record(ds: InterHandDataset, i: int, pad: int) -> tuple[Tensor, dict[str, Any]]:
    """Packed crop (3, P, P) uint8 and the un-augmented targets (:func:`~handflow.data.targets.item_targets`)
    of item ``i`` of an ``InterHandDataset`` without augmentation."""
    rec = item_targets(ds, i)
    K = torch.from_numpy(rec["K_full"])
    Kp = torch.from_numpy(rec["K_crop"]).clone()
    Kp[:2, 2] += pad
    crop = warp_to_crop(ds._load_image(i), K, Kp, ds.image_size + 2 * pad)
    u8 = (crop * UINT8_MAX).round().clamp(0, UINT8_MAX).to(torch.uint8)
    return u8, rec


def _settings(ds: Any, split: str, size: int, pad: int) -> dict[str, Any]:
    return {"format_version": PACK_FORMAT_VERSION, "split": split, "image_size": size, "pad": pad,
            "annotations": annotation_digest(ds.index.paths), "items": len(ds),
            "hand_model": getattr(ds.hand_model, "name", None), "visibility": ds.visibility}


class _ChunkSource(torch.utils.data.Dataset):
    """Chunk ``c`` of a split -> (images (n, 3, P, P) uint8, stacked targets): one per worker."""

    def __init__(self, ds: Any, chunks: list[tuple[int, int]], pad: int) -> None:
        self.ds, self.chunks, self.pad = ds, chunks, pad

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, c: int) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
        lo, hi = self.chunks[c]
        imgs, recs = zip(*(_item_record(self.ds, i, self.pad) for i in range(lo, hi)))
        return lo, torch.stack(imgs).numpy(), stack_records(list(recs))


def pack_split(root: str | Path, split: str, out: str | Path, image_size: int, margin: float = DEFAULT_MARGIN,
               hand_model: Any = None, mano_path: str | Path | None = None, cache_dir: str | Path | None = None,
               chunk: int = DEFAULT_CHUNK, workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Write the packed store of one split to ``out/<split>/`` (module docstring); resumable.

    Args:
        root: dataset root (InterHand2.6M layout).
        image_size: training crop side S; the stored crops are ``P = S + 2 * pad_for(S, margin)``.
        chunk: items per resume unit; ``workers``: loader processes (0: this process).

    Returns:
        the store's meta (``meta.json``).

    Raises:
        SettingsMismatch: ``out/<split>`` was packed from other annotations or with other settings.
    """
    ds = InterHandDataset(root, split, image_size, hand_model=hand_model, mano_path=mano_path, augment=False,
                          cache_dir=cache_dir)
    pad = pad_for(image_size, margin)
    P = image_size + 2 * pad
    folder = Path(out) / split
    settings = _settings(ds, split, image_size, pad)
    check_or_record(folder / RECORD_FILE, settings, what=str(folder),
                    fix="use another --out (a store belongs to one dataset and crop size)",
                    outputs=[folder / IMAGES_FILE, folder / TARGETS_FILE])
    if (folder / META_FILE).is_file():
        return json.loads((folder / META_FILE).read_text())
    n = len(ds)
    if n == 0:
        raise PackedStoreError(f"{root}/annotations/{split} holds no image: nothing to pack")
    shape = (n, 3, P, P)
    img_path = folder / IMAGES_FILE
    mm = np.memmap(img_path, dtype=np.uint8, mode="r+" if img_path.exists() else "w+", shape=shape)
    cdir = folder / CHUNK_DIR
    cdir.mkdir(parents=True, exist_ok=True)
    chunks = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    todo = [c for c in chunks if not (cdir / f"{c[0]:09d}.npz").is_file()]
    bar = _bar(n, f"pack {split}", progress)
    bar.update(n - sum(hi - lo for lo, hi in todo))
    loader = torch.utils.data.DataLoader(_ChunkSource(ds, todo, pad), batch_size=None, num_workers=workers,
                                         worker_init_fn=_one_thread)
    for lo, imgs, recs in loader:
        mm[lo:lo + len(imgs)] = imgs
        mm.flush()
        save_npz(cdir / f"{lo:09d}.npz", recs, fsync=True)
        bar.update(len(imgs))
    bar.close()
    del mm
    parts = []
    for lo, _ in chunks:
        with np.load(cdir / f"{lo:09d}.npz", allow_pickle=False) as z:
            parts.append({k: z[k] for k in z.files})
    targets = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    save_npz(folder / TARGETS_FILE, targets, fsync=True)
    meta = {**settings, "shape": list(shape), "margin": P / image_size, "root": str(root)}
    write_text(folder / META_FILE, json.dumps(meta, indent=1) + "\n")
    for lo, _ in chunks:
        (cdir / f"{lo:09d}.npz").unlink()
    cdir.rmdir()
    return meta


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def _bar(total: int, desc: str, enabled: bool) -> Any:
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled)


# ----------------------------------------------------------------------------- reading
def open_store(store: str | Path, split: str,
               root: str | Path | None = None) -> tuple[dict[str, Any], np.memmap, dict[str, np.ndarray]]:
    """``(meta, images memmap (N, 3, P, P) uint8, targets)`` of ``store/<split>``. With ``root``,
    the split's annotations must be those the store was packed from.

    Raises:
        PackedStoreError: no complete store, or a store of other annotations.
    """
    folder = Path(store) / split
    mp = folder / META_FILE
    if not mp.is_file():
        raise PackedStoreError(f"no complete packed store in {folder} ({META_FILE} missing): run `handflow pack --data DATA "
                               f"--split {split} --image-size S --out {store}` (a rerun resumes an interrupted one)")
    meta = json.loads(mp.read_text())
    if meta.get("format_version") != PACK_FORMAT_VERSION:
        raise PackedStoreError(f"{folder} has pack format {meta.get('format_version')}, this handflow reads "
                               f"{PACK_FORMAT_VERSION}: pack it again")
    if root is not None:
        digest = annotation_digest(annotation_paths(Path(root), split, None))
        if digest != meta["annotations"]:
            raise PackedStoreError(f"{folder} was packed from other annotations than {root}/annotations/{split} "
                                   f"(digest {meta['annotations']}, now {digest}): pack {root} again into another --out")
    images = np.memmap(folder / IMAGES_FILE, dtype=np.uint8, mode="r", shape=tuple(meta["shape"]))
    with np.load(folder / TARGETS_FILE, allow_pickle=False) as z:
        targets = {k: z[k] for k in z.files}
    return meta, images, targets


@dataclass
class AugmentBatch:
    """Augmentation parameters of a batch, each (B,) float64 (``shift`` (B, 2))."""

    scale: Tensor
    angle: Tensor
    shift: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor

    @classmethod
    def stack(cls, params: list[AugmentParams]) -> AugmentBatch:
        """Stack per-sample :class:`AugmentParams` (the per-sample path's draws)."""
        def col(name: str) -> Tensor:
            return torch.tensor([getattr(p, name) for p in params], dtype=torch.float64)

        return cls(col("scale"), col("angle"), col("shift"), col("brightness"), col("contrast"), col("saturation"))


def _normalizer(n: int, dtype: torch.dtype) -> Tensor:
    """(3, 3) continuous pixel coordinates (centres at i + 0.5) -> grid coordinates of
    ``grid_sample(align_corners=False)`` for a side of ``n`` pixels."""
    return torch.tensor([[2.0 / n, 0.0, -1.0], [0.0, 2.0 / n, -1.0], [0.0, 0.0, 1.0]], dtype=dtype)


def batch_color_jitter(img: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor) -> Tensor:
    """:func:`handflow.data.augment.color_jitter` on a batch: img (B, 3, S, S) in [0, 1], factors (B,)."""
    b, c, s = (t.to(img.device, img.dtype)[:, None, None, None] for t in (brightness, contrast, saturation))
    img = img * b
    mean = img.mean((1, 2, 3), keepdim=True)
    img = (img - mean) * c + mean
    grey = img.mean(1, keepdim=True)
    img = (img - grey) * s + grey
    return img.clamp(0, 1)


def augment_batch(images: Tensor, t: dict[str, Tensor], size: int, pad: int, aug: AugmentBatch | None,
                  channels_last: bool = False) -> dict[str, Tensor]:
    """Crops and targets of a batch, augmented (or not, ``aug=None``).

    Args:
        images: (B, 3, P, P) uint8 packed crops, P = size + 2 pad (CPU or GPU).
        t: stored targets of the batch (CPU tensors): ``K_full``/``K_crop`` (B, 3, 3) f64,
            ``joints_cam`` (B, 42, 3) f64, ``joint_valid``/``vis_base`` (B, 42) bool, ``y`` (B, 218),
            ``rot_global`` (B, 2, 3, 3) f64, ``root`` (B, 2, 3) f64, ``has_params`` (B,) bool.
        size: output crop side S.
        aug: parameters per sample, or None (the centre S × S of the packed crop, exactly).
        channels_last: return the image in channels-last memory format.

    Returns:
        ``image`` (B, 3, S, S) float32 in [0, 1] on the images' device, ``K`` (B, 3, 3), ``joints_cam``
        (B, 42, 3), ``joints_2d`` (B, 42, 2), ``visible`` (B, 42) bool and ``y`` (B, 218) float32 (CPU),
        as ``InterHandDataset`` computes them for these parameters.
    """
    B = images.shape[0]
    if aug is None:
        tg = augment_targets(t, size, None)
        img = images[:, :, pad:pad + size, pad:pad + size].float() / UINT8_MAX
    else:
        tg = augment_targets(t, size, aug.angle, aug.scale, aug.shift)
        Rz, Kc = tg["Rz"], tg["K_crop64"]
        Kp = t["K_crop"].clone()
        Kp[:, :2, 2] += pad
        H = Kp @ Rz.transpose(1, 2) @ torch.linalg.inv(Kc)  # output crop pixel -> packed pixel (affine)
        theta = (_normalizer(size + 2 * pad, torch.float64) @ H @ torch.linalg.inv(_normalizer(size, torch.float64)))[:, :2]
        src = images.float() / UINT8_MAX - FILL_VALUE
        grid = Fn.affine_grid(theta.to(src.device, src.dtype), [B, 3, size, size], align_corners=False)
        img = Fn.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + FILL_VALUE
        img = batch_color_jitter(img, aug.brightness, aug.contrast, aug.saturation)
    if channels_last:
        img = img.contiguous(memory_format=torch.channels_last)
    return {"image": img, **{k: tg[k] for k in ("K", "joints_cam", "joints_2d", "visible", "y")}}


def collate_packed(batch: dict[str, Any]) -> dict[str, Any]:
    """DataLoader ``collate_fn`` for :class:`PackedDataset`, whose ``__getitems__`` already
    returns the collated batch."""
    return batch


class PackedDataset(torch.utils.data.Dataset):
    """A split of a packed store as training items, with batched augmentation.

    ``__getitems__(indices)`` (used by the DataLoader with :func:`collate_packed`) gathers the
    batch's crops and returns the collated batch dict of ``InterHandDataset`` (``image``,
    ``K``, ``joints_cam``, ``joints_2d``, ``joint_valid``, ``visible``, ``y``, ``has_params``,
    ``hand_type``, ``meta``), augmented with the parameters ``sample_augment(cfg, seed, index,
    epoch)``: the per-sample path's draws, so a resumed run sees the same batches.

    Args:
        store: the store folder (``handflow pack --out``); ``split``: which split.
        augment: False, True (default ranges) or an :class:`AugmentConfig`.
        root: the dataset root, to check that the store was packed from its annotations.
        device: where the crops are augmented (``"cuda"``: on the GPU; use ``num_workers=0``).
        channels_last: images in channels-last memory format.
        resident: hold the whole store as one tensor on ``device`` (copied on first use)
            instead of gathering from the memory map; default: on any device but the CPU.
    """

    def __init__(self, store: str | Path, split: str, augment: bool | AugmentConfig = False, seed: int = 0,
                 root: str | Path | None = None, device: str | torch.device = "cpu", channels_last: bool = False,
                 resident: bool | None = None) -> None:
        self.store, self.split = Path(store), split
        self.meta, self._images, arrays = open_store(store, split, root)
        self.size, self.pad = int(self.meta["image_size"]), int(self.meta["pad"])
        self.augment = AugmentConfig() if augment is True else (augment or None)
        self.seed, self.epoch = seed, 0
        self.device, self.channels_last = torch.device(device), channels_last
        self.resident = self.device.type != "cpu" if resident is None else bool(resident)
        self._dev_images: Tensor | None = None
        self.t = {k: torch.from_numpy(v) for k, v in arrays.items() if v.dtype.kind not in "US"}
        self.strings = {k: v for k, v in arrays.items() if v.dtype.kind in "US"}

    @property
    def image_size(self) -> int:
        """Training crop side S in pixels."""
        return self.size

    def __len__(self) -> int:
        return int(self.meta["shape"][0])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_images"], state["_dev_images"] = None, None  # reopened in the worker
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._images = np.memmap(self.store / self.split / IMAGES_FILE, dtype=np.uint8, mode="r",
                                 shape=tuple(self.meta["shape"]))

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (called by the sampler each epoch)."""
        self.epoch = int(epoch)

    def place(self, device: str | torch.device, channels_last: bool | None = None) -> PackedDataset:
        """Gather and augment on ``device`` from now on (resident there unless it is the CPU);
        ``channels_last`` (default: on CUDA) for the images."""
        dev = torch.device(device)
        if dev != self.device:
            self.device, self._dev_images, self.resident = dev, None, dev.type != "cpu" or self.resident
        self.channels_last = dev.type == "cuda" if channels_last is None else bool(channels_last)
        return self

    def _crops(self, idx: list[int]) -> Tensor:
        """(B, 3, P, P) uint8 crops of ``idx`` on :attr:`device`."""
        if not self.resident:
            return torch.from_numpy(self._images[np.asarray(idx)]).to(self.device)
        if self._dev_images is None:  # copied in chunks: no second full copy in host memory
            dev = torch.empty(self._images.shape, dtype=torch.uint8, device=self.device)
            for lo in range(0, len(dev), RESIDENT_COPY_ITEMS):
                dev[lo:lo + RESIDENT_COPY_ITEMS] = torch.from_numpy(np.array(self._images[lo:lo + RESIDENT_COPY_ITEMS]))
            self._dev_images = dev
        return self._dev_images[torch.as_tensor(idx, device=self.device)]

    def params(self, idx: list[int]) -> AugmentBatch | None:
        """The augmentation parameters of ``idx`` in this epoch (None without augmentation)."""
        if self.augment is None:
            return None
        return AugmentBatch.stack([sample_augment(self.augment, self.seed, i, self.epoch) for i in idx])

    def __getitems__(self, idx: list[int]) -> dict[str, Any]:
        return self.batch(idx, self.params(idx))

    def batch(self, idx: list[int], aug: AugmentBatch | None) -> dict[str, Any]:
        """The collated batch of items ``idx`` augmented with ``aug`` (module docstring)."""
        it = torch.as_tensor(idx, dtype=torch.long)
        t = {k: v[it] for k, v in self.t.items()}
        out = augment_batch(self._crops(list(idx)), t, self.size, self.pad, aug, self.channels_last)
        meta: dict[str, Any] = {k: t[k] for k in META_INT_KEYS}
        strings = {k: [str(s) for s in self.strings[k][it.numpy()]] for k in STR_KEYS}
        meta.update({k: strings[k] for k in META_STR_KEYS})
        return {**out, "joint_valid": t["joint_valid"], "has_params": t["has_params"], "hand_type": strings["hand_type"],
                "meta": meta}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return single_item(self.__getitems__([i]))

    def annotation(self, i: int) -> dict[str, Any]:
        """Un-augmented targets of item ``i`` (no image), as ``InterHandDataset.annotation``."""
        return {"y": self.t["y"][i].float(), "has_params": bool(self.t["has_params"][i]), "K": self.t["K_crop"][i].float(),
                "joints_cam": self.t["joints_cam"][i].float(), "joint_valid": self.t["joint_valid"][i]}


# ----------------------------------------------------------------------------- data module
class PackedDataModule(InterHandDataModule):
    """``InterHandDataModule`` that reads every split found in the packed store ``packed``
    (``data.packed``) and the others from the dataset. On a GPU trainer the store is copied to
    the device and augmented there (``num_workers`` is then 0) and the images are
    channels-last (pair it with a channels-last model); on the CPU the crops are gathered from
    the memory map and augmented in the loader (worker or main process)."""

    def __init__(self, *args: Any, packed: str | Path | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if packed is None:
            raise PackedStoreError("PackedDataModule needs packed= (a `handflow pack` folder)")
        if self.multihands is not None or self.features is not None or self.keypoints:
            raise PackedStoreError("data.packed trains on images only: not with data.multihands, data.features or "
                                   "model.backbone=keypoints (unset data.packed)")
        self.packed = Path(packed)
        if not (self.packed / "train" / META_FILE).is_file():
            open_store(self.packed, "train")  # raises the one-line message

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> PackedDataModule:
        """As ``InterHandDataModule.from_config`` with ``packed=cfg.data.packed``."""
        return super().from_config(cfg, **({"packed": cfg.data.packed} | overrides))

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def dataset(self, split: str) -> Any:
        if split not in self._ds and (self.packed / split / META_FILE).is_file():
            self._ds[split] = PackedDataset(self.packed, split, augment=self.augment and split == "train", seed=self.seed,
                                            root=self.root)
            if self._ds[split].size != self.size:
                raise PackedStoreError(f"{self.packed}/{split} holds {self._ds[split].size} px crops but data.image_size "
                                       f"is {self.size}: pack with --image-size {self.size}")
        return super().dataset(split)

    def _loader(self, split: str, shuffle: bool) -> Any:
        ds = self.dataset(split)
        if not isinstance(ds, PackedDataset):
            return super()._loader(split, shuffle)
        ds.place(self._device())  # the trainer's device: known only now (fit_normalizer read the dataset before)
        workers = 0 if ds.device.type != "cpu" else self.num_workers
        sampler = EpochShuffleSampler(ds, self.seed) if shuffle else None
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_packed,
                          worker_init_fn=worker_init, drop_last=shuffle, persistent_workers=False)
