"""Typed, frozen configuration, built and validated in one place.

Precedence (later wins): dataclass defaults (the CycleGAN paper) -> preset YAML -> ``--config`` YAML
-> command-line flags and ``--set section.key=value``. The resolved config is written as
``config.json`` in every run directory and inside every checkpoint, so any artefact can rebuild its
networks without flags.

    schema      the dataclasses (``Config`` and its sections) and the closed sets of values every run
                reads; imports nothing from the project, so the parts name it in type hints
    kinds       what each model kind reads (``KINDS``) and keys that take effect only with another
    loading     YAML/JSON reading, presets, ``--set`` parsing, ``build_config``, ``replace``
    validation  ``validate`` (ranges, registry names, each part's own rules, network size and fit) and
                ``refuse_unused`` (keys the chosen kind or network would ignore)
"""

from cyclegan.config.kinds import (
    ACTIVE_WHEN,
    ADAPTIVE_WEIGHTING,
    DISTILL_REAL,
    EDGE_PROMOTE_DIRECTIONS,
    KINDS,
    MODEL_KINDS,
    KindOptions,
)
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
    COMPILE_MODES,
    INITS,
    LR_SCALING,
    NETWORK_NAMES,
    PREPROCESS,
    Config,
    DataConfig,
    DiscriminatorConfig,
    DistillConfig,
    GeneratorConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    dotted,
)
from cyclegan.config.validation import (
    MAX_DISCRIMINATOR_LAYERS,
    MAX_NETWORK_BYTES,
    MAX_RESIDUAL_BLOCKS,
    check_discriminator_fits,
    estimate_parameters,
    generator_size_multiple,
    refuse_unused,
    validate,
)
from cyclegan.networks.generators import ANTIALIAS_MODES as ANTIALIAS
from cyclegan.networks.options import NORMS
from cyclegan.networks.options import UPSAMPLE_MODES as UPSAMPLE

__all__ = [
    "ACTIVE_WHEN", "ADAPTIVE_WEIGHTING", "ANTIALIAS", "COMPILE_MODES", "DISTILL_REAL",
    "EDGE_PROMOTE_DIRECTIONS", "INITS", "KINDS", "LR_SCALING", "MAX_CONFIG_BYTES", "MAX_DISCRIMINATOR_LAYERS",
    "MAX_NETWORK_BYTES", "MAX_RESIDUAL_BLOCKS", "MAX_YAML_DEPTH", "MODEL_KINDS", "NETWORK_NAMES", "NORMS",
    "PREPROCESS", "PRESET_DIR", "UPSAMPLE", "Config", "DataConfig", "DiscriminatorConfig", "DistillConfig",
    "GeneratorConfig", "KindOptions", "LossConfig", "ModelConfig", "OptimConfig", "TrainConfig",
    "build_config", "check_discriminator_fits", "config_from_dict", "dotted", "estimate_parameters",
    "generator_size_multiple", "list_presets", "load_config_json", "parse_set", "preset_dict",
    "refuse_unused", "replace", "validate",
]
