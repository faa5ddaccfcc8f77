"""Typed, frozen configuration, built and validated in one place.

Precedence (later wins): dataclass defaults (the CycleGAN paper) -> preset YAML -> ``--config`` YAML
-> command-line flags and ``--set section.key=value``. The resolved config is written as
``config.json`` in every run directory and inside every checkpoint, so any artefact can rebuild its
networks without flags.

    schema      the dataclasses (``Config`` and its sections) and the closed sets of values
    loading     YAML/JSON reading, presets, ``--set`` parsing, ``build_config``, ``replace``
    validation  ``validate``: every range, cross-field and registry-name check, network size and fit
"""

from cyclegan.config.loading import (
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    PRESET_DIR,
    build_config,
    config_from_dict,
    list_presets,
    load_config_json,
    parse_set,
    preset_dict,
    replace,
)
from cyclegan.config.schema import (
    ADAPTIVE_WEIGHTING,
    ANTIALIAS,
    DISTILL_REAL,
    EDGE_PROMOTE_DIRECTIONS,
    INITS,
    MODEL_KINDS,
    NETWORK_NAMES,
    NORMS,
    PREPROCESS,
    UPSAMPLE,
    Config,
    DataConfig,
    DiscriminatorConfig,
    DistillConfig,
    GeneratorConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from cyclegan.config.validation import (
    MAX_DISCRIMINATOR_LAYERS,
    MAX_NETWORK_BYTES,
    MAX_RESIDUAL_BLOCKS,
    check_discriminator_fits,
    estimate_parameters,
    generator_size_multiple,
    validate,
)

__all__ = [
    "ADAPTIVE_WEIGHTING", "ANTIALIAS", "DISTILL_REAL", "EDGE_PROMOTE_DIRECTIONS", "INITS", "MAX_CONFIG_BYTES",
    "MAX_DISCRIMINATOR_LAYERS", "MAX_NETWORK_BYTES", "MAX_RESIDUAL_BLOCKS", "MAX_YAML_DEPTH", "MODEL_KINDS",
    "NETWORK_NAMES", "NORMS", "PREPROCESS", "PRESET_DIR", "UPSAMPLE", "Config", "DataConfig",
    "DiscriminatorConfig", "DistillConfig", "GeneratorConfig", "LossConfig", "ModelConfig", "OptimConfig",
    "TrainConfig", "build_config", "check_discriminator_fits", "config_from_dict", "estimate_parameters",
    "generator_size_multiple", "list_presets", "load_config_json", "parse_set", "preset_dict", "replace",
    "validate",
]
