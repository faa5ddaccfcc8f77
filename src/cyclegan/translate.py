"""Translate photos, folders and streams at full resolution with any saved or exported generator.

There is one pre/post-processing path, shared by every model format (PyTorch, TorchScript, ONNX
Runtime) and every input kind (files, PIL images, numpy arrays, video frames)::

    uint8 [B, 3, H, W] -> to_model_range -> reflection pad to size_multiple -> whole or tiled forward
    -> crop back to H x W -> to_uint8

so the output has the input's exact size unless ``max_side`` / ``size`` ask for a resize first.

Tiling: when one forward pass would not fit the memory budget (``tile="auto"``) or ``tile=N`` asks
for it, the padded image is cut into overlapping tiles whose outputs are blended with raised-cosine
weights; across every overlap the two weights sum to one, so no tile edge can show as a step.
Instance norm (the CycleGAN default) would normalise every tile by its own statistics and give each
one a slightly different colour cast. For eager PyTorch models the statistics are therefore taken
from one pass over the whole image (downscaled to fit the budget when needed) and shared by all
tiles; ONNX and TorchScript models cannot be instrumented that way and use per-tile statistics,
which the blending turns into slow, seamless colour drifts rather than steps.
"""

from __future__ import annotations

import contextlib
import glob
import io
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor, nn

from cyclegan.config import Config
from cyclegan.devices import (
    MIN_MEMORY_BUDGET,
    PRECISIONS,
    apply_threads,
    default_memory_budget,
    resolve_device,
)
from cyclegan.errors import ImageLoadError, TranslateError
from cyclegan.image import (
    IMAGE_EXTENSIONS,
    load_image_rgba,
    pad_to_multiple,
    save_image_atomic,
    split_rgb_alpha,
    to_model_range,
    to_uint8,
)
from cyclegan.runtime import CallableRunner, RuntimeChoice, TorchRunner, choose_runtime

__all__ = [
    "OUTPUT_FORMATS",
    "OutputOptions",
    "TranslateSummary",
    "Translator",
    "blend_weights",
    "pad_to_multiple",
    "parse_bytes",
    "parse_size",
    "parse_tile",
    "tile_starts",
    "translate_paths",
]

# --format name -> (Pillow format, file extension)
OUTPUT_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}
_KEEP_EXTENSIONS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}

# Peak memory of one generator forward pass per input pixel, in units of ngf float32 values. The
# paper's ResNet-9 (ngf 64) peaks at ~0.97 KB/px on CPU in fp32 (measured, 1024x1024, RSS); 4.5 x 64
# x 4 B = 1.15 KB/px adds room for the padded input, the output and the tile accumulators. U-Nets
# need less per pixel, so the estimate errs on the safe side for them.
_ACTIVATION_FACTOR = 4.5
_DEFAULT_NGF = 64


# ------------------------------------------------------------------------------------- small parsers


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
            raise TranslateError(f"--tile {value!r}: expected auto, off or a tile size in pixels") from None
    if n < 16:
        raise TranslateError(f"--tile {value!r}: tiles must be at least 16 pixels")
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
            raise TranslateError(f"--size {value!r}: expected N or WIDTHxHEIGHT, e.g. 512 or 640x480")
        w = int(match.group(1))
        h = int(match.group(2) or match.group(1))
    if w < 1 or h < 1:
        raise TranslateError(f"--size {value!r}: width and height must be positive")
    return int(w), int(h)


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}


def parse_bytes(value: str | int) -> int:
    """``2G``, ``512M``, ``1.5GB`` or a plain number of bytes -> bytes."""
    if isinstance(value, int):
        n = value
    else:
        match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _UNITS:
            raise TranslateError(f"--memory-budget {value!r}: expected a size such as 2G or 512M")
        try:
            n = int(float(match.group(1)) * _UNITS[unit])
        except ValueError:
            raise TranslateError(f"--memory-budget {value!r}: expected a size such as 2G or 512M") from None
    if n < MIN_MEMORY_BUDGET:
        raise TranslateError(f"--memory-budget {value!r}: must be at least 64M")
    return n


# ------------------------------------------------------------------------------------ devices, memory


# ----------------------------------------------------------------------------------- padding, tiling


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ~``overlap`` shared.

    Starts are multiples of ``multiple`` (so every tile sees the same stride grid as the whole image)
    and spread evenly; the last tile ends exactly at ``length``.
    """
    if length <= tile:
        return [0]
    overlap = min(overlap, tile - multiple)
    n = math.ceil((length - overlap) / (tile - overlap))
    last = length - tile
    starts = {(round(i * last / (n - 1)) // multiple) * multiple for i in range(n)}
    starts.add(last)
    return sorted(starts)


def _ramp(n: int) -> Tensor:
    # Raised cosine sampled at pixel centres: never exactly 0, and ramp(n) + ramp(n).flip(0) == 1.
    return 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n)


def blend_weights(starts: Sequence[int], tile: int) -> list[Tensor]:
    """1-D blending weights (float32 [tile]) for each tile: ramps up over the overlap with the previous
    tile and down over the overlap with the next one, so overlapping weights sum to one."""
    weights = []
    for i, s in enumerate(starts):
        w = torch.ones(tile, dtype=torch.float64)
        if i > 0:
            a = starts[i - 1] + tile - s  # pixels shared with the previous tile
            if a > 0:
                w[:a] *= _ramp(a)
        if i < len(starts) - 1:
            b = s + tile - starts[i + 1]
            if b > 0:
                w[tile - b :] *= _ramp(b).flip(0)
        weights.append(w.float())
    return weights


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# ------------------------------------------------------------------------ shared instance-norm stats


def _input_stat_norms(module: nn.Module) -> list[nn.Module]:
    """Instance-norm layers that normalise by the statistics of their input (not running stats)."""
    if isinstance(module, torch.jit.ScriptModule):
        return []
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.instancenorm._InstanceNorm) and (m.training or not m.track_running_stats)
    ]


def _record_stats(norms: list[nn.Module], run: Callable[[Tensor], Tensor], x: Tensor) -> dict:
    """Run ``x`` once and keep each norm layer's input mean and variance ([1, C, 1, 1] float32)."""
    stats: dict[nn.Module, tuple[Tensor, Tensor]] = {}

    def hook(mod: nn.Module, args: tuple) -> None:
        v = args[0].float()
        stats[mod] = (v.mean(dim=(2, 3), keepdim=True), v.var(dim=(2, 3), unbiased=False, keepdim=True))

    handles = [m.register_forward_pre_hook(hook) for m in norms]
    try:
        run(x)
    finally:
        for h in handles:
            h.remove()
    return stats


def _normalise_with(mod: nn.Module, mean: Tensor, var: Tensor) -> Callable[[Tensor], Tensor]:
    inv_std = torch.rsqrt(var + mod.eps)

    def forward(x: Tensor) -> Tensor:
        y = (x.float() - mean) * inv_std  # [N, C, h, w] with one image's [1, C, 1, 1] statistics
        if mod.affine:
            y = y * mod.weight.view(1, -1, 1, 1) + mod.bias.view(1, -1, 1, 1)
        return y.to(x.dtype)

    return forward


@contextlib.contextmanager
def _frozen_stats(stats: dict) -> Iterator[None]:
    """Make each recorded norm layer use its recorded statistics (instance attribute shadows forward).

    Not thread-safe: the module is patched in place for the duration of one tiled image.
    """
    try:
        for mod, (mean, var) in stats.items():
            mod.forward = _normalise_with(mod, mean, var)
        yield
    finally:
        for mod in stats:
            mod.__dict__.pop("forward", None)


# ---------------------------------------------------------------------------------------- Translator


@dataclass
class _Item:
    """One image on its way through: RGB pixels, optional alpha, and how to hand it back."""

    rgb: np.ndarray  # [H, W, 3] uint8, already resized
    alpha: np.ndarray | None  # [H, W] uint8
    kind: str = "pil"  # "pil" | "numpy"
    numpy_channels: int = 3  # 4 when a numpy RGBA came in (returned as RGBA)


def _resize_array(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (arr.shape[1], arr.shape[0]) == size:
        return arr
    return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.LANCZOS))


class Translator:
    """Translate images with one generator at their full size (padding, tiling, batching inside).

    ``model`` is an ``nn.Module`` (eager or TorchScript) with a ``size_multiple`` attribute, or any
    callable with the generator convention (float [B, 3, H, W] in [-1, 1] -> same), e.g. an ONNX
    Runtime session from ``cyclegan.export``, which then needs ``size_multiple``. Most users want
    ``Translator.from_checkpoint``.

    Calling the translator with a PIL image returns a PIL image, with a numpy [H, W, 3] (or [H, W],
    [H, W, 4]) uint8 array returns a numpy array, and with a list of them returns a list; same-size
    images are batched. Alpha is kept (RGB translated, alpha re-attached); grayscale comes back RGB.

    ``precision="auto"`` lets ``cyclegan.runtime.choose_runtime`` pick the fastest path within
    tolerance of fp32 (bf16 autocast, ONNX Runtime or PyTorch fp32); ``runtime`` says which and why.
    ``threads``: None leaves PyTorch's thread count alone, 0 caps it at the CPUs this process may use,
    N sets it (process-wide, as ``torch.set_num_threads``).
    """

    def __init__(
        self,
        *,
        model: nn.Module | Callable[[Tensor], Tensor],
        size_multiple: int | None = None,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        tile: str | int = "auto",
        tile_overlap: int | None = None,
        memory_budget: int | None = None,
        batch_size: int = 4,
        max_side: int | None = None,
        size: tuple[int, int] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        bytes_per_pixel: float | None = None,
        direction: str | None = None,
        config: Config | None = None,
        source: str | None = None,
        threads: int | None = None,
    ) -> None:
        if precision not in (*PRECISIONS, "auto"):
            raise TranslateError(f"--precision {precision!r}: choose from auto, {', '.join(PRECISIONS)}")
        if batch_size < 1:
            raise TranslateError(f"--batch-size must be >= 1, got {batch_size}")
        if max_side is not None and max_side < 1:
            raise TranslateError(f"--max-side must be >= 1, got {max_side}")
        if tile_overlap is not None and tile_overlap < 0:
            raise TranslateError(f"--tile-overlap must be >= 0, got {tile_overlap}")
        self.tile = parse_tile(tile)
        self.size = parse_size(size) if size is not None else None
        self.max_side = max_side
        self.batch_size = batch_size
        self.tile_overlap = tile_overlap
        self.direction = direction
        self.config = config
        self.source = source
        apply_threads(threads)
        if isinstance(model, nn.Module):
            self.device = resolve_device(device)
            if size_multiple is None:
                size_multiple = getattr(model, "size_multiple", None)
            session = None
            if precision == "auto":
                # channels_last / compile are PyTorch options, so asking for them keeps PyTorch.
                self.runtime, session = choose_runtime(
                    model, self.device, int(size_multiple or 4), allow_onnx=not (channels_last or compile),
                    threads=torch.get_num_threads(),
                )
            else:
                self.runtime = RuntimeChoice("torch", precision, "as requested")
            torch_runner = TorchRunner(module=model, device=self.device, precision=self.runtime.precision,
                                       channels_last=channels_last, compile=compile)
            self._runner: TorchRunner | CallableRunner = CallableRunner(session) if session else torch_runner
            # Tiles always go through PyTorch: only an eager module's instance norms can be given the
            # whole image's statistics (module docstring), whatever runs the untiled passes.
            self._tile_runner = torch_runner
            self._norms = _input_stat_norms(model)
        else:
            if precision not in ("auto", "fp32"):
                raise TranslateError(f"{source or 'this model'}: --precision {precision} needs a PyTorch model; "
                                     "ONNX Runtime runs fp32")
            # The callable moves data itself (ONNX Runtime takes host arrays), so tensors stay on the CPU.
            self.device = torch.device("cpu")
            self._runner = self._tile_runner = CallableRunner(model)
            from cyclegan.export import OnnxGenerator

            backend = "onnxruntime" if isinstance(model, OnnxGenerator) else "callable"
            self.runtime = RuntimeChoice(backend, "fp32", "the model's own runtime")
            self._norms = []
        self.precision = self.runtime.precision
        if not size_multiple or int(size_multiple) < 1:
            raise TranslateError(f"{source or 'model'}: unknown size_multiple; pass size_multiple=")
        self.size_multiple = int(size_multiple)
        self.memory_budget = memory_budget if memory_budget is not None else default_memory_budget(self.device)
        if bytes_per_pixel is None:
            ngf = config.model.generator.ngf if config is not None else _DEFAULT_NGF
            bytes_per_pixel = _ACTIVATION_FACTOR * ngf * 4
        self.bytes_per_pixel = float(bytes_per_pixel)

    # ------------------------------------------------------------------------------ construction

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        direction: str | None = None,
        device: str = "auto",
        precision: str = "fp32",
        tile: str | int = "auto",
        ema: bool = True,
        threads: int | None = None,
        **options,
    ) -> Translator:
        """A translator for a run folder, checkpoint folder, safetensors export, ``.onnx`` or TorchScript file.

        ``direction`` (a2b | b2a) picks the generator of a run or checkpoint (default a2b); an exported
        model translates the one direction it was exported with, and naming the other is an error.
        Further keyword options are those of ``Translator(...)`` (tile_overlap, memory_budget,
        batch_size, max_side, size, channels_last, compile, bytes_per_pixel).
        """
        from cyclegan.export import load_any_generator

        apply_threads(threads)  # before loading: an ONNX Runtime session fixes its threads when created

        if Path(path).suffix.lower() == ".onnx":
            model_device: str | torch.device = device
        else:
            model_device = resolve_device(device)
        # ema: a checkpoint's moving-average generator when it has one (train --ema-decay)
        loaded = load_any_generator(path, direction=direction, device=model_device, ema=ema,
                                    threads=torch.get_num_threads() if threads is not None else None)
        return cls(
            model=loaded.model,
            size_multiple=loaded.info.size_multiple,
            device=model_device if isinstance(loaded.model, nn.Module) else "cpu",
            precision=precision,
            tile=tile,
            direction=loaded.info.direction,
            config=loaded.info.config,
            source=f"{loaded.path} ({loaded.kind})",
            **options,
        )

    def __repr__(self) -> str:
        return (
            f"Translator(source={self.source!r}, direction={self.direction!r}, device={self.device}, "
            f"runtime={self.runtime.backend!r}, precision={self.precision!r}, tile={self.tile!r}, "
            f"size_multiple={self.size_multiple})"
        )

    # ------------------------------------------------------------------------------ public calls

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the output for an input of that size (``size`` / ``max_side`` applied)."""
        if self.size is not None:
            return self.size
        if self.max_side is not None and max(width, height) > self.max_side:
            s = self.max_side / max(width, height)
            return max(1, round(width * s)), max(1, round(height * s))
        return width, height

    def __call__(self, images):
        """PIL image | numpy uint8 array | list of them -> the same kind(s), translated."""
        if isinstance(images, (list, tuple)):
            items = [self._item(img) for img in images]
            return [self._hand_back(it, out) for it, out in zip(items, self._translate_items(items))]
        item = self._item(images)
        return self._hand_back(item, self._translate_items([item])[0])

    @torch.no_grad()
    def translate_tensor(self, x: Tensor) -> Tensor:
        """uint8 [B, 3, H, W] (any device) -> uint8 [B, 3, H, W] on the CPU: the one translation path."""
        if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            got = f"{x.dtype} {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"translate_tensor expects a uint8 tensor [B, 3, H, W], got {got}")
        h, w = x.shape[-2:]
        xf = to_model_range(x.to(self.device))  # [B, 3, H, W] in [-1, 1]
        # Two multiples at least: at one, the generator's bottleneck is 1x1, where instance norm is undefined.
        xp, (top, left) = pad_to_multiple(xf, self.size_multiple, minimum=2 * self.size_multiple)  # [B, 3, H', W']
        y = self._forward(xp)  # [B, 3, H', W'] float32
        return to_uint8(y[:, :, top : top + h, left : left + w]).cpu()

    # ------------------------------------------------------------------------------ internals

    def _item(self, img) -> _Item:
        if isinstance(img, Image.Image):
            # Users hand in Image.open(...) results, which are not yet upright; exif_transpose drops the
            # orientation tag, so applying it to an already upright image changes nothing.
            with contextlib.suppress(Exception):
                img = ImageOps.exif_transpose(img)
            rgb_img, alpha_img = split_rgb_alpha(img)
            if alpha_img is None and "A" in img.getbands():
                alpha_img = img.getchannel("A")  # opaque but present: keep the mode the caller gave
            rgb = np.asarray(rgb_img)
            alpha = np.asarray(alpha_img) if alpha_img is not None else None
            item = _Item(rgb=rgb, alpha=alpha, kind="pil")
        elif isinstance(img, np.ndarray):
            if img.dtype != np.uint8:
                raise TypeError(f"expected a uint8 array, got {img.dtype}")
            if img.ndim == 2:
                item = _Item(rgb=np.repeat(img[:, :, None], 3, axis=2), alpha=None, kind="numpy")
            elif img.ndim == 3 and img.shape[2] == 1:
                item = _Item(rgb=np.repeat(img, 3, axis=2), alpha=None, kind="numpy")
            elif img.ndim == 3 and img.shape[2] == 3:
                item = _Item(rgb=img, alpha=None, kind="numpy")
            elif img.ndim == 3 and img.shape[2] == 4:
                # Same rule as files: transparent pixels are composited on white before translation.
                a = img[:, :, 3:4].astype(np.float32) / 255.0
                rgb = np.rint(img[:, :, :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
                item = _Item(rgb=rgb, alpha=img[:, :, 3].copy(), kind="numpy", numpy_channels=4)
            else:
                raise ValueError(f"expected an array of shape [H, W], [H, W, 3] or [H, W, 4], got {list(img.shape)}")
        else:
            raise TypeError(f"expected a PIL image or a numpy array, got {type(img).__name__}")
        return self._resized(item)

    def _resized(self, item: _Item) -> _Item:
        h, w = item.rgb.shape[:2]
        size = self.output_size(w, h)
        if size != (w, h):
            item.rgb = _resize_array(np.ascontiguousarray(item.rgb), size)
            if item.alpha is not None:
                item.alpha = _resize_array(np.ascontiguousarray(item.alpha), size)
        return item

    @staticmethod
    def _hand_back(item: _Item, rgb: np.ndarray):
        if item.kind == "numpy":
            if item.numpy_channels == 4:
                return np.concatenate([rgb, item.alpha[:, :, None]], axis=2)
            return rgb
        img = Image.fromarray(rgb)
        if item.alpha is not None:
            img.putalpha(Image.fromarray(item.alpha))
        return img

    def _translate_items(self, items: list[_Item]) -> list[np.ndarray]:
        """Translate items (batched by size, at most ``batch_size`` per pass) -> [H, W, 3] uint8 each."""
        out: list[np.ndarray | None] = [None] * len(items)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, it in enumerate(items):
            by_size.setdefault(it.rgb.shape[:2], []).append(i)
        for indices in by_size.values():
            for k in range(0, len(indices), self.batch_size):
                chunk = indices[k : k + self.batch_size]
                x = torch.from_numpy(np.stack([items[i].rgb for i in chunk])).permute(0, 3, 1, 2)  # [B, 3, H, W]
                y = self.translate_tensor(x.contiguous()).permute(0, 2, 3, 1).numpy()  # [B, H, W, 3]
                for i, arr in zip(chunk, y):
                    out[i] = np.ascontiguousarray(arr)
        return out  # type: ignore[return-value]

    def _pixels_per_pass(self) -> int:
        return max(1, int(self.memory_budget / self.bytes_per_pixel))

    def _tile_for(self, h: int, w: int) -> int | None:
        """Tile side for a padded h x w image, or None to run it whole."""
        m = self.size_multiple
        if self.tile == "off":
            return None
        if isinstance(self.tile, int):
            t = max(_round_up(self.tile, m), 2 * m)
            return t if h > t or w > t else None
        if h * w <= self._pixels_per_pass():
            return None
        t = int(math.sqrt(self._pixels_per_pass())) // m * m
        return max(t, _round_up(64, m), 2 * m)

    def _overlap(self, tile: int) -> int:
        if self.tile_overlap is not None:
            return min(self.tile_overlap, tile // 2)
        # A quarter of the tile, at most 128 px: about the paper ResNet's effective receptive field
        # radius, while costing at most ~30% extra compute for small tiles.
        return min(_round_up(max(16, min(128, tile // 4)), self.size_multiple), tile // 2)

    def _forward(self, x: Tensor) -> Tensor:
        # [B, 3, H', W'] in [-1, 1] -> [B, 3, H', W'] float32
        b, _, h, w = x.shape
        tile = self._tile_for(h, w)
        if tile is None:
            per_pass = max(1, min(b, self._pixels_per_pass() // (h * w)))
            return torch.cat([self._runner(x[i : i + per_pass]) for i in range(0, b, per_pass)])
        return torch.cat([self._forward_tiled(x[i : i + 1], tile) for i in range(b)])

    def _forward_tiled(self, x: Tensor, tile: int) -> Tensor:
        # [1, 3, H', W'] -> [1, 3, H', W'] float32, blended from overlapping tiles
        _, _, h, w = x.shape
        th, tw = min(tile, h), min(tile, w)
        overlap = self._overlap(tile)
        ys = tile_starts(h, th, overlap, self.size_multiple)
        xs = tile_starts(w, tw, overlap, self.size_multiple)
        wy = [v.to(x.device) for v in blend_weights(ys, th)]
        wx = [v.to(x.device) for v in blend_weights(xs, tw)]
        coords = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
        per_pass = max(1, min(self.batch_size, self._pixels_per_pass() // (th * tw)))
        out: Tensor | None = None
        wsum = torch.zeros((1, 1, h, w), dtype=torch.float32, device=x.device)
        with self._shared_norm_stats(x):
            for k in range(0, len(coords), per_pass):
                chunk = coords[k : k + per_pass]
                batch = torch.cat([x[:, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] for i, j in chunk])
                y = self._tile_runner(batch, eager=bool(self._norms))  # [n, 3, th, tw]
                if out is None:
                    out = torch.zeros((1, y.shape[1], h, w), dtype=torch.float32, device=x.device)
                for n, (i, j) in enumerate(chunk):
                    weight = wy[i][:, None] * wx[j][None, :]  # [th, tw]
                    out[0, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] += y[n] * weight
                    wsum[0, 0, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] += weight
        assert out is not None
        return out / wsum

    @contextlib.contextmanager
    def _shared_norm_stats(self, x: Tensor) -> Iterator[None]:
        """While tiling x ([1, 3, H', W']), give every instance norm the whole image's statistics."""
        if not self._norms:
            yield
            return
        _, _, h, w = x.shape
        ref = x
        budget_px = self._pixels_per_pass()
        if h * w > budget_px:
            # Means and variances are averages over the image, so a downscaled copy estimates them
            # well; area interpolation keeps local averages intact.
            s = math.sqrt(budget_px / (h * w))
            m = self.size_multiple
            size = (max(2 * m, int(h * s) // m * m), max(2 * m, int(w * s) // m * m))
            ref = F.interpolate(x, size=size, mode="area")
        stats = _record_stats(self._norms, lambda t: self._tile_runner(t, eager=True), ref)
        with _frozen_stats(stats):
            yield


# ------------------------------------------------------------------------------------------- files


@dataclass(frozen=True)
class OutputOptions:
    suffix: str = ""
    format: str | None = None  # png | jpg | webp; None keeps png/jpg/webp inputs' format, else png
    quality: int = 95
    overwrite: bool = False


@dataclass
class TranslateSummary:
    """What a ``translate_paths`` call did. ``translated`` counts outputs (an image or a whole video);
    images and video frames are counted, and timed, apart: a video is one output but many frames, so
    one rate over both would be neither an image rate nor a frame rate."""

    translated: int = 0
    skipped: int = 0
    failed: int = 0
    images: int = 0  # still images translated
    videos: int = 0
    frames: int = 0  # frames of the translated videos
    seconds: float = 0.0
    image_seconds: float = 0.0  # time spent on still images (loading, translating, saving)
    video_seconds: float = 0.0  # time spent on videos (decoding, translating, encoding)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def line(self) -> str:
        tail = f"skipped {self.skipped}, failed {self.failed} in {self.seconds:.1f} s"
        if not self.videos:
            rate = self.images / self.seconds if self.seconds > 0 else 0.0
            return f"translated {self.translated}, {tail} ({rate:.2f} img/s)"
        fps = self.frames / self.video_seconds if self.video_seconds > 0 else 0.0
        done = f"{_count(self.videos, 'video')} ({_count(self.frames, 'frame')}, {fps:.1f} frames/s)"
        if self.images:
            rate = self.images / self.image_seconds if self.image_seconds > 0 else 0.0
            done = f"{_count(self.images, 'image')} ({rate:.2f} img/s) and {done}"
        return f"translated {done}, {tail}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class _Job:
    source: Path | None  # None: stdin
    target: Path | None  # None: stdout
    video: bool = False

    @property
    def name(self) -> str:
        return str(self.source) if self.source is not None else "<stdin>"


def _video_extensions() -> frozenset[str]:
    from cyclegan.video import VIDEO_EXTENSIONS

    return VIDEO_EXTENSIONS


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    base = []
    for p in parts:
        if glob.has_magic(p):
            break
        base.append(p)
    return Path(*base) if base else Path(".")


def _scannable(rel: Path, path: Path, out: Path | None) -> bool:
    """Whether a file found in a folder input is an input: not hidden (our own temp files are), and not
    inside --out, which may sit within the input folder and would otherwise be translated again."""
    if any(part.startswith(".") for part in rel.parts):
        return False
    if out is not None and out.is_dir():
        with contextlib.suppress(OSError):
            return out.resolve() not in path.resolve().parents
    return True


def _below_out(path: Path, out: Path | None, base: Path) -> bool:
    """Whether a glob match lies in --out while --out sits below the pattern's fixed folder ``base``:
    then it is an earlier output (as ``_scannable`` decides for folder inputs). A pattern that names
    --out itself (``out/*.png``) keeps its matches."""
    if out is None or not out.is_dir():
        return False
    with contextlib.suppress(OSError):
        out_r = out.resolve()
        return base.resolve() in out_r.parents and out_r in path.resolve().parents
    return False


def _image_suffix(source_suffix: str, fmt: str | None) -> str:
    if fmt is not None:
        return OUTPUT_FORMATS[fmt][1]
    return source_suffix.lower() if source_suffix.lower() in _KEEP_EXTENSIONS else ".png"


def _plan(
    inputs: Sequence[str], out: Path | None, *, recursive: bool, options: OutputOptions, to_stdout: bool = False
) -> tuple[list[_Job], list[tuple[str, str]]]:
    """Inputs -> jobs with their output paths, plus (input, reason) for inputs that cannot be used.

    ``out`` None means stdout: allowed for ``-`` (stdin) without --out, or one image with ``--out -``.
    """
    videos = _video_extensions()
    wanted = IMAGE_EXTENSIONS | videos
    found: list[tuple[Path | None, Path]] = []  # (source, name relative to --out)
    globbed: set[Path] = set()  # sources found by a pattern rather than named
    failures: list[tuple[str, str]] = []
    single_file = len(inputs) == 1 and (inputs[0] == "-" or Path(inputs[0]).is_file())
    for item in inputs:
        if item == "-":
            found.append((None, Path("stdin.png")))
            continue
        p = Path(item)
        if p.is_dir() and out is not None and out.exists() and out.resolve() == p.resolve():
            reason = "--out is this input folder; outputs would mix with (and on a rerun be read as) inputs"
            failures.append((item, reason + ": choose another --out"))
        elif p.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(
                f for f in p.glob(pattern)
                if f.is_file() and f.suffix.lower() in wanted and _scannable(f.relative_to(p), f, out)
            )
            if not files:
                failures.append((item, "no images or videos in this folder" + ("" if recursive else
                                 " (use --recursive for subfolders)")))
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            found.append((p, Path(p.name)))
        elif glob.has_magic(item):
            base = _glob_base(item)
            matches = sorted(Path(m) for m in glob.glob(item, recursive=recursive) if Path(m).is_file())
            if not matches:
                failures.append((item, "no files match this pattern"))
            for m in matches:
                if _below_out(m, out, base):
                    continue
                try:
                    rel = m.relative_to(base)
                except ValueError:
                    rel = Path(m.name)
                found.append((m, rel))
                globbed.add(m)
        else:
            failures.append((item, "no such file or folder"))

    file_target = (
        out is not None
        and single_file
        and len(found) == 1
        and not out.is_dir()
        and out.suffix.lower() in wanted
    )
    if file_target and options.format is not None:
        own = _KEEP_EXTENSIONS.get(out.suffix.lower())
        if own != options.format:
            raise TranslateError(f"--out {out} does not match --format {options.format}")

    def target_of(src: Path | None, rel: Path, is_video: bool) -> Path | None:
        if file_target:
            return out
        if out is None:
            if src is not None and not (to_stdout and single_file and len(found) == 1 and not is_video):
                raise TranslateError(
                    "--out is required (a folder, a file name for a single input, or - for one image to stdout)"
                )
            return None
        suffix = src.suffix if src is not None and is_video else _image_suffix(rel.suffix, options.format)
        return out / rel.parent / f"{rel.stem}{options.suffix}{suffix}"

    # A pattern matching this command's own outputs (``shots/*.png --out shots --suffix _x`` run twice
    # finds b_x.png beside b.png) would translate them again on every rerun: a match that is the output
    # of another match is left out. Only where the output's name differs from its source's by folder or
    # suffix; a mere change of format (a.jpg -> a.png next to a user's a.png) stays a refused collision.
    if out is not None and globbed:
        earlier_outputs = set()
        for src, rel in found:
            if src is None:
                continue
            target = target_of(src, rel, src.suffix.lower() in videos)
            if target is not None and (target.parent.resolve() != src.parent.resolve() or target.stem != src.stem):
                earlier_outputs.add(target.resolve())
        found = [(src, rel) for src, rel in found if src not in globbed or src.resolve() not in earlier_outputs]

    inputs_resolved = {src.resolve() for src, _ in found if src is not None}
    jobs: list[_Job] = []
    taken: dict[Path, str] = {}
    for src, rel in found:
        is_video = src is not None and src.suffix.lower() in videos
        target = target_of(src, rel, is_video)
        name = str(src) if src is not None else "<stdin>"
        if target is not None:
            key = target.resolve()
            if key in inputs_resolved:
                reason = f"output {target} would overwrite an input file; use another --out or --suffix"
                failures.append((name, reason))
                continue
            if key in taken:
                failures.append((name, f"output {target} is also the output of {taken[key]}; rename one"))
                continue
            taken[key] = name
        jobs.append(_Job(source=src, target=target, video=is_video))
    return jobs, failures


def _save_kwargs(target: Path, fmt: str | None, quality: int) -> tuple[str, dict]:
    name = fmt or _KEEP_EXTENSIONS.get(target.suffix.lower())
    if name is None:
        raise TranslateError(f"{target}: cannot write images with extension {target.suffix or '(none)'}; "
                             "use .png, .jpg or .webp")
    pil_format = OUTPUT_FORMATS[name][0]
    return pil_format, ({"quality": quality} if name in ("jpg", "webp") else {})


def _encode(img: Image.Image, pil_format: str) -> Image.Image:
    # JPEG has no alpha channel: the translation was made from the image composited on white, so
    # dropping alpha gives exactly that.
    return img.convert("RGB") if pil_format == "JPEG" and img.mode != "RGB" else img


def translate_paths(
    translator: Translator,
    inputs: Sequence[str],
    *,
    out: str | os.PathLike | None = None,
    recursive: bool = False,
    options: OutputOptions = OutputOptions(),
    temporal_smoothing: float = 0.0,
    progress: bool = False,
    echo: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
) -> TranslateSummary:
    """Translate files, folders, globs, videos and ``-`` (stdin to stdout) into ``out``.

    Outputs mirror the input names under ``out`` (``out`` may be a file name for a single input).
    Existing outputs are skipped unless ``options.overwrite``; an input file is never overwritten.
    A bad input is reported through ``echo`` and counted as failed; every good one is still written.
    """
    if options.format is not None and options.format not in OUTPUT_FORMATS:
        raise TranslateError(f"--format {options.format!r}: choose from {', '.join(OUTPUT_FORMATS)}")
    if not 1 <= options.quality <= 100:
        raise TranslateError(f"--quality must be in 1..100, got {options.quality}")
    if not 0.0 <= temporal_smoothing < 1.0:
        raise TranslateError(f"--temporal-smoothing must be in [0, 1), got {temporal_smoothing}")
    start = time.perf_counter()
    to_stdout = out is not None and str(out) == "-"
    out_path = Path(out) if out is not None and not to_stdout else None
    jobs, failures = _plan(inputs, out_path, recursive=recursive, options=options, to_stdout=to_stdout)
    summary = TranslateSummary()

    def fail(name: str, reason: str) -> None:
        summary.failed += 1
        summary.failures.append((name, reason))
        echo(f"error: {name}: {reason}")

    for name, reason in failures:
        fail(name, reason)

    pending = []
    for job in jobs:
        if job.target is not None and job.target.exists() and not options.overwrite:
            summary.skipped += 1
        elif job.target is not None and job.target.is_dir():
            fail(job.name, f"output {job.target} is a folder")
        else:
            pending.append(job)
    if summary.skipped:
        echo(f"note: {summary.skipped} output(s) already exist and were left as they are; --overwrite replaces them")

    images = [j for j in pending if not j.video and j.source is not None and j.target is not None]
    images_start = time.perf_counter()
    bar = None
    if progress and images:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), unit="img", dynamic_ncols=True, file=sys.stderr)
    try:
        # Load a window of files at a time so same-size images can share a batch without holding a
        # whole folder of photos in memory.
        window = translator.batch_size * 2
        for k in range(0, len(images), window):
            _translate_image_window(translator, images[k : k + window], options, summary, fail)
            if bar is not None:
                bar.update(len(images[k : k + window]))
    finally:
        if bar is not None:
            bar.close()
    summary.image_seconds = time.perf_counter() - images_start

    for job in pending:
        if job.source is None or job.target is None:
            t0 = time.perf_counter()
            _translate_stream(translator, job, options, summary, fail, stdin, stdout)
            summary.image_seconds += time.perf_counter() - t0
        elif job.video:
            t0 = time.perf_counter()
            _translate_video_job(translator, job, temporal_smoothing, progress, summary, fail)
            summary.video_seconds += time.perf_counter() - t0
    summary.seconds = time.perf_counter() - start
    return summary


def _translate_image_window(translator, jobs, options, summary, fail) -> None:
    loaded: list[tuple[_Job, _Item]] = []
    for job in jobs:
        try:
            rgb, alpha = load_image_rgba(job.source)
        except ImageLoadError as e:
            fail(job.name, e.reason)
            continue
        item = _Item(rgb=np.asarray(rgb), alpha=np.asarray(alpha) if alpha is not None else None)
        loaded.append((job, translator._resized(item)))
    if not loaded:
        return
    try:
        outputs = translator._translate_items([it for _, it in loaded])
    except (RuntimeError, MemoryError) as e:
        # A whole batch failing (out of memory, backend error) fails its files, not the command.
        reason = f"translation failed ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''})"
        for job, _ in loaded:
            fail(job.name, reason)
        return
    for (job, item), rgb in zip(loaded, outputs):
        try:
            pil_format, kwargs = _save_kwargs(job.target, options.format, options.quality)
            img = _encode(Translator._hand_back(item, rgb), pil_format)
            save_image_atomic(img, job.target, format=pil_format, **kwargs)
        except (OSError, ValueError, TranslateError) as e:
            fail(job.name, f"cannot write {job.target} ({e})")
            continue
        summary.translated += 1
        summary.images += 1


def _load_stdin(stdin: BinaryIO | None) -> tuple[Image.Image, Image.Image | None]:
    data = (stdin or sys.stdin.buffer).read()
    # The file loader's checks (empty, truncated, decompression bombs) need a path; a private temp
    # file keeps one implementation of them.
    fd, tmp = tempfile.mkstemp(prefix="cyclegan-stdin-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return load_image_rgba(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _discard_stdout() -> None:
    """Point the process's stdout at the null device. Bytes still buffered for a stream that failed
    would fail again when Python flushes at exit and print "Exception ignored ..." after our error."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _write_stdout(data: bytes, stdout: BinaryIO | None) -> None:
    """Write the encoded image to ``stdout`` (None: the process's own).

    A closed pipe (``| head``) raises BrokenPipeError, which the command line ends quietly, as other
    tools do; any other failure (a full disk behind ``> file``) ends the command with one line: the
    stream is unusable, so there is nothing left to do for later inputs.
    """
    sink = stdout if stdout is not None else sys.stdout.buffer
    try:
        sink.write(data)
        sink.flush()
    except BrokenPipeError:
        if stdout is None:
            _discard_stdout()
        raise
    except OSError as e:
        if stdout is None:
            _discard_stdout()
        raise TranslateError(f"<stdout>: cannot write the translated image ({e.strerror or e})") from None


def _translate_stream(translator, job, options, summary, fail, stdin, stdout) -> None:
    """A job reading stdin or writing stdout (or both): one image, no batching."""
    try:
        rgb, alpha = _load_stdin(stdin) if job.source is None else load_image_rgba(job.source)
    except ImageLoadError as e:
        fail(job.name, e.reason)
        return
    item = translator._resized(_Item(rgb=np.asarray(rgb), alpha=np.asarray(alpha) if alpha is not None else None))
    img = Translator._hand_back(item, translator._translate_items([item])[0])
    if job.target is None:
        pil_format, kwargs = OUTPUT_FORMATS[options.format or "png"][0], {}
        if options.format in ("jpg", "webp"):
            kwargs = {"quality": options.quality}
        buf = io.BytesIO()
        _encode(img, pil_format).save(buf, format=pil_format, **kwargs)
        _write_stdout(buf.getvalue(), stdout)
    else:
        try:
            pil_format, kwargs = _save_kwargs(job.target, options.format, options.quality)
            save_image_atomic(_encode(img, pil_format), job.target, format=pil_format, **kwargs)
        except (OSError, ValueError, TranslateError) as e:
            fail(job.name, f"cannot write {job.target} ({e})")
            return
    summary.translated += 1
    summary.images += 1


def _translate_video_job(translator, job, temporal_smoothing, progress, summary, fail) -> None:
    try:
        from cyclegan.video import translate_video
    except ImportError:
        fail(job.name, "video needs PyAV (pip install 'cyclegan[video]')")
        return
    try:
        result = translate_video(
            translator, job.source, job.target, temporal_smoothing=temporal_smoothing, progress=progress
        )
    except TranslateError as e:
        reason = str(e)
        prefix = f"{job.source}: "  # video errors name the file themselves
        fail(job.name, reason.removeprefix(prefix))
        return
    except (RuntimeError, MemoryError) as e:
        fail(job.name, f"translation failed ({type(e).__name__}: {e})")
        return
    summary.translated += 1
    summary.videos += 1
    summary.frames += result.frames
