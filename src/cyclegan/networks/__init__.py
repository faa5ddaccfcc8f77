"""Generators, discriminators and their registries.

``build_generator(cfg.model.generator, init=cfg.model.init, init_gain=cfg.model.init_gain)`` and
``build_discriminator(...)`` are the entry points; ``GENERATORS`` / ``DISCRIMINATORS`` hold the names
that configs and the CLI accept.
"""

from cyclegan.networks.attention import AttentionGenerator
from cyclegan.networks.blocks import count_parameters, init_weights
from cyclegan.networks.discriminators import (
    DISCRIMINATORS,
    DualHeadDiscriminator,
    NLayerDiscriminator,
    PixelDiscriminator,
    VanillaCNNDiscriminator,
    build_discriminator,
)
from cyclegan.networks.generators import GENERATORS, ResnetGenerator, UnetGenerator, build_generator
from cyclegan.networks.vq import VectorQuantizer

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "AttentionGenerator",
    "DualHeadDiscriminator",
    "NLayerDiscriminator",
    "PixelDiscriminator",
    "ResnetGenerator",
    "UnetGenerator",
    "VanillaCNNDiscriminator",
    "VectorQuantizer",
    "build_discriminator",
    "build_generator",
    "count_parameters",
    "init_weights",
]
