"""Prediction on any image: ``handflow.predict(...)`` and the ``handflow predict`` command.

For each image: the z = 0 estimate and N samples as parameters (218) and as camera-frame
joints (42, 3) mm, optionally meshes. The backbone runs once per image; all samples reuse
its feature (and the flow's cached context projection).

Camera: without ``bbox`` the whole image is the crop (padded to a square about its
centre); without ``focal`` the focal length defaults to ``DEFAULT_FOCAL_FACTOR × max(W, H)``
pixels (a ~53° field of view, typical of phone and webcam images), which is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from handflow.data.crop import warp_to_crop
from handflow.geometry.camera import crop_intrinsics, intrinsics
from handflow.models.base import decode_joints

__all__ = ["predict", "Prediction", "DEFAULT_FOCAL_FACTOR", "IMAGE_SUFFIXES", "list_images"]

DEFAULT_FOCAL_FACTOR = 1.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Prediction:
    """Result for one image.

    Attributes:
        path: the input image.
        z0_params: (218,) physical parameters of the z = 0 estimate.
        sample_params: (S, 218).
        z0_joints: (42, 3) camera-frame mm.
        sample_joints: (S, 42, 3) camera-frame mm.
        K_crop: (3, 3) crop intrinsics; crop: (3, s, s) the network input.
        focal: focal length used (pixels of the full image); focal_is_default: whether it
            was the documented default.
        meshes: on request, ``{side: vertices (1+S, V, 3)}`` (index 0 = z = 0 estimate).
    """

    path: Path | None
    z0_params: Tensor
    sample_params: Tensor
    z0_joints: Tensor
    sample_joints: Tensor
    K_crop: Tensor
    crop: Tensor
    focal: float
    focal_is_default: bool
    meshes: dict[str, Tensor] = field(default_factory=dict)


def list_images(paths: list[str | Path] | str | Path) -> list[Path]:
    """Expand files and folders into image paths (sorted within folders)."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    for p in map(Path, items):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    if not out:
        raise FileNotFoundError(f"no images found in {items}")
    return out


def _load(path: Path) -> Tensor:
    try:
        with Image.open(path) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
    except (UnidentifiedImageError, OSError) as e:
        raise OSError(f"cannot read image {path}: {e}") from e


def _camera(W: int, H: int, focal: float | None, bbox: tuple[float, float, float, float] | None, size: int) -> tuple[Tensor, Tensor, float, bool]:
    f = float(focal) if focal else DEFAULT_FOCAL_FACTOR * max(W, H)
    K = intrinsics(torch.tensor(f), torch.tensor(f), torch.tensor(W / 2), torch.tensor(H / 2)).double()
    if bbox is None:
        side = float(max(W, H))
        box = torch.tensor([W / 2 - side / 2, H / 2 - side / 2, side, side], dtype=torch.float64)
    else:
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            raise ValueError(f"bbox must have positive width and height, got {bbox}")
        side = max(w, h)
        box = torch.tensor([x + w / 2 - side / 2, y + h / 2 - side / 2, side, side], dtype=torch.float64)
    return K, crop_intrinsics(K, box, size), f, focal is None


@torch.no_grad()
def predict(
    module: Any,
    images: list[str | Path] | str | Path | Tensor,
    samples: int = 100,
    bbox: tuple[float, float, float, float] | None = None,
    focal: float | None = None,
    meshes: bool = False,
    seed: int = 0,
    chunk: int = 1024,
) -> list[Prediction]:
    """Predict two-hand distributions.

    Args:
        module: a loaded :class:`~handflow.training.HandFlowModule` (see
            :func:`handflow.training.load_checkpoint`) or a checkpoint path.
        images: paths / a folder, or a (3, H, W) float tensor in [0, 1].
        samples: N samples per image.
        bbox: ``(x, y, w, h)`` box around both hands in image pixels (default: whole image).
        focal: focal length in pixels (default: ``DEFAULT_FOCAL_FACTOR × max(W, H)``).
        meshes: also return camera-frame vertices.
        seed: sampling seed.

    Returns:
        one :class:`Prediction` per image.
    """
    if isinstance(module, (str, Path)):
        from handflow.training import load_checkpoint

        module, _ = load_checkpoint(module)
    module.eval()
    model, hand, size = module.model, module.hand_model, module.cfg.data.image_size
    dev = next(model.parameters()).device
    items = [(None, images)] if isinstance(images, Tensor) else [(p, None) for p in list_images(images)]
    g = torch.Generator().manual_seed(seed)
    out = []
    for path, img in items:
        img = _load(path) if img is None else img
        if img.dim() != 3 or img.shape[0] != 3 or not torch.isfinite(img).all():
            raise ValueError(f"image must be a finite (3, H, W) tensor, got {tuple(img.shape)}")
        H, W = img.shape[1:]
        K, Kc, f, default_f = _camera(W, H, focal, bbox, size)
        crop = warp_to_crop(img, K, Kc, size)
        res = model.predict(crop[None].to(dev), max(samples, 0), g)
        z0, ys = res["z0"], res["samples"]
        Kb = Kc[None].float().to(dev)
        res = decode_joints(torch.cat([z0[:, None], ys], 1), Kb, size, hand, vertices=meshes)
        J, verts = (res if meshes else (res, {}))
        out.append(Prediction(path, z0[0].cpu(), ys[0].cpu(), J[0, 0].cpu(), J[0, 1:].cpu(), Kc.float(), crop, f, default_f,
                              {k: v[0].cpu() for k, v in verts.items()}))
    return out


def write_predictions(preds: list[Prediction], out: str | Path, module: Any, meshes: str | None = None, html: bool = True) -> list[str]:
    """Write per image ``<stem>.npz`` (params and joints), ``<stem>.png`` (figure),
    optionally ``<stem>.html`` (3D view) and meshes (``obj``/``ply``/``glb`` through trimesh).
    Returns one summary line per image."""
    from handflow.metrics import sample_spread
    from handflow.viz.predictions import plot_prediction, write_samples_html

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, p in enumerate(preds):
        stem = p.path.stem if p.path is not None else f"image{k:04d}"
        np.savez(out / f"{stem}.npz", z0_params=p.z0_params.numpy(), sample_params=p.sample_params.numpy(),
                 z0_joints=p.z0_joints.numpy(), sample_joints=p.sample_joints.numpy(), K_crop=p.K_crop.numpy(), focal=p.focal)
        spread = float(sample_spread(p.sample_joints[None])[0]) if len(p.sample_joints) > 1 else 0.0
        plot_prediction(p.crop, p.K_crop, p.z0_joints, p.sample_joints, out / f"{stem}.png",
                        title=f"{stem}: {len(p.sample_joints)} samples, mean spread {spread:.1f} mm")
        if html and len(p.sample_joints):
            write_samples_html(p.z0_joints, p.sample_joints, out / f"{stem}.html")
        if meshes:
            _write_meshes(p, module, out / stem, meshes)
        lines.append(f"{stem}: wrist depth {p.z0_joints[20, 2]:.0f} mm, spread {spread:.1f} mm, focal {p.focal:.0f} px"
                     + (" (default)" if p.focal_is_default else ""))
    return lines


def _write_meshes(p: Prediction, module: Any, base: Path, fmt: str) -> None:
    import trimesh

    if fmt not in ("obj", "ply", "glb"):
        raise ValueError(f"mesh format must be obj, ply or glb, got {fmt!r}")
    hand = module.hand_model
    parts = []
    for side, color in (("right", (228, 87, 46, 255)), ("left", (46, 134, 171, 255))):
        m = trimesh.Trimesh(p.meshes[side][0].numpy(), hand.faces_for(side).numpy(), process=False)
        m.visual.vertex_colors = color
        parts.append(m)
    trimesh.util.concatenate(parts).export(f"{base}_z0.{fmt}")
