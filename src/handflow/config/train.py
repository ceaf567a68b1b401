"""The training settings: the :class:`Config` schema, its presets, validation, old checkpoints.

>>> cfg = load_config("cpu", ["loss.w_det=0", "train.max_steps=200"])
>>> cfg.model.backbone
'resnet18'
>>> cfg.loss.active("det")
False

Presets live in ``handflow/configs/<name>.yaml`` (``cpu``: ResNet-18 at 128 px for 2 CPU
cores; ``paper``: ResNet-50 at 224 px, batch 64, GPU, mixed precision). A YAML file path
works too; it is applied on top of the dataclass defaults. Overrides are ``section.key=value``
strings, parsed as YAML scalars and type-checked against the field (``loss.w_det=0.0``,
``train.max_minutes=null``, ``loss.enabled=[nll,3d]``); the machinery is the one of every step
(:mod:`handflow.config.settings`, OmegaConf structured configs). Every checkpoint stores
``to_dict(cfg)``; :func:`saved_config` rebuilds and validates it. Unknown keys, wrong types and
out-of-range values raise :class:`ConfigError` (a ``ValueError``) naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from handflow.config.settings import ConfigError, build, read_yaml
from handflow.config.settings import from_dict as _build_from_dict
from handflow.constants import IMAGE_CONTEXTS

__all__ = [
    "Config", "ModelConfig", "LossConfig", "DataConfig", "TrainConfig", "load_config", "from_dict", "saved_config",
    "LEGACY_DEFAULTS", "validate", "check_hardware", "PRESETS", "MODEL_KINDS", "ACCELERATORS", "LOSS_TERMS",
    "BACKBONES", "PRECISIONS",
]

PRESETS = ("cpu", "paper")
#: names of the six loss terms (SPEC section 4) and ``kp2d`` (the keypoint head of
#: ``model.context=keypoints2d``; not the paper's), as used in logs and ``LossConfig.enabled``
LOSS_TERMS = ("nll", "det", "theta", "3d", "2d", "rot", "kp2d")
#: loss term -> its weight field in :class:`LossConfig`
LOSS_WEIGHT_FIELDS = {"nll": "w_nll", "det": "w_det", "theta": "w_theta", "3d": "w_3d", "2d": "w_2d", "rot": "w_rot",
                      "kp2d": "w_kp2d"}
#: ``keypoints``: no image; an MLP on the 2D keypoint evidence (handflow.models.keypoint_encoder, docs/lifting.md)
BACKBONES = ("resnet18", "resnet34", "resnet50", "keypoints")
#: ``model.kind``: HandFlowNet and the four baselines (``handflow.models.MODEL_REGISTRY`` holds their classes)
MODEL_KINDS = ("flow", "deterministic", "gaussian", "mcdropout", "cvae")
#: ``train.accelerator`` values Lightning accepts
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "32", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
LR_SCHEDULES = ("cosine", "none")
#: smallest crop side a ResNet's five stride-2 stages can pool meaningfully
MIN_IMAGE_SIZE = 32


@dataclass
class ModelConfig:
    """Network. ``kind``: ``flow`` (HandFlowNet) or a baseline (``deterministic``,
    ``gaussian``, ``mcdropout``, ``cvae``; ``dropout``, ``latent_dim`` and ``free_bits`` belong to
    them, docs/baselines.md). ``pretrained_path``: a LOCAL torchvision ImageNet
    state dict for the backbone (never downloaded); ``None`` trains from scratch.
    ``backbone_checkpoint``: a handflow checkpoint whose trained backbone initialises this
    one (fresh runs only); ``freeze_backbone``: keep the backbone fixed (weights and
    BatchNorm statistics), as the shared-feature protocol does (docs/evaluation.md).
    ``init_from``: a handflow checkpoint or weights file, or the name of a shipped model
    (``synthetic``, :data:`handflow.models.shipped.SHIPPED`), whose WHOLE network (backbone,
    head, parameter normalizer) starts this run (fresh runs only: fine-tuning); its architecture
    must be this config's. ``backbone=keypoints``: the keypoint-evidence protocol, conditioned on the 2D joints,
    visibility and crop camera instead of the image; ``keypoint_width`` is its encoder's
    width (``handflow.models.keypoint_encoder``). ``context``: the flow's context from an image
    backbone, ``pooled`` (the paper's) or ``keypoints2d`` (pooled feature ⊕ the soft-argmax 2D
    joints of a keypoint head on ``layer3`` ⊕ their confidence, trained by ``L_kp2d``;
    :class:`handflow.models.backbone.Backbone`)."""

    kind: str = "flow"
    backbone: str = "resnet18"
    pretrained_path: str | None = None
    flow_steps: int = 4
    flow_hidden: int = 512
    flow_blocks: int = 2
    scale_bound: float = 2.0
    dropout: float = 0.2  # mcdropout baseline
    latent_dim: int = 32  # cvae baseline
    free_bits: float = 0.1  # cvae baseline: KL floor in nats per latent dimension; 0 = plain ELBO (docs/baselines.md)
    backbone_checkpoint: str | None = None
    init_from: str | None = None
    freeze_backbone: bool = False
    keypoint_width: int = 256
    context: str = "pooled"


@dataclass
class LossConfig:
    """Loss weights (docs/training.md explains the values).

    A term is on when its weight is > 0 and (``enabled`` is ``None`` or it is listed in
    ``enabled``): ``loss.w_det=0`` and ``loss.enabled=[nll,theta,3d,2d,rot]`` both switch
    DetMag off. ``num_samples``: random samples per image for the sample terms of ``L_3D``,
    ``L_2D``, ``L_R`` (the z = 0 estimate is always used too); their 3D/2D terms are weighted by
    ``sample_3d_scale`` relative to the z = 0 term. ``joints3d_root_relative``: ``L_3D`` on
    each hand's wrist-relative joints plus a wrist-position term instead of on camera-frame
    joints (:func:`handflow.models.losses.joints3d_loss`). ``nll_noise``: std of the Gaussian noise
    added to the standardized targets of ``L_nll`` (ProHMR's σ = 0.005). ``theta_seed``:
    seed of the fixed per-image choice of the ``L_θ`` annotation. ``w_kp2d``: ``L_kp2d``, the L1
    error of the keypoint head's 2D joints (visible joints, normalized crop units); it acts only
    with ``model.context=keypoints2d`` and a trainable backbone.
    """

    w_nll: float = 0.2
    w_det: float = 0.05
    w_theta: float = 0.1
    w_3d: float = 1.0
    w_2d: float = 2.0
    w_rot: float = 0.05
    w_kp2d: float = 1.0
    enabled: list[str] | None = None
    num_samples: int = 2
    nll_noise: float = 0.005
    theta_seed: int = 0
    sample_3d_scale: float = 0.1
    joints3d_root_relative: bool = True

    def weight(self, term: str) -> float:
        """Weight of ``term`` (one of :data:`LOSS_TERMS`); 0 when the term is switched off."""
        if term not in LOSS_WEIGHT_FIELDS:
            raise ConfigError(f"unknown loss term {term!r}; known: {list(LOSS_TERMS)}")
        if self.enabled is not None and term not in self.enabled:
            return 0.0
        return float(getattr(self, LOSS_WEIGHT_FIELDS[term]))

    def active(self, term: str) -> bool:
        """True when ``term`` contributes to the loss."""
        return self.weight(term) > 0


@dataclass
class DataConfig:
    """Data. ``root``: an InterHand2.6M-layout folder (real or synthetic); ``hand_model``:
    ``openhand`` or ``mano`` (then ``mano_path``); ``multihands``: optional folder of
    MultiHands annotations used as extra NLL/DetMag targets (at most ``multihands_max``);
    ``features``: a ``handflow features`` folder: train on its cached backbone features
    instead of images (needs ``model.freeze_backbone`` and that backbone); ``feature_copies``:
    the augmented copies per training image that cache holds (``handflow features --copies``;
    1: one un-augmented feature per image; more need ``data.augment``, whose ranges the copies
    must have been drawn with).
    ``keypoint_noise_px``: with ``model.backbone=keypoints``, σ of the Gaussian noise on the
    visible 2D joints of the evidence, in pixels **at a 128 px crop** (scaled by
    ``image_size / 128``).
    ``packed``: a ``handflow pack`` folder: train (and validate, where packed) on its
    pre-decoded crops, augmented on whole batches (docs/training.md, "Packed store and batched
    augmentation"); its annotations must be those of ``root``."""

    root: str = "data_synth"
    image_size: int = 128
    batch_size: int = 32
    num_workers: int = 0
    augment: bool = True
    hand_model: str = "openhand"
    mano_path: str | None = None
    multihands: str | None = None
    multihands_max: int = 8
    features: str | None = None
    feature_copies: int = 1
    keypoint_noise_px: float = 2.0
    packed: str | None = None


@dataclass
class TrainConfig:
    """Optimisation and the Lightning trainer. Training stops at the first of ``max_steps``,
    ``max_epochs`` and ``max_minutes`` (wall-clock budget). ``lr_schedule``: ``cosine``
    (to ``lr × lr_min_factor`` at ``max_steps``) or ``none``. ``threads``: CPU threads."""

    max_steps: int = 3000
    max_epochs: int | None = None
    max_minutes: float | None = None
    lr: float = 3e-4
    lr_schedule: str = "cosine"
    lr_min_factor: float = 0.05
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    seed: int = 0
    out_dir: str = "runs/handflow"
    log_every: int = 10
    val_every: int = 500
    ckpt_every: int = 200
    threads: int = 2


@dataclass
class Config:
    """Everything a run needs; stored in every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- checkpoints
#: Keys added after checkpoints were first written, with the value that reproduces how a
#: checkpoint written without them was trained (its defaults of the time).
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"loss": {"joints3d_root_relative": False}}


def saved_config(d: dict[str, Any]) -> Config:
    """The :class:`Config` stored in a checkpoint (``hyper_parameters["config"]``); keys it
    predates take their :data:`LEGACY_DEFAULTS`, not today's defaults."""
    d = {**d}
    for section, keys in LEGACY_DEFAULTS.items():
        d[section] = {**keys, **(d.get(section) or {})}
    return from_dict(d)


def from_dict(d: Mapping[str, Any], cls: type | None = None) -> Any:
    """Build a (nested) settings dataclass, by default :class:`Config` (then validated), from a
    (partial) dict: missing keys keep their defaults; unknown keys raise :class:`ConfigError`
    naming them and the close ones."""
    cls = Config if cls is None else cls
    obj = _build_from_dict(d, cls)
    return validate(obj) if cls is Config else obj


def load_config(preset_or_yaml: str = "cpu", overrides: Sequence[str] = ()) -> Config:
    """Load a preset name (:data:`PRESETS`) or a YAML file, then apply ``section.key=value``
    overrides; the result is validated.

    Raises:
        FileNotFoundError: neither a preset nor an existing file.
        ConfigError: unknown key, wrong type, bad range, malformed override.
    """
    data, source = read_yaml(preset_or_yaml, PRESETS)
    return validate(build(Config, [(data, source)], overrides))


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(f"config: {msg}")


def validate(cfg: Config) -> Config:
    """Range and choice checks across the config; returns ``cfg`` or raises :class:`ConfigError`."""
    m, lc, d, t = cfg.model, cfg.loss, cfg.data, cfg.train
    _check(m.kind in MODEL_KINDS, f"model.kind={m.kind!r} (--model); choose one of {list(MODEL_KINDS)}")
    _check(m.backbone in BACKBONES, f"model.backbone={m.backbone!r}; choose one of {list(BACKBONES)}")
    _check(m.flow_steps >= 1 and m.flow_hidden >= 1 and m.flow_blocks >= 1, "model.flow_steps/hidden/blocks must be >= 1")
    _check(m.scale_bound > 0, f"model.scale_bound={m.scale_bound} must be > 0")
    _check(0 <= m.dropout < 1, f"model.dropout={m.dropout} must be in [0, 1)")
    _check(m.latent_dim >= 1, f"model.latent_dim={m.latent_dim} must be >= 1")
    _check(math.isfinite(m.free_bits) and m.free_bits >= 0, f"model.free_bits={m.free_bits} must be a finite number >= 0")
    for name in LOSS_WEIGHT_FIELDS.values():
        w = getattr(lc, name)
        _check(math.isfinite(w) and w >= 0, f"loss.{name}={w} must be a finite number >= 0")
    if lc.enabled is not None:
        bad = [e for e in lc.enabled if e not in LOSS_TERMS]
        _check(not bad, f"loss.enabled has unknown term(s) {bad}; known: {list(LOSS_TERMS)}")
    _check(any(lc.active(t) for t in LOSS_TERMS if t != "kp2d"),
           "every loss term is switched off (all weights 0 or loss.enabled=[])")
    _check(m.context in IMAGE_CONTEXTS, f"model.context={m.context!r}; choose one of {list(IMAGE_CONTEXTS)}")
    _check(m.context == "pooled" or m.backbone != "keypoints",
           "model.context=keypoints2d needs an image backbone: model.backbone=keypoints already reads 2D joints")
    _check(lc.num_samples >= 0, f"loss.num_samples={lc.num_samples} must be >= 0")
    _check(lc.nll_noise >= 0 and lc.sample_3d_scale >= 0, "loss.nll_noise and loss.sample_3d_scale must be >= 0")
    _check(d.image_size >= MIN_IMAGE_SIZE, f"data.image_size={d.image_size} must be >= {MIN_IMAGE_SIZE}")
    _check(d.batch_size >= 1 and d.num_workers >= 0, "data.batch_size must be >= 1 and data.num_workers >= 0")
    _check(d.hand_model != "mano" or bool(d.mano_path), "data.hand_model=mano needs data.mano_path (the MANO model folder)")
    _check(math.isfinite(d.keypoint_noise_px) and d.keypoint_noise_px >= 0,
           f"data.keypoint_noise_px={d.keypoint_noise_px} must be a finite number >= 0")
    _check(m.keypoint_width >= 1, f"model.keypoint_width={m.keypoint_width} must be >= 1")
    _check(m.init_from is None or m.backbone_checkpoint is None,
           "model.init_from starts the whole network and model.backbone_checkpoint only its backbone: give one of them")
    _check(m.backbone != "keypoints" or (d.features is None and m.pretrained_path is None),
           "model.backbone=keypoints reads no image: it takes neither data.features nor model.pretrained_path")
    _check(d.features is None or m.freeze_backbone,
           "data.features (cached backbone features) needs model.freeze_backbone=true: "
           "the cache is only valid for a fixed backbone")
    _check(d.feature_copies >= 1, f"data.feature_copies={d.feature_copies} must be >= 1")
    _check(d.feature_copies == 1 or (d.features is not None and d.augment),
           "data.feature_copies > 1 (augmented copies in a feature cache) needs data.features and data.augment=true")
    _check(t.precision in PRECISIONS, f"train.precision={t.precision!r}; choose one of {list(PRECISIONS)}")
    _check(t.lr_schedule in LR_SCHEDULES, f"train.lr_schedule={t.lr_schedule!r}; choose one of {list(LR_SCHEDULES)}")
    _check(t.lr > 0 and t.weight_decay >= 0 and t.grad_clip >= 0, "train.lr must be > 0, weight_decay and grad_clip >= 0")
    _check(t.max_steps >= 1 or t.max_steps == -1, f"train.max_steps={t.max_steps} must be >= 1 (or -1: no limit)")
    _check(t.max_epochs is None or t.max_epochs >= 1, "train.max_epochs must be >= 1 or null")
    _check(t.max_minutes is None or t.max_minutes > 0, "train.max_minutes must be > 0 or null")
    _check(t.accelerator in ACCELERATORS, f"train.accelerator={t.accelerator!r}; choose one of {list(ACCELERATORS)}")
    _check(_devices_ok(t.devices), f"train.devices={t.devices!r} (--devices); use a count >= 1, -1 or auto (all), "
           "or a list of device indices such as 0,1")
    _check(t.num_nodes >= 1 and t.log_every >= 1 and t.ckpt_every >= 1 and t.val_every >= 1 and t.threads >= 1,
           "train.num_nodes/log_every/ckpt_every/val_every/threads must be >= 1")
    return cfg


def _devices_ok(devices: int | str) -> bool:
    """Lightning's ``devices``: a count >= 1, -1 (all), ``auto``, or indices (``0,1`` / ``[0, 1]``)."""
    if isinstance(devices, int):
        return devices >= 1 or devices == -1
    text = str(devices).strip().strip("[]").replace(" ", "")
    if text in ("auto", "-1"):
        return True
    return bool(text) and all(part.isdigit() for part in text.split(","))


def check_hardware(cfg: Config) -> None:
    """Check ``train.accelerator``/``train.devices`` against this machine before Lightning does
    (its errors name its own internals, not our keys). Raises :class:`ConfigError`."""
    # lazy: handflow.config stays torch-free (the CLI checks settings before torch loads)
    import torch

    t = cfg.train
    if t.accelerator in ("gpu", "cuda"):
        n = torch.cuda.device_count()
        _check(n > 0, f"train.accelerator={t.accelerator} but no CUDA device is visible on this machine; "
               "use train.accelerator=cpu (or auto)")
        _check(not isinstance(t.devices, int) or t.devices <= n,
               f"train.devices={t.devices} but this machine has {n} CUDA device(s); use train.devices={n} or fewer")
    if t.accelerator == "mps":
        _check(bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
               "train.accelerator=mps but Apple's MPS backend is not available here; use train.accelerator=cpu")
    _check(t.accelerator != "tpu", "train.accelerator=tpu is not supported by handflow; use gpu or cpu")

