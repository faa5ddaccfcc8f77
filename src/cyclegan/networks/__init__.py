"""Generators, discriminators and their registries.

``build_generator(cfg.model.generator, init=cfg.model.init, init_gain=cfg.model.init_gain)`` and
``build_discriminator(...)`` are the entry points; ``GENERATORS`` / ``DISCRIMINATORS`` hold the names
that configs and the CLI accept.
"""

from cyclegan.networks.animegan import AnimeGANv2Generator
from cyclegan.networks.animegan_tf import AnimeGANv2TFGenerator
from cyclegan.networks.attention import AttentionGenerator
from cyclegan.networks.blocks import count_macs, count_parameters, init_weights
from cyclegan.networks.discriminators import (
    DISCRIMINATORS,
    DualHeadDiscriminator,
    NLayerDiscriminator,
    PixelDiscriminator,
    VanillaCNNDiscriminator,
    build_discriminator,
)
from cyclegan.networks.generators import (
    ANTIALIAS_MODES,
    GENERATORS,
    BlurDownsample,
    BlurUpsample,
    ResnetGenerator,
    UnetGenerator,
    binomial_filter,
    build_generator,
)
from cyclegan.networks.mobile import (
    FeatureProjections,
    MobileResnetGenerator,
    distill_channels,
    distill_features,
    has_distill_features,
)
from cyclegan.networks.vq import VectorQuantizer
from cyclegan.networks.whitebox import WhiteBoxGenerator

__all__ = [
    "ANTIALIAS_MODES",
    "DISCRIMINATORS",
    "GENERATORS",
    "AnimeGANv2Generator",
    "AnimeGANv2TFGenerator",
    "AttentionGenerator",
    "BlurDownsample",
    "BlurUpsample",
    "DualHeadDiscriminator",
    "FeatureProjections",
    "MobileResnetGenerator",
    "NLayerDiscriminator",
    "PixelDiscriminator",
    "ResnetGenerator",
    "UnetGenerator",
    "VanillaCNNDiscriminator",
    "VectorQuantizer",
    "WhiteBoxGenerator",
    "binomial_filter",
    "build_discriminator",
    "build_generator",
    "count_macs",
    "count_parameters",
    "distill_channels",
    "distill_features",
    "has_distill_features",
    "init_weights",
]
