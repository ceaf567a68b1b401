"""The top-level functions of ``import handflow`` that wrap a sub-package in plain arguments:
:func:`synthesize`, :func:`train`, :func:`evaluate`, :func:`load_hand_model`, :func:`pretrained`. (:func:`handflow.predict`
lives in :mod:`handflow.inference`, :func:`handflow.load_model` in :mod:`handflow.predictor`.)

Each example runs as a doctest (``tests/test_api.py``), on tiny sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from handflow.config import load_config
from handflow.extras import require
from handflow.hand.registry import load_hand_model as _load_hand_model

__all__ = ["synthesize", "train", "evaluate", "load_hand_model", "pretrained"]


def synthesize(out: str | Path, frames: int = 2000, cameras: int = 16, image_size: int = 256, seed: int = 0, *,
               workers: int = 1, progress: bool = True, overwrite: bool = False, **settings: Any) -> Path:
    """Generate a synthetic two-hand dataset in the InterHand2.6M layout (``handflow synth``;
    docs/synthetic.md). A rerun with the same settings resumes; other settings are refused.

    Args:
        out: dataset root. frames: frames over all splits (each seen by ``cameras`` cameras).
        image_size: image side in pixels. seed: the dataset's seed (same seed, same bytes).
        workers: processes. progress: show a progress bar. overwrite: replace a dataset in ``out``.
        settings: other :class:`~handflow.data.synth.generate.SynthConfig` fields
            (``hand_model``, ``splits``, ``test_frames``).

    Returns:
        ``out`` as a Path.

    Examples:
        >>> import tempfile, handflow
        >>> root = handflow.synthesize(f"{tempfile.mkdtemp()}/data", frames=6, cameras=2, image_size=64, progress=False)
        >>> sorted(p.name for p in (root / "images").iterdir())
        ['test', 'train', 'val']
    """
    # lazy: handflow.synthesize loads the synthetic-data package only when called
    from handflow.data.synth.generate import SynthConfig, generate

    out = Path(out)
    generate(out, SynthConfig(frames=frames, cameras=cameras, image_size=image_size, seed=seed, **settings), workers=workers,
             progress=progress, overwrite=overwrite)
    return out


def train(data: str | Path, out: str | Path, config: str | Path = "cpu", overrides: Sequence[str] = (), *,
          model: str | None = None, resume: bool | str | Path = True, progress: bool = True) -> Path:
    """Train a model (``handflow train``; docs/training.md); needs ``handflow[train]``.

    Args:
        data: dataset root. out: run folder (checkpoints, logs).
        config: preset (``cpu``, ``paper``) or a YAML file.
        overrides: config overrides ``section.key=value`` (``train.max_steps=500``).
        model: model kind (``flow``, ``deterministic``, ``gaussian``, ``mcdropout``, ``cvae``).
        resume: True: continue ``out/checkpoints/last.ckpt`` when present; False; or a checkpoint path.
        progress: show Lightning's progress bar and model summary.

    Returns:
        the path of ``last.ckpt`` (for :func:`handflow.load_model`, :func:`handflow.predict`).

    Examples:
        >>> import tempfile, handflow
        >>> tmp = tempfile.mkdtemp()
        >>> data = handflow.synthesize(f"{tmp}/data", frames=6, cameras=2, image_size=64, progress=False)
        >>> tiny = ["train.max_steps=1", "data.image_size=64", "data.batch_size=2", "data.num_workers=0", "model.flow_hidden=32",
        ...         "train.max_minutes=null", "train.threads=1", "data.augment=false", "loss.num_samples=2"]
        >>> ckpt = handflow.train(data, f"{tmp}/run", overrides=tiny, progress=False)
        >>> ckpt.name, handflow.load_model(ckpt).image_size
        ('last.ckpt', 64)
    """
    require("lightning", "train", "training")
    # lazy: Lightning is the [train] extra (require() above names it)
    from handflow.training.runner import train as run

    extra = [f"data.root={data}", f"train.out_dir={out}", *([f"model.kind={model}"] if model else [])]
    cfg = load_config(str(config), [*overrides, *extra])
    how = str(resume) if isinstance(resume, Path) else resume
    if progress:
        return run(cfg, resume=how)
    return run(cfg, resume=how, enable_progress_bar=False, enable_model_summary=False)


def evaluate(checkpoint: str | Path, data: str | Path, out: str | Path, split: str = "test", samples: int = 100,
             **options: Any) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset split (``handflow evaluate``; docs/evaluation.md):
    per-image metrics and their summary, resumable; needs ``handflow[train]``.

    Args:
        checkpoint: a trained checkpoint. data: dataset root. out: output folder.
        split: the split. samples: S ≥ 1 samples per image.
        options: the other arguments of :func:`handflow.evaluation.evaluate` (``multihands``,
            ``batch_size``, ``device``, ``seed``, ``limit``, ``progress``, ``overwrite``, ...).

    Returns:
        the ``summary.json`` dict (``metrics[column] = {mean, std, sem, count}``).

    Examples:
        >>> import tempfile, handflow
        >>> from handflow.config import load_config
        >>> from handflow.predictor import Predictor
        >>> tmp = tempfile.mkdtemp()
        >>> data = handflow.synthesize(f"{tmp}/data", frames=6, cameras=2, image_size=64, progress=False)
        >>> cfg = load_config("cpu", ["data.image_size=64", "model.flow_hidden=32"])
        >>> ckpt = Predictor.from_config(cfg).save(f"{tmp}/untrained.ckpt")   # use a trained last.ckpt
        >>> summary = handflow.evaluate(ckpt, data, f"{tmp}/eval", samples=4, limit=2, progress=False)
        >>> summary["num_images"], sorted(summary["metrics"]["mpjpe_z0_rr"])   # mm, over the images
        (2, ['count', 'mean', 'sem', 'std'])
    """
    require("lightning", "train", "evaluation")
    # lazy: the evaluation package (and Lightning, the [train] extra) loads only when called
    from handflow.evaluation import evaluate as run

    return run(checkpoint, data, out, split=split, samples=samples, **options)


def load_hand_model(name: str = "openhand", path: str | Path | None = None, **kwargs: Any) -> Any:
    """A hand model by name: ``"openhand"`` (embedded, open) or ``"mano"`` (your official MANO
    files, ``path=`` folder or file; docs/mano.md). Called with local rotations (B, 16, 3, 3) and
    shape ``betas`` (B, 10), it returns joints (B, 21, 3) and vertices (B, V, 3) in mm.

    Examples:
        >>> import torch, handflow
        >>> hand = handflow.load_hand_model("openhand")
        >>> out = hand(torch.eye(3).expand(2, 16, 3, 3), torch.zeros(2, 10), "left")
        >>> out.joints.shape, out.vertices.shape[-1]
        (torch.Size([2, 21, 3]), 3)
    """
    return _load_hand_model(name, path=path, **kwargs)


def pretrained(name: str = "synthetic", device: str | Any = "cpu") -> Any:
    """A model shipped with the package, ready to predict (weights only, read with
    ``weights_only=True``; nothing is downloaded; :mod:`handflow.models.shipped` lists them).

    Args:
        name: ``"synthetic"`` (the image model, trained on the synthetic two-hand data with the
            open hand model; docs/training.md, "Shipped model") or ``"lifting"`` (2D keypoints to
            3D; docs/lifting.md).
        device: where an image model runs.

    Returns:
        an image model as a :class:`~handflow.predictor.Predictor` (``predictor(images, samples=S)``);
        the lifting model as a :class:`~handflow.lifting.LiftingModel` for
        :func:`handflow.predict_from_keypoints`.

    Raises:
        InputError: an unknown name. MissingFileError: the file is missing from this install.

    Examples:
        >>> import handflow, torch
        >>> predictor = handflow.pretrained()                  # "synthetic": the shipped image model
        >>> predictor(torch.rand(1, 3, 128, 128), samples=5).sample_joints.shape
        torch.Size([1, 5, 42, 3])
        >>> lifter = handflow.pretrained("lifting")
        >>> lifter.cfg.model.backbone, lifter.cfg.data.hand_model
        ('keypoints', 'openhand')
    """
    # lazy: the networks (torchvision, ~2 s) load only when a model is asked for
    from handflow.lifting import load_lifting_model
    from handflow.models.shipped import SHIPPED, shipped_path
    from handflow.predictor import Predictor

    path = shipped_path(name)
    if SHIPPED[name].kind == "keypoints":
        return load_lifting_model(path)
    return Predictor.from_checkpoint(path, device)
