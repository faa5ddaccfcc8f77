"""Image I/O boundary: files become uint8 RGB, and the one normalisation to/from model range lives here.

Everything upstream of this module sees arbitrary files (odd modes, 16-bit, EXIF rotation, alpha,
truncated or hostile data); everything downstream sees uint8 RGB tensors or PIL "RGB" images. The
pair `to_model_range` / `to_uint8` is the only place the [0, 255] <-> [-1, 1] mapping is written, so
training, sampling and translation can never disagree about it. ``pad_to_multiple`` is likewise the
one reflection padding to a generator's size multiple (translation, evaluation, analysis).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from cyclegan.errors import ImageLoadError
from cyclegan.fileio import atomic_write

__all__ = [
    "IMAGE_EXTENSIONS",
    "is_image_file",
    "load_image",
    "load_image_rgba",
    "make_grid",
    "pad_to_multiple",
    "padded_size",
    "pil_to_uint8",
    "save_image_atomic",
    "split_rgb_alpha",
    "to_model_range",
    "to_uint8",
    "uint8_to_pil",
]

PathLike = str | os.PathLike

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

_WHITE = (255, 255, 255)


def is_image_file(path: PathLike) -> bool:
    """True if the file name has one of IMAGE_EXTENSIONS (case-insensitive); the content is not checked."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------------------------- loading


def _bomb_reason(exc: Exception) -> str:
    limit = Image.MAX_IMAGE_PIXELS
    # Pillow only reports the size inside its message; pull the first number out so the user sees
    # how far over the limit the file is.
    match = re.search(r"\((\d+) pixels\)", str(exc))
    size = match.group(1) if match else "?"
    return f"image too large ({size} pixels > limit {limit}); refusing possible decompression bomb"


def _open_fully_decoded(path: Path) -> Image.Image:
    """Open and decode every pixel now, so bad data fails here with a clear reason, not mid-training."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except OSError as exc:
        raise ImageLoadError(path, f"cannot access file ({exc.strerror or exc})") from None
    if path.is_dir():
        raise ImageLoadError(path, "is a directory, not an image file")
    if size == 0:
        raise ImageLoadError(path, "file is empty (0 bytes)")

    try:
        # The warning is promoted to an error only inside this block: a file between 1x and 2x the
        # pixel limit would otherwise be decoded with just a warning nobody reads.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open(path, "rb") as fh:
                img = Image.open(fh)
                # load() with the file still open; afterwards the image no longer needs the handle.
                img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(path, _bomb_reason(exc)) from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not a recognised image format (unidentified or corrupt header)") from None
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg.lower():
            raise ImageLoadError(path, f"truncated image data ({msg})") from None
        raise ImageLoadError(path, f"corrupt or unreadable image data ({msg})") from None
    except MemoryError:
        raise ImageLoadError(path, "not enough memory to decode image") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise SyntaxError, ValueError, struct.error, zlib.error...
        raise ImageLoadError(path, f"corrupt image data ({type(exc).__name__}: {exc})") from None

    # Malformed EXIF is common in the wild; the pixels are fine, so keep them unrotated rather than
    # discarding an otherwise usable image.
    with contextlib.suppress(Exception):
        img = ImageOps.exif_transpose(img)
    return img


def _has_alpha(img: Image.Image) -> bool:
    # Pillow>=10.1 has Image.has_transparency_data; spelled out here to support Pillow 10.0 as well.
    return "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float grayscale to 8 bits; Pillow's own convert("L") clips at 255."""
    if img.mode.startswith("I;16"):
        arr = np.asarray(img.convert("I"), dtype=np.float64) / 257.0
    elif img.mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        # Mode "I" carries no bit depth: 16-bit PNG/TIFF data often arrives as "I", and so does 8-bit
        # data that was merely widened. Values above 255 can only mean the 16-bit range.
        if arr.size and arr.max() > 255:
            arr = np.clip(arr, 0, 65535) / 257.0
    else:  # "F"
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        # Float images are conventionally either [0, 1] (scientific/HDR exports) or [0, 255].
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def split_rgb_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Any in-memory PIL image -> ("RGB" image composited on white, alpha as mode "L" or None).

    The same conversion load_image_rgba applies to files (EXIF orientation is the caller's business
    here, since an in-memory image may already be upright). Alpha is None when there is no
    transparency or it is opaque everywhere. Raises OSError/ValueError for modes Pillow cannot convert.
    """
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        return _high_depth_to_l(img).convert("RGB"), None
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        alpha = rgba.getchannel("A")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        rgb = Image.alpha_composite(background, rgba).convert("RGB")
        # An alpha channel that is opaque everywhere carries nothing worth re-attaching.
        if alpha.getextrema() == (255, 255):
            return rgb, None
        return rgb, alpha
    return img.convert("RGB"), None


def _decode_rgb_alpha(path: PathLike) -> tuple[Image.Image, Image.Image | None]:
    """Shared core of load_image / load_image_rgba: RGB composited on white, plus the alpha if any."""
    path = Path(path)
    img = _open_fully_decoded(path)
    try:
        return split_rgb_alpha(img)
    except (OSError, ValueError) as exc:
        raise ImageLoadError(path, f"cannot convert image mode {img.mode!r} to RGB ({exc})") from None


def load_image(path: PathLike) -> Image.Image:
    """Load any supported image file as a fully decoded PIL "RGB" image.

    EXIF orientation is applied, transparency is composited on white, 16-bit data is scaled (not
    clipped) to 8 bits. Raises ImageLoadError for missing, empty, unidentified, truncated, corrupt or
    oversized (decompression bomb) files.
    """
    rgb, _ = _decode_rgb_alpha(path)
    return rgb


def load_image_rgba(path: PathLike) -> tuple[Image.Image, Image.Image | None]:
    """Like load_image, but also return the alpha channel (mode "L") so it can be re-attached later.

    The RGB part is composited on white exactly as load_image does. Alpha is None when the file has no
    transparency, or when its alpha channel is fully opaque.
    """
    return _decode_rgb_alpha(path)


# ---------------------------------------------------------------------------------- PIL <-> tensors


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 tensor [3, H, W] (non-RGB modes are converted with Pillow's plain convert)."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.array(img, dtype=np.uint8, copy=True)  # writable copy: torch warns on read-only buffers
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def uint8_to_pil(t: torch.Tensor | np.ndarray) -> Image.Image:
    """uint8 tensor [3, H, W] (any device) or numpy array [H, W, 3] -> PIL "RGB" image."""
    if isinstance(t, torch.Tensor):
        if t.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 tensor, got {t.dtype}; use to_uint8() first")
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"expected a tensor of shape [3, H, W], got {list(t.shape)}")
        arr = t.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    elif isinstance(t, np.ndarray):
        if t.dtype != np.uint8:
            raise TypeError(f"expected a uint8 array, got {t.dtype}")
        if t.ndim != 3 or t.shape[2] != 3:
            raise ValueError(f"expected an array of shape [H, W, 3], got {list(t.shape)}")
        arr = np.ascontiguousarray(t)
    else:
        raise TypeError(f"expected a torch.Tensor or numpy.ndarray, got {type(t).__name__}")
    return Image.fromarray(arr)


# ------------------------------------------------------------------------------------- normalisation


def to_model_range(x: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [..., 3, H, W] in [0, 255] -> float tensor in [-1, 1] (x / 127.5 - 1)."""
    if x.dtype != torch.uint8:
        # Refusing floats catches double normalisation, which would otherwise silently squash images.
        raise TypeError(f"to_model_range expects uint8 input, got {x.dtype}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
    # Compute in at least float32 so half/bfloat16 outputs are correctly rounded from the exact value.
    compute = torch.promote_types(dtype, torch.float32)
    return (x.to(compute) / 127.5 - 1.0).to(dtype)


def to_uint8(y: torch.Tensor) -> torch.Tensor:
    """Float tensor in [-1, 1] (any device, any float dtype) -> uint8, round((y + 1) * 127.5) clamped."""
    if not y.is_floating_point():
        raise TypeError(f"to_uint8 expects a floating point tensor, got {y.dtype}")
    compute = torch.promote_types(y.dtype, torch.float32)
    v = (y.detach().to(compute) + 1.0) * 127.5
    # Casting NaN/inf to uint8 is undefined behaviour in torch; a diverged model should still yield a
    # deterministic (if ugly) image rather than garbage that differs between devices.
    v = torch.nan_to_num(v, nan=0.0, posinf=255.0, neginf=0.0)
    return v.round().clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------------------------- padding


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_size(height: int, width: int, multiple: int, *, minimum: int = 0) -> tuple[int, int]:
    """(H', W') that ``pad_to_multiple`` pads an H x W image to: the next multiples of ``multiple``,
    and at least ``minimum`` (rounded up to a multiple too)."""
    floor = _round_up(minimum, multiple)
    return max(_round_up(height, multiple), floor), max(_round_up(width, multiple), floor)


def _pad_axis(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    # Reflection needs a pad smaller than the side, so thin images are reflected repeatedly; a side of
    # one pixel has nothing to reflect and is replicated.
    while before > 0 or after > 0:
        n = x.shape[dim]
        if n == 1:
            b, a, mode = before, after, "replicate"
        else:
            b, a, mode = min(before, n - 1), min(after, n - 1), "reflect"
        pad = (b, a, 0, 0) if dim == -1 else (0, 0, b, a)
        x = F.pad(x, pad, mode=mode)
        before, after = before - b, after - a
    return x


def pad_to_multiple(x: torch.Tensor, multiple: int, *, minimum: int = 0) -> tuple[torch.Tensor,
                                                                                  tuple[int, int]]:
    """[B, C, H, W] float -> ([B, C, H', W'], (top, left)): H', W' the next multiples of ``multiple``
    (and at least ``minimum``), as ``padded_size`` says.

    The padding is reflected and split evenly around the image; ``y[..., top:top + H, left:left + W]``
    crops the result back. Translation, evaluation and analysis all pad through here, so a generator
    sees the same borders wherever it runs.
    """
    h, w = x.shape[-2:]
    hp, wp = padded_size(h, w, multiple, minimum=minimum)
    ph, pw = hp - h, wp - w
    top, left = ph // 2, pw // 2
    if pw:
        x = _pad_axis(x, left, pw - left, -1)
    if ph:
        x = _pad_axis(x, top, ph - top, -2)
    return x, (top, left)


# --------------------------------------------------------------------------------------------- saving


def _format_for(path: Path) -> str:
    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f"cannot infer image format from extension {ext!r} of {path}; pass format=...")
    return fmt


def save_image_atomic(img: Image.Image, path: PathLike, **save_kwargs) -> Path:
    """Save through ``fileio.atomic_write``, so readers never see a partial file.

    Parent directories are created. Extra keyword arguments go to PIL's Image.save (e.g. quality=95).
    Returns the final path.
    """
    path = Path(path)
    fmt = save_kwargs.pop("format", None) or _format_for(path)
    with atomic_write(path) as fh:
        img.save(fh, format=fmt, **save_kwargs)
    return path


# ---------------------------------------------------------------------------------------------- grids


def make_grid(rows: list[torch.Tensor], *, padding: int = 2) -> Image.Image:
    """Tile uint8 images into one PIL RGB image: rows[i] ([N, 3, H, W]) is row i, N images side by side.

    All images must share H and W. Rows with fewer images than the longest row are padded with white.
    White padding of `padding` pixels surrounds every tile.
    """
    if not rows:
        raise ValueError("make_grid needs at least one row")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    batches = []
    for i, row in enumerate(rows):
        if not isinstance(row, torch.Tensor) or row.dtype != torch.uint8:
            got = row.dtype if isinstance(row, torch.Tensor) else type(row).__name__
            raise TypeError(f"row {i}: expected a uint8 tensor, got {got}; use to_uint8() first")
        if row.dim() == 3:
            row = row.unsqueeze(0)
        if row.dim() != 4 or row.shape[1] != 3:
            raise ValueError(f"row {i}: expected shape [N, 3, H, W], got {list(row.shape)}")
        batches.append(row.detach().cpu())
    h, w = batches[0].shape[2], batches[0].shape[3]
    for i, b in enumerate(batches):
        if b.shape[2:] != (h, w):
            raise ValueError(f"row {i}: image size {tuple(b.shape[2:])} differs from row 0's {(h, w)}")
    n_cols = max(b.shape[0] for b in batches)
    if n_cols == 0:
        raise ValueError("make_grid needs at least one image")
    p = padding
    canvas = torch.full((3, len(batches) * (h + p) + p, n_cols * (w + p) + p), 255, dtype=torch.uint8)
    for r, b in enumerate(batches):
        top = p + r * (h + p)
        for c in range(b.shape[0]):
            left = p + c * (w + p)
            canvas[:, top : top + h, left : left + w] = b[c]
    return uint8_to_pil(canvas)
