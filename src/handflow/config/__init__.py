"""The one settings system of handflow, for every step (issue #19).

Each step's settings are a dataclass, its schema: training :class:`Config` (here), synthesis
``handflow.data.synth.settings.SynthConfig``, MultiHands ``GenerateConfig`` /
``PerturbConfig`` / ``EngineConfig``, augmentation ``AugmentConfig``. They are loaded the same
way (:mod:`handflow.config.settings`, on OmegaConf structured configs): defaults, then a YAML
preset (package data in ``handflow/configs/``) or file, then dotted ``key=value`` overrides;
unknown keys and wrong types are one-line :class:`ConfigError`\\ s. What a step stores with its
outputs, and compares on resume, is :func:`settings_of` and its :func:`fingerprint`, through
:mod:`handflow.fingerprint` (docs/settings.md).
"""

from handflow.config.settings import (
    PRESET_PACKAGE,
    ConfigError,
    build,
    fingerprint,
    from_yaml,
    parse_override,
    parse_shard,
    read_yaml,
    schema_fields,
    settings_of,
    to_dict,
    to_yaml,
)
from handflow.config.train import (
    ACCELERATORS,
    BACKBONES,
    LEGACY_DEFAULTS,
    LOSS_TERMS,
    LOSS_WEIGHT_FIELDS,
    LR_SCHEDULES,
    MIN_IMAGE_SIZE,
    MODEL_KINDS,
    PRECISIONS,
    PRESETS,
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    check_hardware,
    from_dict,
    load_config,
    saved_config,
    validate,
)

__all__ = [
    "Config", "ModelConfig", "LossConfig", "DataConfig", "TrainConfig", "ConfigError",
    "load_config", "to_dict", "from_dict", "saved_config", "LEGACY_DEFAULTS", "validate", "check_hardware",
    "PRESETS", "MODEL_KINDS", "ACCELERATORS", "LOSS_TERMS", "LOSS_WEIGHT_FIELDS", "LR_SCHEDULES", "BACKBONES",
    "PRECISIONS", "MIN_IMAGE_SIZE",
    "PRESET_PACKAGE", "build", "from_yaml", "to_yaml", "read_yaml", "parse_override", "parse_shard", "schema_fields",
    "settings_of", "fingerprint",
]
