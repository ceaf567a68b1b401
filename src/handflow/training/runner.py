"""Training entry point: builds the data, fits the parameter normalizer, runs Lightning.

(``handflow.training.runner``; the package exports :func:`train` itself, so no module shares
its name: ``handflow.training.train`` is the function.)"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from handflow.atomic import atomic_path
from handflow.config import Config, check_hardware, to_dict
from handflow.data.datamodule import InterHandDataModule
from handflow.data.features import check_backbone
from handflow.fingerprint import mismatch_message, settings_diff
from handflow.models import model_class
from handflow.models.checkpoint import (
    CheckpointMismatch,
    checkpoint_step,
    load_state,
    network_weights,
    read_checkpoint,
    stored_config,
)
from handflow.models.shipped import resolve_weights
from handflow.safeio import load_torch_file
from handflow.training.module import HandFlowModule

__all__ = ["train", "fit_normalizer", "init_backbone", "init_network", "architecture_diff", "load_checkpoint",
           "check_compatible", "CheckpointMismatch",
           "MidEpochResume", "LastCheckpoint"]

log = logging.getLogger(__name__)

#: start of Lightning's warning on a resume from a mid-epoch checkpoint with a plain DataLoader
#: (``training_epoch_loop.py``): untrue for our runs, which :class:`MidEpochResume` re-aligns exactly
_LIGHTNING_MID_EPOCH_WARNING = r"You're resuming from a checkpoint that ended before the epoch ended"

#: Lightning's logger that notes, on every checkpoint *save* without an explicit ``weights_only``,
#: "`weights_only` was not set, defaulting to `False`": it means that the optimizer state is
#: written too (what resume needs), but reads like an unsafe load next to ours, which are all
#: ``weights_only=True``
_LIGHTNING_CHECKPOINT_LOGGER = "lightning.pytorch.trainer.connectors.checkpoint_connector"


class _DropSaveDefaultNote(logging.Filter):
    """Drops Lightning's "`weights_only` was not set" note on saving (:data:`_LIGHTNING_CHECKPOINT_LOGGER`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`weights_only` was not set" not in record.getMessage()


class _BatchAlignedSampler(torch.utils.data.Sampler[int]):
    """Wraps the training sampler so that each pass over it starts where the run's total
    batch count says: epoch ``e = b // n`` (passed to the wrapped sampler's ``set_epoch``)
    and the first ``b % n`` batches of that epoch skipped (indices only, nothing is read),
    where ``b`` is Lightning's ``batch_progress.total.processed`` and ``n`` the batches per epoch."""

    def __init__(self, inner: Any, trainer: pl.Trainer, batch_size: int) -> None:
        self.inner, self.trainer, self.batch_size = inner, trainer, batch_size

    def _position(self) -> tuple[int, int]:
        """(epoch, batches of it already done) from the run's total batch count."""
        per_epoch = len(self.inner) // self.batch_size
        done = int(self.trainer.fit_loop.epoch_loop.batch_progress.total.processed)
        return divmod(done, max(per_epoch, 1))

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before each epoch (after the plain sampler): the epoch derived
        from the batch count wins, before DataLoader workers copy the dataset."""
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(self._position()[0])

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Any]:
        epoch, skip = self._position()
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)
        if skip:
            log.info("resuming inside epoch %d at batch %d: exact (the data order is re-aligned and the %d batches already "
                     "trained on are skipped, tests/test_training.py)", epoch, skip, skip)
        it = iter(self.inner)
        for _ in range(skip * self.batch_size):
            if next(it, None) is None:
                break
        yield from it


class MidEpochResume(pl.Callback):
    """Exact resume from a checkpoint written at any step, not only at epoch ends.

    Lightning restores the step, optimizer, schedule and batch counters, but a plain
    ``DataLoader`` restarts from an epoch's first batch. Our data order is a pure function of
    (seed, epoch) (``EpochShuffleSampler``) and the loss noise of (seed, step), so this callback
    re-aligns the loader with the number of batches already processed (see
    :class:`_BatchAlignedSampler`); the continuation is then bit-identical to an uninterrupted
    run (``tests/test_training.py``). Needs ``drop_last`` batches (the training loader has it;
    without them it warns that resume is exact at epoch ends only). :func:`train` therefore
    silences Lightning's generic warning that a mid-epoch resume "can cause unreliable results".
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bs = getattr(trainer.train_dataloader, "batch_sampler", None)
        if bs is None or not hasattr(bs, "sampler") or not getattr(bs, "drop_last", False):
            log.warning("training loader without a drop_last batch sampler: resume is exact at epoch ends only")
            return
        if not isinstance(bs.sampler, _BatchAlignedSampler):
            bs.sampler = _BatchAlignedSampler(bs.sampler, trainer, bs.batch_size)


class ProgressBar(RichProgressBar):
    """Lightning's rich bar, whose epoch label reads "Epoch 5/-2" in a run bounded by steps
    (``max_epochs=-1``): the label names the last epoch only when there is one."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        label = f"Epoch {current_epoch}" + (f"/{max_epochs - 1}" if max_epochs is not None and max_epochs > 0 else "")
        return f"{label:{len(self.validation_description)}}" if len(self.validation_description) > len(label) else label


class LastCheckpoint(pl.Callback):
    """Writes ``last.ckpt`` every ``every`` steps and when an epoch or the run ends (also when
    ``max_steps``/``max_time`` stops it mid-epoch), atomically (temp file + rename)."""

    def __init__(self, path: Path, every: int) -> None:
        self.path, self.every, self._saved_at = Path(path), max(1, every), -1

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step == self._saved_at or trainer.sanity_checking:
            return
        # full (the default): optimizer, loops and schedule for exact resume
        if trainer.is_global_zero:
            with atomic_path(self.path) as tmp:
                trainer.save_checkpoint(tmp)
        else:  # other ranks write nothing, but save_checkpoint's barrier needs every rank
            trainer.save_checkpoint(self.path)
        self._saved_at = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)


@torch.no_grad()
def fit_normalizer(module: HandFlowModule, dataset: Any, max_items: int = 4096, seed: int = 0) -> int:
    """Fit the parameter statistics from the training annotations (no images decoded) and
    initialise the model's data-dependent layers (ActNorm) on them."""
    n = len(dataset)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_items].tolist()
    get = getattr(dataset, "annotation", dataset.__getitem__)
    ys = [it["y"] for it in map(get, idx) if it["has_params"]]
    if len(ys) < 2:
        raise ValueError("the training split has fewer than 2 images with hand-model parameters: cannot fit the normalizer")
    y = torch.stack(ys).float()
    model = module.model
    model.normalizer.fit(y)
    model.initialize(torch.zeros(len(y), model.backbone.dim), model.normalizer.normalize(y))
    return len(ys)


def _trainer(cfg: Config, out: Path, extra_callbacks: list | None = None, enable_progress_bar: bool = True,
             **overrides: Any) -> pl.Trainer:
    t = cfg.train
    # periodic snapshots for select/evaluate/predict carry weights, config and statistics but no
    # optimizer state (a third of the size); last.ckpt (full) is the one training resumes from
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="step{step:07d}", auto_insert_metric_name=False,
                           every_n_train_steps=max(t.ckpt_every, 1), save_last=False, save_top_k=-1, save_weights_only=True)
    epoch_ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="epoch{epoch:04d}", auto_insert_metric_name=False,
                                 every_n_epochs=1, save_on_train_epoch_end=True, save_last=False, save_top_k=1,
                                 save_weights_only=True)
    last = LastCheckpoint(out / "checkpoints" / "last.ckpt", t.ckpt_every)
    kw: dict[str, Any] = dict(
        default_root_dir=str(out), max_steps=t.max_steps, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=t.precision, gradient_clip_val=t.grad_clip or None, log_every_n_steps=max(t.log_every, 1),
        logger=[CSVLogger(str(out), name="logs"), TensorBoardLogger(str(out), name="tb")],
        callbacks=[ckpt, epoch_ckpt, last, MidEpochResume(), *([ProgressBar()] if enable_progress_bar else []),
                   *(extra_callbacks or [])], enable_progress_bar=enable_progress_bar,
        check_val_every_n_epoch=None, val_check_interval=t.val_every, limit_val_batches=10, num_sanity_val_steps=0,
        deterministic=False,
    )
    if t.max_epochs is not None:
        kw["max_epochs"] = t.max_epochs
    if t.max_minutes:
        kw["max_time"] = {"minutes": float(t.max_minutes)}
    kw.update(overrides)
    return pl.Trainer(**kw)


def train(cfg: Config, resume: str | bool = True, datamodule: Any = None, enable_progress_bar: bool = True,
          extra_callbacks: list | None = None, **trainer_overrides: Any) -> Path:
    """Train ``cfg``; resumes from ``out_dir/checkpoints/last.ckpt`` when present (or from an
    explicit checkpoint path). Returns the path of ``last.ckpt``.

    Every checkpoint read (resume, ``model.backbone_checkpoint``) is ``weights_only=True``: a
    file that would run code is refused (:class:`~handflow.errors.UnsafeFileError`) by
    :func:`check_compatible` / :func:`load_checkpoint` before Lightning opens it, and Lightning's
    own resume reads it with ``weights_only=True`` as well."""
    check_hardware(cfg)  # train.accelerator/devices against this machine, before any data is read
    torch.set_num_threads(max(1, cfg.train.threads))
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if datamodule is None:
        datamodule = InterHandDataModule.from_config(cfg)
    module = HandFlowModule(cfg)
    last = out / "checkpoints" / "last.ckpt"
    if isinstance(resume, (str, Path)) and resume not in (True, False):
        ckpt_path: str | None = str(resume)
    else:
        ckpt_path = str(last) if resume and last.exists() else None
    if ckpt_path is None and cfg.model.init_from is not None:
        init_network(module, cfg)  # the normalizer and ActNorm come with the weights: nothing to fit
    elif ckpt_path is None:
        init_backbone(module, cfg)
        n = fit_normalizer(module, datamodule.dataset("train"), seed=cfg.train.seed)
        log.info("parameter normalizer fitted on %d training images", n)
    else:
        check_compatible(ckpt_path, cfg)
        log.info("resuming from %s", ckpt_path)
    trainer = _trainer(cfg, out, extra_callbacks=extra_callbacks, enable_progress_bar=enable_progress_bar, **trainer_overrides)
    note, drop = logging.getLogger(_LIGHTNING_CHECKPOINT_LOGGER), _DropSaveDefaultNote()
    note.addFilter(drop)
    try:
        with warnings.catch_warnings():  # scoped to this fit: our mid-epoch resume is exact (MidEpochResume)
            warnings.filterwarnings("ignore", message=_LIGHTNING_MID_EPOCH_WARNING, category=PossibleUserWarning)
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    finally:
        note.removeFilter(drop)
    return last


def init_backbone(module: HandFlowModule, cfg: Config) -> None:
    """Copy the backbone of ``cfg.model.backbone_checkpoint`` (a checkpoint, a weights file such as
    ``handflow export`` writes, float16 weights widened to the module's float32, or a shipped
    model's name) into a fresh ``module`` and, with ``cfg.data.features``, check that the feature
    cache was made by that backbone.

    Raises:
        CheckpointMismatch: another backbone architecture or image size.
        handflow.data.features.FeatureCacheError: the cache belongs to another backbone.

    A donor with the paper's pooled context may start a ``model.context=keypoints2d`` run (not on
    cached features): its ResNet is copied and the keypoint head starts fresh.
    """
    src = cfg.model.backbone_checkpoint
    if src is None:
        if cfg.data.features is not None:
            raise CheckpointMismatch("data.features needs model.backbone_checkpoint: the checkpoint whose backbone made "
                                     "the cache")
        return
    donor, dcfg = load_checkpoint(resolve_weights(src))
    # a pooled-context donor lends its ResNet to a keypoints2d run, whose keypoint head starts fresh
    resnet_only = (dcfg.model.context, cfg.model.context) == ("pooled", "keypoints2d") and cfg.data.features is None
    for what, a, b in (("backbone", dcfg.model.backbone, cfg.model.backbone),
                       ("backbone context", dcfg.model.context, cfg.model.context),
                       ("image size", dcfg.data.image_size, cfg.data.image_size),
                       ("hand model", dcfg.data.hand_model, cfg.data.hand_model)):
        if a != b and not (resnet_only and what == "backbone context"):
            raise CheckpointMismatch(f"model.backbone_checkpoint {src} has {what} {a!r}, this config {b!r}")
    if resnet_only:
        module.model.backbone.net.load_state_dict(donor.model.backbone.net.state_dict())
    else:
        module.model.backbone.load_state_dict(donor.model.backbone.state_dict())
    if cfg.data.features is not None:
        check_backbone(cfg.data.features, module.model.backbone, f"model.backbone_checkpoint={src}",
                       f"run `handflow features --checkpoint {src}` again")
    log.info("backbone initialised from %s%s", src, " (frozen)" if cfg.model.freeze_backbone else "")


def init_network(module: HandFlowModule, cfg: Config) -> Path:
    """Fill a fresh ``module`` with the whole network of ``cfg.model.init_from`` (a checkpoint,
    a weights file, or a shipped model's name): backbone, head, parameter normalizer and ActNorm
    statistics (fine-tuning). Float16 weights are widened to the module's dtype. Returns the file read.

    Raises:
        CheckpointMismatch: another architecture (:data:`RESUME_KEYS` and the kind's own fields), naming every key.
        MissingFileError, UnsafeFileError, CorruptFileError: see :func:`handflow.safeio.load_torch_file`.
        InputError: an unknown shipped-model name.
    """
    assert cfg.model.init_from is not None
    path = resolve_weights(cfg.model.init_from)
    ck = load_torch_file(path)
    arch = architecture_diff(stored_config(ck, path), cfg)
    if arch:
        raise CheckpointMismatch(mismatch_message(f"model.init_from={cfg.model.init_from}", arch,
                                                  "train with its architecture (those values as overrides)"))
    load_state(module.model, network_weights(ck), path)
    log.info("network initialised from %s (step %d)", path, checkpoint_step(ck))
    return path


#: what a resumed run must share with its checkpoint (with the saved model kind's own
#: architecture fields, ``model_class(kind).config_fields``): the network's shape and its inputs
RESUME_KEYS = ("model.kind", "model.backbone", "model.context", "data.hand_model", "data.image_size")
#: the fix named when a checkpoint's architecture differs from the requested config's
RESUME_FIX = "use a matching config (those values as overrides) or another output folder"


def _flat(cfg: Config, section: str) -> dict[str, Any]:
    """``{"section.key": value}`` of one section of ``cfg``, as stored in checkpoints."""
    return {f"{section}.{k}": v for k, v in to_dict(getattr(cfg, section)).items()}


def architecture_diff(saved: Config, cfg: Config) -> dict[str, tuple[Any, Any]]:
    """The settings that make ``saved``'s weights unfit for ``cfg``'s network (:data:`RESUME_KEYS`
    and the saved kind's own architecture fields: flow steps/hidden/blocks, cVAE latent_dim ...),
    as :func:`handflow.fingerprint.settings_diff` reports them; empty when the weights fit."""
    fields = model_class(saved.model.kind).config_fields if saved.model.kind == cfg.model.kind else ()
    keys = (*RESUME_KEYS, *(f"model.{f}" for f in fields))
    old, new = {**_flat(saved, "model"), **_flat(saved, "data")}, {**_flat(cfg, "model"), **_flat(cfg, "data")}
    return settings_diff({k: old[k] for k in keys}, {k: new[k] for k in keys})


def check_compatible(path: str | Path, cfg: Config) -> None:
    """Check that training can resume from checkpoint ``path`` with ``cfg``.

    The comparison is the shared one of every step's resume (:func:`handflow.fingerprint.settings_diff`,
    messages by :func:`~handflow.fingerprint.mismatch_message`), but the policy is training's
    own, not "any other setting is refused" (:func:`~handflow.fingerprint.check_or_record`):

    * the architecture (:data:`RESUME_KEYS` and the saved kind's own fields, e.g. ``model.flow_steps``
      or ``model.latent_dim``) must match: the weights would not fit; refused naming every key that differs;
    * other ``loss.*`` settings are resumed with a warning naming them (a deliberate change of
      weights, e.g. fine-tuning with ``loss.w_det=0``);
    * the rest (``train.*``: steps, learning rate, devices; data paths, workers) may change freely.

    Raises:
        CheckpointMismatch: another architecture, or a weights-only snapshot
            (``stepNNNNNNN.ckpt``/``epochNNNN.ckpt``) that cannot resume training.
        MissingFileError, UnsafeFileError, CorruptFileError: see :func:`handflow.safeio.load_torch_file`.
    """
    ck = load_torch_file(path)
    saved = stored_config(ck, path)
    if "optimizer_states" not in ck:
        raise CheckpointMismatch(f"{path} holds weights only (periodic snapshots do): training resumes from a full checkpoint, "
                                 f"OUT/checkpoints/last.ckpt; to start a new run from these weights use "
                                 f"model.init_from={path} (the whole network) or model.backbone_checkpoint={path} "
                                 f"(backbone), or evaluate/predict it directly")
    arch = architecture_diff(saved, cfg)
    if arch:
        raise CheckpointMismatch(mismatch_message(str(path), arch, RESUME_FIX))
    changed = settings_diff(_flat(saved, "loss"), _flat(cfg, "loss"))
    if changed:  # allowed (a deliberate change of weights), but never silently
        log.warning("resuming with other loss settings than it was trained with: %s", mismatch_message(
            str(path), changed, "pass the saved values as overrides to continue it unchanged"))


def load_checkpoint(path: str | Path, map_location: str = "cpu", expect_hand_model: str | None = None) -> tuple[Any, Config]:
    """Load a trained model: returns ``(HandFlowModule in eval mode, Config)``.

    The file is read with ``weights_only=True`` (:func:`handflow.safeio.load_torch_file`): a
    checkpoint whose pickle would run code is refused before anything runs.

    Raises:
        MissingFileError: no such checkpoint (a ``FileNotFoundError``).
        UnsafeFileError: the file holds Python objects beyond tensors and plain data.
        CorruptFileError: empty, truncated or not a torch file.
        CheckpointMismatch: not a handflow checkpoint, or ``expect_hand_model`` differs from the checkpoint's.
    """
    ck, cfg = read_checkpoint(path, map_location, expect_hand_model)
    module = HandFlowModule(cfg)
    load_state(module, ck["state_dict"], path)
    module.eval()
    return module, cfg
