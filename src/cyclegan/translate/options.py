"""How a ``Translator`` runs and resizes: ``TranslateOptions``, checked once when it is made, and the
parsers for the textual forms of its fields (``"512"``, ``"640x480"``, ``"2G"``, ``"auto"``).

Errors name the parameter (``batch_size must be >= 1, got 0``); the command line rewrites those names
as its flags (``cyclegan.cli.flags``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from cyclegan.devices import MIN_MEMORY_BUDGET, TRANSLATE_PRECISIONS
from cyclegan.errors import TranslateError
from cyclegan.quantize import DEFAULT_LIMITS, Int8Limits

__all__ = ["TranslateOptions", "parse_bytes", "parse_size", "parse_tile"]


def parse_tile(value: str | int) -> str | int:
    """``auto`` | ``off`` | a tile side in pixels (>= 16) -> "auto" | "off" | int."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        text = str(value).strip().lower()
        if text in ("auto", "off"):
            return text
        try:
            n = int(text)
        except ValueError:
            raise TranslateError(f"tile {value!r}: expected auto, off or a tile size in pixels") from None
    if n < 16:
        raise TranslateError(f"tile {value!r}: tiles must be at least 16 pixels")
    return n


def parse_size(value: str | int | tuple[int, int]) -> tuple[int, int]:
    """``512`` -> (512, 512); ``640x480`` -> (640, 480), i.e. (width, height)."""
    if isinstance(value, tuple):
        w, h = value
    elif isinstance(value, int):
        w = h = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*(?:[xX*]\s*(\d+))?\s*", str(value))
        if not match:
            raise TranslateError(f"size {value!r}: expected N or WIDTHxHEIGHT, e.g. 512 or 640x480")
        w = int(match.group(1))
        h = int(match.group(2) or match.group(1))
    if w < 1 or h < 1:
        raise TranslateError(f"size {value!r}: width and height must be positive")
    return int(w), int(h)


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}


def parse_bytes(value: str | int, *, name: str = "memory_budget") -> int:
    """``2G``, ``512M``, ``1.5GB`` or a plain number of bytes -> bytes, at least 64M.

    ``name`` is the parameter the value was given for, named in the error (``memory_budget '1x': ...``).
    """
    if isinstance(value, int):
        n = value
    else:
        match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _UNITS:
            raise TranslateError(f"{name} {value!r}: expected a size such as 2G or 512M")
        try:
            n = int(float(match.group(1)) * _UNITS[unit])
        except ValueError:
            raise TranslateError(f"{name} {value!r}: expected a size such as 2G or 512M") from None
    if n < MIN_MEMORY_BUDGET:
        raise TranslateError(f"{name} {value!r}: must be at least 64M")
    return n


@dataclass(frozen=True, kw_only=True)
class TranslateOptions:
    """Everything about *how* a ``Translator`` translates, apart from the model and the device.

    Checked when made (a bad value is a one-line ``TranslateError`` naming the field); textual forms
    are parsed, so ``tile="512"``, ``size="640x480"`` and ``memory_budget="2G"`` come out as numbers.

    precision
        ``fp32`` | ``bf16`` | ``fp16`` (PyTorch autocast), ``auto`` (the fastest path within tolerance of
        fp32, chosen by ``cyclegan.runtime.choose_runtime``: a checked int8 model made earlier, bf16,
        ONNX Runtime or fp32) or ``int8`` (ONNX Runtime static quantization on the CPU, calibrated and
        checked against fp32, ``cyclegan.runtime.int8_runtime``). Exported ``.onnx`` files run as they
        are: ``auto``/``fp32``, or ``int8`` to quantize an fp32 file.
    tile
        ``auto`` (tile only when one pass would not fit ``memory_budget``), ``off``, or a tile side in
        pixels (>= 16). Tiles share the whole image's instance-norm statistics
        (``cyclegan.translate.tiling``), so tiling does not change the look.
    tile_overlap
        Pixels shared by neighbouring tiles (>= 0); None: a quarter of the tile, at most 128.
    memory_budget
        Bytes one forward pass may use (an int, or a size such as ``"2G"``, at least 64M); None: half
        of the device's free memory. Decides ``tile="auto"`` and how many images share a pass.
    batch_size
        Same-size images (or video frames) translated in one pass (>= 1).
    max_side
        Downsize (keeping the aspect ratio) so the longer side is at most this many pixels first.
    size
        Force the output size: ``N``, ``(width, height)`` or ``"WIDTHxHEIGHT"``; wins over ``max_side``.
    channels_last
        Run the PyTorch module in channels-last memory format (keeps ``precision="auto"`` on PyTorch).
    compile
        ``torch.compile`` the module for untiled passes (keeps ``precision="auto"`` on PyTorch).
    bytes_per_pixel
        Activation bytes per input pixel used to plan passes; None: estimated from the generator's width.
    calibration
        ``precision="int8"``: images (a folder or ``.npz``) of the domain translated from; None: the
        model's training images of that domain, found through its config.
    int8_limits
        ``precision="int8"``: how far the int8 model may move the calibration images from fp32; beyond
        them the translator is refused rather than silently worse.
    """

    precision: str = "fp32"
    tile: str | int = "auto"
    tile_overlap: int | None = None
    memory_budget: int | str | None = None
    batch_size: int = 4
    max_side: int | None = None
    size: tuple[int, int] | int | str | None = None
    channels_last: bool = False
    compile: bool = False
    bytes_per_pixel: float | None = None
    calibration: str | os.PathLike | None = None
    int8_limits: Int8Limits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if self.precision not in TRANSLATE_PRECISIONS:
            choices = ", ".join(TRANSLATE_PRECISIONS)
            raise TranslateError(f"precision {self.precision!r}: choose from {choices}")
        if self.batch_size < 1:
            raise TranslateError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_side is not None and self.max_side < 1:
            raise TranslateError(f"max_side must be >= 1, got {self.max_side}")
        if self.tile_overlap is not None and self.tile_overlap < 0:
            raise TranslateError(f"tile_overlap must be >= 0, got {self.tile_overlap}")
        if self.bytes_per_pixel is not None and not self.bytes_per_pixel > 0:
            raise TranslateError(f"bytes_per_pixel must be > 0, got {self.bytes_per_pixel}")
        # Frozen: the parsed forms replace the given ones once, here.
        object.__setattr__(self, "tile", parse_tile(self.tile))
        if self.size is not None:
            object.__setattr__(self, "size", parse_size(self.size))
        if isinstance(self.memory_budget, str):
            object.__setattr__(self, "memory_budget", parse_bytes(self.memory_budget))
        elif self.memory_budget is not None and self.memory_budget < 1:
            raise TranslateError(f"memory_budget must be >= 1 byte, got {self.memory_budget}")
