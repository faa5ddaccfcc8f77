"""The Translator API: one generator, any image kind, full resolution (padding, tiling, batching inside).

There is one pre/post-processing path, shared by every model format (PyTorch, TorchScript, ONNX
Runtime) and every input kind (files, PIL images, numpy arrays, video frames)::

    uint8 [B, 3, H, W] -> to_model_range -> reflection pad to size_multiple -> whole or tiled forward
    -> crop back to H x W -> to_uint8

so the output has the input's exact size unless ``max_side`` / ``size`` ask for a resize first. How
tiles are laid out, blended and given shared statistics is ``cyclegan.translate.tiling``'s part;
files, folders, globs and streams are ``cyclegan.translate.files``'.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn

from cyclegan.config import Config
from cyclegan.devices import apply_threads, default_memory_budget, resolve_device
from cyclegan.errors import TranslateError
from cyclegan.image import pad_to_multiple, split_rgb_alpha, to_model_range, to_uint8
from cyclegan.modelfile import load_any_generator
from cyclegan.temporal import TemporalStabilizer
from cyclegan.translate.backend import Backend, choose_backend
from cyclegan.translate.options import TranslateOptions, parse_bytes, parse_size, parse_tile
from cyclegan.translate.tiling import (
    MemoryEstimate,
    activation_bytes_per_pixel,
    blend_tiles,
    estimate_memory,
    shared_norm_stats,
    tile_overlap,
    tile_side,
    tiles_per_pass,
)

__all__ = ["PreparedImage", "TranslateOptions", "Translator", "parse_bytes", "parse_size", "parse_tile"]


# ---------------------------------------------------------------------------------------- Translator


@dataclass
class PreparedImage:
    """One image on its way through: RGB pixels (already resized), optional alpha, and how to hand it
    back. Made by ``Translator.prepare`` / ``prepare_rgba``, translated by ``translate_prepared``."""

    rgb: np.ndarray  # [H, W, 3] uint8, already resized
    alpha: np.ndarray | None  # [H, W] uint8
    kind: str = "pil"  # "pil" | "numpy"
    numpy_channels: int = 3  # 4 when a numpy RGBA came in (returned as RGBA)

    def hand_back(self, rgb: np.ndarray) -> Image.Image | np.ndarray:
        """This image's translation ([H, W, 3] uint8) as the kind it came in, alpha re-attached."""
        if self.kind == "numpy":
            if self.numpy_channels == 4:
                return np.concatenate([rgb, self.alpha[:, :, None]], axis=2)
            return rgb
        img = Image.fromarray(rgb)
        if self.alpha is not None:
            img.putalpha(Image.fromarray(self.alpha))
        return img


def _resize_array(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (arr.shape[1], arr.shape[0]) == size:
        return arr
    return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.LANCZOS))


class Translator:
    """Translate images with one generator at their full size (padding, tiling, batching inside).

    Make one from a file with ``Translator.from_path`` (run folder, checkpoint, safetensors, ``.onnx``,
    TorchScript), or from a loaded generator with ``Translator(model=..., options=...)``:

    model
        An ``nn.Module`` (eager or TorchScript) with a ``size_multiple`` attribute, or any callable with
        the generator convention (float [B, 3, H, W] in [-1, 1] -> same), e.g. an ONNX Runtime session
        (``cyclegan.modelfile.OnnxGenerator``).
    options
        ``TranslateOptions``: precision, tiling, memory budget, batch size, resizing, int8 calibration
        (every field documented there). Its fields may also be given as keywords
        (``Translator(model=net, tile="off")``), which override the same fields of ``options``.
    size_multiple
        The generator's input side multiple; None: the model's ``size_multiple`` attribute (required
        for callables without one).
    device
        ``auto`` | ``cpu`` | ``cuda`` | ``mps`` | a ``torch.device``, for PyTorch modules (callables run
        where they run: tensors stay on the CPU).
    direction, config, source
        Metadata of a loaded model: its direction (a2b | b2a), its training ``Config`` (sizes the memory
        plan and finds int8 calibration images), and a name for messages.
    threads
        None leaves PyTorch's thread count alone, 0 caps it at the CPUs this process may use, N sets it
        (process-wide, as ``torch.set_num_threads``); applied before the runtime is chosen.
    backend
        A ``Backend`` from ``cyclegan.translate.backend.choose_backend`` (which runtime runs the model
        and why); None chooses one now, which for ``precision="auto"``/``"int8"`` probes, exports or
        quantizes the model (cached), so it is the slow step of making a translator.

    Calling the translator with a PIL image returns a PIL image, with a numpy [H, W, 3] (or [H, W],
    [H, W, 4]) uint8 array returns a numpy array, and with a list of them returns a list; same-size
    images are batched. Alpha is kept (RGB translated, alpha re-attached); grayscale comes back RGB.
    ``runtime`` says which runtime was chosen and why.

    Errors name the parameter (``batch_size must be >= 1, got 0``), never a command-line flag.
    """

    def __init__(
        self,
        *,
        model: nn.Module | Callable[[Tensor], Tensor],
        options: TranslateOptions | None = None,
        size_multiple: int | None = None,
        device: str | torch.device = "auto",
        direction: str | None = None,
        config: Config | None = None,
        source: str | None = None,
        threads: int | None = None,
        backend: Backend | None = None,
        **option_fields: Any,
    ) -> None:
        options = options if options is not None else TranslateOptions()
        if option_fields:
            options = replace(options, **option_fields)
        if size_multiple is None:
            size_multiple = getattr(model, "size_multiple", None)
        if not size_multiple or int(size_multiple) < 1:
            raise TranslateError(f"{source or 'model'}: unknown size_multiple; pass size_multiple=")
        self.size_multiple = int(size_multiple)
        self.direction = direction
        self.config = config
        self.source = source
        apply_threads(threads)
        if backend is None:
            backend = choose_backend(model, size_multiple=self.size_multiple, options=options, device=device,
                                     config=config, direction=direction, source=source)
        self.backend = backend
        self.device = backend.device
        self.runtime = backend.runtime
        self.precision = backend.runtime.precision
        self._runner = backend.runner
        self._tile_runner = backend.tile_runner
        self._norms = backend.norms
        self._set_options(options, config)

    def _set_options(self, options: TranslateOptions, config: Config | None) -> None:
        # The plain attributes below are what the rest of the package reads (files, video, serve).
        self.options = options
        self.tile = options.tile
        self.tile_overlap = options.tile_overlap
        self.batch_size = options.batch_size
        self.max_side = options.max_side
        self.size = options.size
        self.memory_budget = (int(options.memory_budget) if options.memory_budget is not None
                              else default_memory_budget(self.device))
        bytes_per_pixel = options.bytes_per_pixel
        if bytes_per_pixel is None:
            ngf = config.model.generator.ngf if config is not None else None
            bytes_per_pixel = activation_bytes_per_pixel(ngf)
        self.bytes_per_pixel = float(bytes_per_pixel)

    def with_options(self, **changes: Any) -> Translator:
        """A translator sharing this one's model and runtime, with some ``TranslateOptions`` fields changed
        (resizing, tiling, budget, batch size). Fields that decide the runtime (precision, channels_last,
        compile, calibration, int8_limits) cannot change here: make a new translator for those."""
        fixed = sorted(set(changes) & {"precision", "channels_last", "compile", "calibration", "int8_limits"})
        if fixed:
            raise TranslateError(f"{', '.join(fixed)}: decided with the runtime; make a new Translator to "
                                 "change it")
        other = copy.copy(self)
        other._set_options(replace(self.options, **changes), self.config)
        return other

    # ------------------------------------------------------------------------------ construction

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        *,
        options: TranslateOptions | None = None,
        direction: str | None = None,
        device: str = "auto",
        ema: bool = True,
        threads: int | None = None,
    ) -> Translator:
        """A translator for a run or checkpoint folder, safetensors export, ``.onnx`` or TorchScript file.

        Two steps: the generator is loaded (``cyclegan.modelfile.load_any_generator``), then its runtime is
        chosen (``cyclegan.translate.backend.choose_backend``, as ``options.precision`` says).

        direction
            a2b | b2a: the generator of a run or checkpoint (None: a2b); an exported model translates the
            one direction it was exported with, and naming the other is an error.
        device
            ``auto`` | ``cpu`` | ``cuda`` | ``mps`` (an ``.onnx`` file runs on the CPU through ONNX Runtime).
        ema
            Use a checkpoint's moving-average generator when it has one (trained with an EMA decay).
        threads
            As for ``Translator``; set before loading, since an ONNX Runtime session fixes its thread
            count when it is created.
        """
        apply_threads(threads)  # before loading: an ONNX Runtime session fixes its threads when created
        if Path(path).suffix.lower() == ".onnx":
            model_device: str | torch.device = device
        else:
            model_device = resolve_device(device)
        loaded = load_any_generator(path, direction=direction, device=model_device, ema=ema,
                                    threads=torch.get_num_threads() if threads is not None else None)
        return cls(
            model=loaded.model,
            options=options,
            size_multiple=loaded.info.size_multiple,
            device=model_device if isinstance(loaded.model, nn.Module) else "cpu",
            direction=loaded.info.direction,
            config=loaded.info.config,
            source=f"{loaded.path} ({loaded.kind})",
        )

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
        **option_fields: Any,
    ) -> Translator:
        """``from_path`` with the ``TranslateOptions`` fields given as keywords (the older spelling):
        ``Translator.from_checkpoint(path, precision="auto", tile="off", batch_size=8)``."""
        options = TranslateOptions(precision=precision, tile=tile, **option_fields)
        return cls.from_path(path, options=options, direction=direction, device=device, ema=ema,
                             threads=threads)

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
        many = isinstance(images, (list, tuple))
        items = [self._item(img) for img in images] if many else [self._item(images)]
        outs = [it.hand_back(rgb) for it, rgb in zip(items, self.translate_prepared(items))]
        return outs if many else outs[0]

    def translate_frames(
        self, frames: Iterable, *, temporal: str = "off", temporal_strength: float = 0.8
    ) -> Iterator:
        """Translate a stream of video frames (PIL images or [H, W, 3] uint8 arrays, in order), yielding
        each translated frame as it is ready: ``batch_size`` frames are held at a time, whatever the
        length of the stream. ``temporal`` (off | blend | flow) stabilises them against flicker
        (``cyclegan.temporal.TemporalStabilizer``)."""
        stabilizer = TemporalStabilizer(mode=temporal, strength=temporal_strength)
        batch: list = []
        for frame in frames:
            batch.append(frame)
            if len(batch) >= max(1, self.batch_size):
                yield from self._stabilised(batch, stabilizer)
                batch = []
        if batch:
            yield from self._stabilised(batch, stabilizer)

    def _stabilised(self, frames: list, stabilizer: TemporalStabilizer) -> Iterator:
        for x, y in zip(frames, self(frames)):
            arrays = isinstance(y, np.ndarray)
            out = stabilizer(np.asarray(x.convert("RGB") if not arrays else x), np.asarray(y))
            yield out if arrays else Image.fromarray(out)

    @torch.no_grad()
    def translate_tensor(self, x: Tensor) -> Tensor:
        """uint8 [B, 3, H, W] (any device) -> uint8 [B, 3, H, W] on the CPU: the one translation path."""
        if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            got = f"{x.dtype} {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"translate_tensor expects a uint8 tensor [B, 3, H, W], got {got}")
        h, w = x.shape[-2:]
        xf = to_model_range(x.to(self.device))  # [B, 3, H, W] in [-1, 1]
        # Two multiples at least: at one, the generator's bottleneck is 1x1, where instance norm is undefined.
        # [B, 3, H', W']
        xp, (top, left) = pad_to_multiple(xf, self.size_multiple, minimum=2 * self.size_multiple)
        y = self._forward(xp)  # [B, 3, H', W'] float32
        return to_uint8(y[:, :, top : top + h, left : left + w]).cpu()

    def prepare(self, img: Image.Image | np.ndarray) -> PreparedImage:
        """A PIL image or numpy uint8 array ([H, W], [H, W, 1|3|4]) -> a PreparedImage, resized as
        ``output_size`` says, for ``translate_prepared``."""
        return self._item(img)

    def prepare_rgba(self, rgb: np.ndarray, alpha: np.ndarray | None) -> PreparedImage:
        """An image already split by ``cyclegan.image.load_image_rgba`` (RGB composited on white
        [H, W, 3] uint8, alpha [H, W] uint8 or None) -> a PreparedImage handed back as PIL."""
        return self._resized(PreparedImage(rgb=rgb, alpha=alpha, kind="pil"))

    def translate_prepared(self, items: list[PreparedImage]) -> list[np.ndarray]:
        """Translate prepared images (same sizes share a batch, at most ``batch_size`` per pass) ->
        [H, W, 3] uint8 each; ``item.hand_back(rgb)`` turns one into the kind that came in."""
        out: list[np.ndarray | None] = [None] * len(items)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, it in enumerate(items):
            by_size.setdefault(it.rgb.shape[:2], []).append(i)
        for indices in by_size.values():
            for k in range(0, len(indices), self.batch_size):
                chunk = indices[k : k + self.batch_size]
                x = torch.from_numpy(np.stack([items[i].rgb for i in chunk]))  # [B, H, W, 3]
                x = x.permute(0, 3, 1, 2)  # [B, 3, H, W]
                y = self.translate_tensor(x.contiguous()).permute(0, 2, 3, 1).numpy()  # [B, H, W, 3]
                for i, arr in zip(chunk, y):
                    out[i] = np.ascontiguousarray(arr)
        return out  # type: ignore[return-value]

    def estimate_memory(self, width: int, height: int) -> MemoryEstimate:
        """Bytes translating one ``width`` x ``height`` input holds at its peak, at ``output_size`` and
        with this translator's tiling and budget: full-resolution copies plus the generator's largest
        pass (``cyclegan.translate.tiling.estimate_memory``). Decoding and encoding are not included."""
        out_w, out_h = self.output_size(width, height)
        return estimate_memory(out_w, out_h, size_multiple=self.size_multiple, tile=self.tile,
                               memory_budget=self.memory_budget, bytes_per_pixel=self.bytes_per_pixel,
                               batch_size=self.batch_size)

    def estimate_peak_bytes(self, width: int, height: int) -> int:
        """``estimate_memory(width, height).peak``: the whole estimate in bytes."""
        return self.estimate_memory(width, height).peak

    # ------------------------------------------------------------------------------ internals

    def _item(self, img) -> PreparedImage:
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
            item = PreparedImage(rgb=rgb, alpha=alpha, kind="pil")
        elif isinstance(img, np.ndarray):
            if img.dtype != np.uint8:
                raise TypeError(f"expected a uint8 array, got {img.dtype}")
            if img.ndim == 2:
                item = PreparedImage(rgb=np.repeat(img[:, :, None], 3, axis=2), alpha=None, kind="numpy")
            elif img.ndim == 3 and img.shape[2] == 1:
                item = PreparedImage(rgb=np.repeat(img, 3, axis=2), alpha=None, kind="numpy")
            elif img.ndim == 3 and img.shape[2] == 3:
                item = PreparedImage(rgb=img, alpha=None, kind="numpy")
            elif img.ndim == 3 and img.shape[2] == 4:
                # Same rule as files: transparent pixels are composited on white before translation.
                a = img[:, :, 3:4].astype(np.float32) / 255.0
                rgb = np.rint(img[:, :, :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
                item = PreparedImage(rgb=rgb, alpha=img[:, :, 3].copy(), kind="numpy", numpy_channels=4)
            else:
                raise ValueError(f"expected an array of shape [H, W], [H, W, 3] or [H, W, 4], "
                                 f"got {list(img.shape)}")
        else:
            raise TypeError(f"expected a PIL image or a numpy array, got {type(img).__name__}")
        return self._resized(item)

    def _resized(self, item: PreparedImage) -> PreparedImage:
        h, w = item.rgb.shape[:2]
        size = self.output_size(w, h)
        if size != (w, h):
            item.rgb = _resize_array(np.ascontiguousarray(item.rgb), size)
            if item.alpha is not None:
                item.alpha = _resize_array(np.ascontiguousarray(item.alpha), size)
        return item

    def _pixels_per_pass(self) -> int:
        return max(1, int(self.memory_budget / self.bytes_per_pixel))

    def _tile_for(self, h: int, w: int) -> int | None:
        """Tile side for a padded h x w image, or None to run it whole."""
        return tile_side(h, w, tile=self.tile, multiple=self.size_multiple,
                         pixels_per_pass=self._pixels_per_pass())

    def _overlap(self, tile: int) -> int:
        return tile_overlap(tile, multiple=self.size_multiple, requested=self.tile_overlap)

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
        per_pass = tiles_per_pass(min(tile, h) * min(tile, w), batch_size=self.batch_size,
                                  pixels_per_pass=self._pixels_per_pass())
        with shared_norm_stats(x, self._norms, lambda t: self._tile_runner(t, eager=True),
                               pixels_per_pass=self._pixels_per_pass(), multiple=self.size_multiple):
            return blend_tiles(x, lambda batch: self._tile_runner(batch, eager=bool(self._norms)), tile=tile,
                               overlap=self._overlap(tile), multiple=self.size_multiple, per_pass=per_pass)
