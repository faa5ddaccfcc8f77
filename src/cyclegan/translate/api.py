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
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn

from cyclegan.config import Config
from cyclegan.devices import (
    MIN_MEMORY_BUDGET,
    TRANSLATE_PRECISIONS,
    apply_threads,
    default_memory_budget,
    resolve_device,
)
from cyclegan.errors import TranslateError
from cyclegan.image import pad_to_multiple, split_rgb_alpha, to_model_range, to_uint8
from cyclegan.modelfile import OnnxGenerator, load_any_generator
from cyclegan.quantize import DEFAULT_LIMITS, Int8Limits
from cyclegan.runtime import CallableRunner, RuntimeChoice, TorchRunner, choose_runtime, int8_runtime
from cyclegan.temporal import TemporalStabilizer
from cyclegan.translate.tiling import (
    MemoryEstimate,
    activation_bytes_per_pixel,
    blend_tiles,
    estimate_memory,
    input_stat_norms,
    shared_norm_stats,
    tile_overlap,
    tile_side,
    tiles_per_pass,
)

__all__ = ["PreparedImage", "Translator", "parse_bytes", "parse_size", "parse_tile"]


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

    ``model`` is an ``nn.Module`` (eager or TorchScript) with a ``size_multiple`` attribute, or any
    callable with the generator convention (float [B, 3, H, W] in [-1, 1] -> same), e.g. an ONNX
    Runtime session (``cyclegan.modelfile.OnnxGenerator``), which then needs ``size_multiple``. Most users want
    ``Translator.from_checkpoint``.

    Calling the translator with a PIL image returns a PIL image, with a numpy [H, W, 3] (or [H, W],
    [H, W, 4]) uint8 array returns a numpy array, and with a list of them returns a list; same-size
    images are batched. Alpha is kept (RGB translated, alpha re-attached); grayscale comes back RGB.

    ``precision="auto"`` lets ``cyclegan.runtime.choose_runtime`` pick the fastest path within
    tolerance of fp32 (a checked int8 model made earlier, bf16 autocast, ONNX Runtime or PyTorch fp32);
    ``runtime`` says which and why. ``precision="int8"`` runs the model quantized by ONNX Runtime on
    the CPU (``cyclegan.runtime.int8_runtime``): calibrated on ``calibration`` (a folder or .npz;
    default: the training images of the direction's source domain, from ``config``) and refused
    when its check against fp32 is over ``int8_limits``.
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
        calibration: str | os.PathLike | None = None,
        int8_limits: Int8Limits = DEFAULT_LIMITS,
    ) -> None:
        if precision not in TRANSLATE_PRECISIONS:
            raise TranslateError(f"--precision {precision!r}: choose from {', '.join(TRANSLATE_PRECISIONS)}")
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
            self.device = resolve_device("cpu" if precision == "int8" and device == "auto" else device)
            if size_multiple is None:
                size_multiple = getattr(model, "size_multiple", None)
            session = None
            if precision == "int8":
                if self.device.type != "cpu":
                    raise TranslateError(f"--precision int8 runs on the CPU (ONNX Runtime), not {self.device.type}; "
                                         "use --device cpu (or auto)")
                self.runtime, session = int8_runtime(
                    model, size_multiple=int(size_multiple or 4), config=config, direction=direction,
                    calibration=calibration, limits=int8_limits, threads=torch.get_num_threads(),
                )
            elif precision == "auto":
                # channels_last / compile are PyTorch options, so asking for them keeps PyTorch.
                self.runtime, session = choose_runtime(
                    model, self.device, int(size_multiple or 4), allow_onnx=not (channels_last or compile),
                    threads=torch.get_num_threads(),
                )
            else:
                self.runtime = RuntimeChoice("torch", precision, "as requested")
            # int8 exists only in ONNX Runtime: tiles (below) run the module in fp32.
            amp = "fp32" if self.runtime.precision == "int8" else self.runtime.precision
            torch_runner = TorchRunner(module=model, device=self.device, precision=amp,
                                       channels_last=channels_last, compile=compile)
            self._runner: TorchRunner | CallableRunner = CallableRunner(session) if session else torch_runner
            # Tiles always go through PyTorch: only an eager module's instance norms can be given the
            # whole image's statistics (cyclegan.translate.tiling), whatever runs the untiled passes.
            self._tile_runner = torch_runner
            self._norms = input_stat_norms(model)
        else:
            onnx = isinstance(model, OnnxGenerator)
            int8_file = onnx and model.is_int8
            if precision not in ("auto", "fp32", "int8") or (precision == "int8" and not onnx):
                raise TranslateError(f"{source or 'this model'}: --precision {precision} needs a PyTorch model; "
                                     "ONNX Runtime runs the file as it is (fp32, or int8 for an int8 export)")
            # The callable moves data itself (ONNX Runtime takes host arrays), so tensors stay on the CPU.
            self.device = torch.device("cpu")
            if precision == "int8" and not int8_file:  # an fp32 .onnx: quantized like a module
                self.runtime, model = int8_runtime(
                    model.path, size_multiple=int(size_multiple or 4), config=config, direction=direction,
                    calibration=calibration, limits=int8_limits, threads=torch.get_num_threads(),
                )
            else:
                backend = "onnxruntime" if onnx else "callable"
                self.runtime = RuntimeChoice(backend, "int8" if int8_file else "fp32", "the model's own runtime")
            self._runner = self._tile_runner = CallableRunner(model)
            self._norms = []
        self.precision = self.runtime.precision
        if not size_multiple or int(size_multiple) < 1:
            raise TranslateError(f"{source or 'model'}: unknown size_multiple; pass size_multiple=")
        self.size_multiple = int(size_multiple)
        self.memory_budget = memory_budget if memory_budget is not None else default_memory_budget(self.device)
        if bytes_per_pixel is None:
            bytes_per_pixel = activation_bytes_per_pixel(config.model.generator.ngf if config is not None else None)
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
        batch_size, max_side, size, channels_last, compile, bytes_per_pixel, calibration, int8_limits).
        """
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
        items = [self._item(img) for img in images] if isinstance(images, (list, tuple)) else [self._item(images)]
        outs = [it.hand_back(rgb) for it, rgb in zip(items, self.translate_prepared(items))]
        return outs if isinstance(images, (list, tuple)) else outs[0]

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
        xp, (top, left) = pad_to_multiple(xf, self.size_multiple, minimum=2 * self.size_multiple)  # [B, 3, H', W']
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
                x = torch.from_numpy(np.stack([items[i].rgb for i in chunk])).permute(0, 3, 1, 2)  # [B, 3, H, W]
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
                raise ValueError(f"expected an array of shape [H, W], [H, W, 3] or [H, W, 4], got {list(img.shape)}")
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
        return tile_side(h, w, tile=self.tile, multiple=self.size_multiple, pixels_per_pass=self._pixels_per_pass())

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
