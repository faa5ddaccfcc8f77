"""The options a network reads from its config section, declared by the network itself.

Each registered generator or discriminator names a frozen dataclass of the ``model.generator`` /
``model.discriminator`` keys it reads (``GENERATORS.register("resnet", options=ResnetOptions)``), as
torchvision's builders own their parameters. Its factory reads them through ``read_options`` only, so
the declaration cannot drift from what is used; its ``check(key)`` holds the rules that concern this
network alone; and config validation refuses a key set to a non-default value for a network that does
not declare it. A network registered without options reads only the section's common keys (``name``
and ``ngf`` / ``ndf``).

The allowed values of the keys several networks share are defined here, once.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from cyclegan.errors import ConfigError, short_repr
from cyclegan.registry import did_you_mean

NORMS = ("instance", "batch", "none")
UPSAMPLE_MODES = ("transpose", "resize")  # transpose (paper) | resize (nearest + conv, no checkerboard)

T = TypeVar("T")


def read_options(cls: type[T], section) -> T:
    """The typed options ``cls`` of one network, taken from its config section."""
    return cls(**{f.name: getattr(section, f.name) for f in dataclasses.fields(cls)})


def option_names(cls: type | None) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls)) if cls is not None else ()


def require_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {short_repr(value)} is not allowed{did_you_mean(value, allowed)}; "
                          f"choose from {', '.join(sorted(allowed))}")


def require_at_least(key: str, value, low) -> None:
    if value < low:
        raise ConfigError(f"{key}: must be >= {low}, got {short_repr(value)}")


def require_at_most(key: str, value, high) -> None:
    if value > high:
        raise ConfigError(f"{key}: must be <= {high}, got {short_repr(value)}")


def require_fraction(key: str, value: float) -> None:
    """``value`` in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key}: must be in [0, 1), got {value}")


@dataclasses.dataclass(frozen=True)
class ConvOptions:
    """Options of the convolutional generators built from norm / dropout / upsampling blocks."""

    norm: str = "instance"
    dropout: float = 0.0  # the paper's CycleGAN uses none; pix2pix-style 0.5 is an option
    upsample: str = "transpose"

    def check(self, key: str) -> None:
        require_choice(f"{key}.norm", self.norm, NORMS)
        require_fraction(f"{key}.dropout", self.dropout)
        require_choice(f"{key}.upsample", self.upsample, UPSAMPLE_MODES)


# Structural counts the config check must build on the meta device, one module each: capped so the
# check stays instant. The paper uses 6 or 9 residual blocks; every discriminator halves the input at
# least n_layers times, so more than 30 layers could not fit any image.
MAX_RESIDUAL_BLOCKS = 1000
MAX_DISCRIMINATOR_LAYERS = 30


@dataclasses.dataclass(frozen=True)
class ResidualOptions(ConvOptions):
    """Options of the generators with a stack of residual blocks at a quarter of the resolution."""

    n_blocks: int = 9  # paper: 9 at 256px, 6 at 128px

    def check(self, key: str) -> None:
        super().check(key)
        require_at_least(f"{key}.n_blocks", self.n_blocks, 0)
        require_at_most(f"{key}.n_blocks", self.n_blocks, MAX_RESIDUAL_BLOCKS)
