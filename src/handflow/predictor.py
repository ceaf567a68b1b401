"""Batched prediction as a plain ``nn.Module``: ``handflow.load_model(path)`` -> :class:`Predictor`.

No Lightning is imported: the checkpoint is read with ``weights_only=True``
(:func:`handflow.models.checkpoint.load_model`), the hand model is rebuilt from the stored
config. ``predictor(images, boxes=None, cameras=None, samples=100)`` takes a ``(B, 3, H, W)``
tensor, a list of ``(3, H, W)`` tensors (any sizes) or image paths / folders, with per-image
boxes and cameras; each image is warped to its crop (its own box and intrinsics), the crops are
stacked, the backbone runs ONCE on the batch and the head draws every image's samples in one
call; the result is a :class:`BatchPrediction` of batched tensors (B images, S samples).

Sampling randomness: one generator (``seed``, or the one passed) draws the samples of a whole
batch, so an image's samples depend on the seed and on the batch it is predicted in (its
position, the batch's size). The z = 0 estimate depends on neither. A generator per image would
make them independent of the batch at the cost of one head call per image (1.4x the batch's time
at 100 samples on 2 CPU cores, docs/benchmarks.md), so it is not done.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import handflow
from handflow.config import Config, to_dict
from handflow.data.crop import warp_to_crop
from handflow.errors import HandflowError, InputError
from handflow.hand.base import HandModel
from handflow.hand.registry import hand_model_named
from handflow.inference import (
    Box,
    Camera,
    ImageJob,
    Prediction,
    check_finite,
    check_image,
    check_samples,
    crop_camera,
    load_image,
    plan_or_raise,
    warn_unknown_keys,
)
from handflow.models import build_model
from handflow.models.base import HandPoseModel, decode_joints
from handflow.models.checkpoint import load_model as load_network

__all__ = ["Predictor", "BatchPrediction", "load_model", "as_predictor", "load_job_images", "warn_unknown_keys"]


@dataclass
class BatchPrediction:
    """Results for B images with S samples each (CPU tensors); ``result[i]`` is image i's
    :class:`~handflow.inference.Prediction`, ``list(result)`` all of them.

    Attributes:
        z0_params: (B, 218) physical parameters of the z = 0 estimates.
        sample_params: (B, S, 218).
        z0_joints: (B, 42, 3) camera-frame mm.
        sample_joints: (B, S, 42, 3) camera-frame mm.
        K_crop: (B, 3, 3) float32 crop intrinsics.
        K: (B, 3, 3) float64 full-image intrinsics.
        boxes: (B, 4) float64 square crop boxes ``[x0, y0, side, side]`` in image pixels.
        crops: (B, 3, s, s) the network inputs.
        focal_is_default: (B,) bool, whether an image's focal length was the default.
        meshes: on request ``{side: (B, 1 + S, V, 3)}`` camera-frame vertices (index 0: z = 0).
        paths: the input files (None for tensors).
    """

    z0_params: Tensor
    sample_params: Tensor
    z0_joints: Tensor
    sample_joints: Tensor
    K_crop: Tensor
    K: Tensor
    boxes: Tensor
    crops: Tensor
    focal_is_default: Tensor
    meshes: dict[str, Tensor] = field(default_factory=dict)
    paths: list[Path | None] = field(default_factory=list)

    def __len__(self) -> int:
        return self.z0_params.shape[0]

    def __getitem__(self, i: int) -> Prediction:
        return Prediction(self.paths[i] if self.paths else None, self.z0_params[i], self.sample_params[i], self.z0_joints[i],
                          self.sample_joints[i], self.K_crop[i], self.crops[i], float(self.K[i, 0, 0]),
                          bool(self.focal_is_default[i]), {k: v[i] for k, v in self.meshes.items()}, self.K[i], self.boxes[i])

    def __iter__(self) -> Iterator[Prediction]:
        return (self[i] for i in range(len(self)))


class Predictor(nn.Module):
    """A trained model ready to predict: ``model`` (a :class:`~handflow.models.HandPoseModel`),
    ``hand_model`` and ``cfg`` (the training config: crop size, hand model). Always in eval mode
    unless you call ``.train()``; no gradients are recorded by :meth:`forward`.

    Examples:
        >>> import handflow, torch
        >>> from handflow.config import load_config
        >>> predictor = Predictor.from_config(load_config("cpu", ["data.image_size=64", "model.flow_hidden=32"]))  # untrained
        >>> out = predictor(torch.rand(2, 3, 90, 120), samples=3)
        >>> out.z0_joints.shape, out.sample_joints.shape
        (torch.Size([2, 42, 3]), torch.Size([2, 3, 42, 3]))
    """

    def __init__(self, model: HandPoseModel, hand_model: HandModel, cfg: Config) -> None:
        if getattr(model, "uses_keypoints", False):
            raise InputError("this is a 2D-keypoint lifting model (model.backbone=keypoints), not an image model: use "
                             "`handflow predict --keypoints FILE` or handflow.predict_from_keypoints (docs/lifting.md)")
        super().__init__()
        self.model, self.hand_model, self.cfg = model, hand_model, cfg
        self.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: Config) -> Predictor:
        """An untrained predictor of ``cfg`` (for tests and examples; train it first for real use)."""
        return cls(build_model(cfg), hand_model_of(cfg), cfg)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """Load a checkpoint (``weights_only=True``, no Lightning) onto ``device``; see :func:`load_model`."""
        model, cfg = load_network(path)
        return cls(model, hand_model_of(cfg), cfg).to(device)

    @classmethod
    def from_module(cls, module: Any) -> Predictor:
        """Share the model and hand model of a loaded training module (``handflow.training.load_checkpoint``)."""
        return cls(module.model, module.hand_model, module.cfg)

    def save(self, path: str | Path) -> Path:
        """Write the weights and config as a checkpoint that :func:`load_model` and
        :func:`handflow.training.load_checkpoint` read (tensors and plain data only, no optimizer state)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {f"model.{k}": v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save({"hyper_parameters": {"config": to_dict(self.cfg)}, "state_dict": state,
                    "handflow": {"version": handflow.__version__}}, path)
        return path

    @property
    def image_size(self) -> int:
        """The crop side the model takes."""
        return int(self.cfg.data.image_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ prediction
    def crop(self, image: Tensor, camera: Camera, box: Box | None) -> tuple[Tensor, Tensor, Tensor, Tensor, bool]:
        """One (3, H, W) image in [0, 1] -> its crop (3, s, s), K (3, 3) and K_crop (3, 3)
        float64, square box (4,) float64, and whether the focal length is the default."""
        H, W = image.shape[1:]
        K, Kc, square, focal_is_default = crop_camera(W, H, camera, box, self.image_size)
        return warp_to_crop(image, K, Kc, self.image_size), K, Kc, square, focal_is_default

    @torch.no_grad()
    def predict_checked(self, images: Sequence[Tensor], cameras: Sequence[Camera], boxes: Sequence[Box | None],
                        samples: int, meshes: bool = False, generator: torch.Generator | None = None,
                        paths: Sequence[Path | None] | None = None) -> BatchPrediction:
        """The batched core on already checked inputs: B images (3, H_i, W_i) in [0, 1] with
        their cameras and boxes (None: the whole image) -> :class:`BatchPrediction` (outputs
        not checked for NaN; see :func:`~handflow.inference.check_finite`)."""
        parts = [self.crop(img, cam, box) for img, cam, box in zip(images, cameras, boxes)]
        crops, K, Kc, square = (torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]),
                                torch.stack([p[2] for p in parts]), torch.stack([p[3] for p in parts]))
        dev, size = self.device, self.image_size
        res = self.model.predict(crops.to(dev), samples, generator)
        z0, ys = res["z0"], res["samples"]
        y = torch.cat([z0[:, None], ys], 1)
        verts: dict[str, Tensor] = {}
        if meshes:
            J, verts = decode_joints(y, Kc.float().to(dev), size, self.hand_model, vertices=True)
        else:
            J = decode_joints(y, Kc.float().to(dev), size, self.hand_model)
        J = J.cpu()
        return BatchPrediction(z0.cpu(), ys.cpu(), J[:, 0], J[:, 1:], Kc.float(), K, square, crops,
                               torch.tensor([p[4] for p in parts]), {k: v.cpu() for k, v in verts.items()},
                               list(paths) if paths is not None else [None] * len(parts))

    def forward(self, images: Tensor | Sequence[Tensor] | Sequence[str | Path] | str | Path,
                boxes: Mapping[str, Any] | Sequence[Any] | None = None,
                cameras: Mapping[str, Any] | Sequence[Any] | None = None, samples: int = 100, *,
                bbox: Any = None, focal: Any = None, principal: Any = None, K: Any = None, meshes: bool = False,
                seed: int = 0, generator: torch.Generator | None = None) -> BatchPrediction:
        """Predict B images in one batch.

        Args:
            images: a (B, 3, H, W) float tensor in [0, 1], a list of (3, H_i, W_i) tensors,
                or image files / folders.
            boxes: per image ``(x, y, w, h)`` pixels (or None: ``bbox``, else the whole image),
                a sequence of B or a mapping keyed by file name / path (docs/predict.md).
            cameras: per image a 3 × 3 K, ``{"K"}``, ``{"focal", "princpt"}`` or a
                :class:`~handflow.inference.Camera`; its parts replace the global camera's.
            samples: S ≥ 0 samples per image (0: the z = 0 estimate only).
            bbox: the box of images without their own.
            focal: the focal length (pixels, ``f`` or ``(fx, fy)``) of images without their own camera.
            principal: the principal point of images without their own camera.
            K: the 3 × 3 intrinsics of images without their own camera.
            meshes: also return camera-frame vertices.
            seed: the samples' randomness, unless ``generator`` is given.
            generator: the samples' randomness (wins over ``seed``).

        Returns:
            :class:`BatchPrediction` (z0_params (B, 218), sample_params (B, S, 218), z0_joints
            (B, 42, 3), sample_joints (B, S, 42, 3), K_crop (B, 3, 3), ...).

        Raises:
            InputError, CorruptFileError, FileNotFoundError: a bad argument or image (checked
            before the network runs). ModelOutputError: a NaN or inf in an image's outputs.
        """
        samples = check_samples(samples)
        jobs = plan_or_raise(images, bbox, focal, principal, K, boxes, cameras)
        imgs: list[Tensor] = []
        for img in load_job_images(jobs):
            if isinstance(img, Exception):
                raise img
            imgs.append(img)
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        out = self.predict_checked(imgs, [j.camera for j in jobs], [j.box for j in jobs], samples, meshes, g,
                                   [j.source for j in jobs])
        for job, p in zip(jobs, out):
            check_finite(p, job.label)
        return out


def hand_model_of(cfg: Config) -> HandModel:
    """The hand model a config names (MANO from ``data.mano_path``)."""
    return hand_model_named(cfg.data.hand_model, cfg.data.mano_path)


def load_job_images(jobs: Sequence[ImageJob]) -> list[Tensor | Exception]:
    """Each planned job's image (3, H, W) in [0, 1] (a tensor input, or its file decoded and
    checked), or the error that stops it (its planned error, CorruptFileError, InputError)."""
    out: list[Tensor | Exception] = []
    for job in jobs:
        if job.error is not None:
            out.append(job.error)
            continue
        try:
            out.append(job.image if job.image is not None else check_image(load_image(job.file), job.label))
        except HandflowError as e:
            out.append(e)
    return out


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """Load a trained checkpoint as a :class:`Predictor` (a plain ``nn.Module``, in eval mode).

    The file is read with ``weights_only=True``: a checkpoint whose pickle would run code is
    refused before anything runs. Lightning is not needed.

    Args:
        path: ``handflow train``'s ``last.ckpt``, a snapshot, or a :meth:`Predictor.save` file.
        device: where the network runs (``"cpu"``, ``"cuda"``, ...).

    Raises:
        MissingFileError, UnsafeFileError, CorruptFileError: see :func:`handflow.safeio.load_torch_file`.
        CheckpointMismatch: not a handflow checkpoint, or weights that do not fit its config.

    Examples:
        >>> import tempfile, torch, handflow
        >>> from handflow.config import load_config
        >>> path = f"{tempfile.mkdtemp()}/tiny.ckpt"   # use your runs/NAME/checkpoints/last.ckpt
        >>> _ = Predictor.from_config(load_config("cpu", ["data.image_size=64", "model.flow_hidden=32"])).save(path)
        >>> predictor = handflow.load_model(path, device="cpu")
        >>> out = predictor(torch.rand(4, 3, 64, 64), samples=10)   # (B, 3, H, W) in [0, 1]
        >>> out.sample_params.shape, out.z0_joints.shape, len(out)
        (torch.Size([4, 10, 218]), torch.Size([4, 42, 3]), 4)
    """
    return Predictor.from_checkpoint(path, device)


def as_predictor(model: Any) -> Predictor:
    """A :class:`Predictor`, from a checkpoint path (:func:`load_model`), a loaded training
    module (sharing its weights) or a predictor (returned as is)."""
    if isinstance(model, Predictor):
        return model
    if isinstance(model, (str, Path)):
        return load_model(model)
    if all(hasattr(model, a) for a in ("model", "hand_model", "cfg")):
        model.eval()
        return Predictor.from_module(model)
    raise TypeError(f"expected a checkpoint path, a Predictor or a loaded module, got {type(model).__name__}")
