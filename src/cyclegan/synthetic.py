"""Images the project generates itself, so the demo and the tests never need a download.

Domain A ("photo") and domain B ("cartoon") draw scenes from the same distribution (gradient sky,
a few ellipses and rectangles) but render them differently: A has soft shading, soft edges and a mild
noise texture; B has flat posterised colours, dark outlines and no noise. That is a genuine, learnable
style gap, while staying tiny and fast to produce.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cyclegan.image import save_image_atomic

__all__ = ["STYLES", "make_bad_files", "make_odd_images", "make_scene", "make_unpaired_dataset"]

STYLES = ("photo", "cartoon")

# Fixed sub-stream ids: each (split, domain) gets its own generator, so changing n_test does not
# change the training images for the same seed.
_STREAMS = {("train", "A"): 1, ("train", "B"): 2, ("test", "A"): 3, ("test", "B"): 4}

_CARTOON_LEVELS = 4  # colour levels per channel in domain B
_OUTLINE_RGB = np.array([20, 16, 24], dtype=np.float32)


@dataclass(frozen=True)
class _Shape:
    kind: str  # "ellipse" | "rect"
    cx: float
    cy: float
    rx: float
    ry: float
    angle: float
    color: np.ndarray  # float32 [3] in [0, 255]


@dataclass(frozen=True)
class _Scene:
    top: np.ndarray  # background colour at one end of the gradient
    bottom: np.ndarray  # ... and at the other
    grad_angle: float
    light_angle: float
    shapes: tuple[_Shape, ...]


def _random_scene(rng: np.random.Generator, size: int) -> _Scene:
    top = rng.uniform(40, 255, 3).astype(np.float32)
    bottom = rng.uniform(0, 215, 3).astype(np.float32)
    shapes = []
    for _ in range(int(rng.integers(2, 5))):
        shapes.append(
            _Shape(
                kind="ellipse" if rng.random() < 0.5 else "rect",
                cx=float(rng.uniform(0.15, 0.85) * size),
                cy=float(rng.uniform(0.15, 0.85) * size),
                rx=float(rng.uniform(0.08, 0.25) * size),
                ry=float(rng.uniform(0.08, 0.25) * size),
                angle=float(rng.uniform(0, np.pi)),
                color=rng.uniform(0, 255, 3).astype(np.float32),
            )
        )
    return _Scene(
        top=top,
        bottom=bottom,
        grad_angle=float(rng.uniform(0, 2 * np.pi)),
        light_angle=float(rng.uniform(0, 2 * np.pi)),
        shapes=tuple(shapes),
    )


def _posterise(x: np.ndarray) -> np.ndarray:
    step = 255.0 / (_CARTOON_LEVELS - 1)
    return np.round(x / step) * step


def _render(scene: _Scene, size: int, style: str, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    # Background gradient parameter t in [0, 1] along a random direction.
    d = np.cos(scene.grad_angle) * xx + np.sin(scene.grad_angle) * yy
    t = (d - d.min()) / max(float(d.max() - d.min()), 1e-6)
    if style == "cartoon":
        t = np.round(t * (_CARTOON_LEVELS - 1)) / (_CARTOON_LEVELS - 1)  # banded sky
        top, bottom = _posterise(scene.top), _posterise(scene.bottom)
    else:
        top, bottom = scene.top, scene.bottom
    img = top[None, None, :] * (1 - t[..., None]) + bottom[None, None, :] * t[..., None]

    lx, ly = np.cos(scene.light_angle), np.sin(scene.light_angle)
    outline_px = max(1.0, size / 48.0)
    for s in scene.shapes:
        ca, sa = np.cos(s.angle), np.sin(s.angle)
        u = (xx - s.cx) * ca + (yy - s.cy) * sa
        v = -(xx - s.cx) * sa + (yy - s.cy) * ca
        if s.kind == "ellipse":
            f = np.sqrt((u / s.rx) ** 2 + (v / s.ry) ** 2)
        else:
            f = np.maximum(np.abs(u) / s.rx, np.abs(v) / s.ry)
        # f == 1 on the boundary; scaling by the smaller radius makes (f - 1) roughly a pixel distance.
        dist = (f - 1.0) * min(s.rx, s.ry)
        if style == "cartoon":
            cover = (dist <= 0).astype(np.float32)
            img = img * (1 - cover[..., None]) + _posterise(s.color)[None, None, :] * cover[..., None]
            ring = (np.abs(dist) <= outline_px).astype(np.float32)
            img = img * (1 - ring[..., None]) + _OUTLINE_RGB[None, None, :] * ring[..., None]
        else:
            cover = np.clip(0.5 - dist, 0.0, 1.0)  # ~1px anti-aliased edge
            # Lit from one side and darker towards the rim: reads as a rounded object.
            lit = (u * lx + v * ly) / max(s.rx, s.ry)
            shade = 1.0 + 0.25 * lit - 0.3 * np.clip(f, 0, 1) ** 2
            colour = s.color[None, None, :] * shade[..., None]
            img = img * (1 - cover[..., None]) + colour * cover[..., None]

    if style == "photo":
        # Low-frequency "material" ripple plus fine sensor-like grain.
        ripple = np.zeros((size, size), dtype=np.float32)
        for _ in range(3):
            fx, fy = rng.uniform(-0.4, 0.4, 2)
            ripple += rng.uniform(2, 5) * np.sin(fx * xx + fy * yy + rng.uniform(0, 2 * np.pi))
        img = img + ripple[..., None] + rng.normal(0.0, 4.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_scene(rng: np.random.Generator, size: int, style: str) -> np.ndarray:
    """One random scene as uint8 [size, size, 3]; style "photo" (domain A) or "cartoon" (domain B)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    return _render(_random_scene(rng, size), size, style, rng)


def make_unpaired_dataset(
    root: Path, *, n_train: int = 32, n_test: int = 8, size: int = 64, seed: int = 0
) -> Path:
    """Write root/{trainA,trainB,testA,testB}/NNNN.png: A = "photo" scenes, B = "cartoon" scenes.

    Deterministic for a given seed. Existing files with the same names are overwritten. Returns root.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError("n_train and n_test must be >= 0")
    root = Path(root)
    for (split, domain), stream in _STREAMS.items():
        n = n_train if split == "train" else n_test
        rng = np.random.default_rng([seed, stream])
        style = "photo" if domain == "A" else "cartoon"
        folder = root / f"{split}{domain}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = make_scene(rng, size, style)
            # compress_level=1: these are throwaway images, and encoding speed dominates generation.
            save_image_atomic(Image.fromarray(arr), folder / f"{i:04d}.png", compress_level=1)
    return root


# ---------------------------------------------------------------------------- odd and broken files


def _exif_rotated_jpeg(path: Path) -> None:
    # Stored 40x20 (landscape) with Orientation=6: viewers rotate 90 deg clockwise to show 20x40.
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :] = (0, 0, 255)
    arr[:10, :10] = (255, 0, 0)  # marks the stored top-left corner, to check the rotation direction
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    img.save(path, format="JPEG", quality=95, exif=exif.tobytes())


def make_odd_images(folder: Path) -> dict[str, Path]:
    """Write one image of each awkward kind into folder; return name -> path.

    gray (L png 16x12), palette (P png with transparent index 0; left half transparent, right half
    red), rgba (32x32, transparent with an opaque green 16x16 centre), la (16x16, left half
    transparent, right half opaque black), cmyk (jpg, pure red), png16 (I;16 png 3x2: top row 0,
    32768, 65535; bottom row 65535), exif_rotated (40x20 jpg, EXIF Orientation=6), webp, bmp, tif
    (RGB 24x16 gradients).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    gray = np.tile(np.linspace(0, 255, 16, dtype=np.float32), (12, 1)).astype(np.uint8)
    out["gray"] = folder / "gray.png"
    Image.fromarray(gray).save(out["gray"])

    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    pal.paste(1, (8, 0, 16, 16))
    out["palette"] = folder / "palette.png"
    pal.save(out["palette"], transparency=0)

    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[8:24, 8:24] = (0, 200, 0, 255)
    out["rgba"] = folder / "rgba.png"
    Image.fromarray(rgba).save(out["rgba"])

    la = np.zeros((16, 16, 2), dtype=np.uint8)
    la[:, 8:, 1] = 255
    out["la"] = folder / "la.png"
    Image.fromarray(la).save(out["la"])

    out["cmyk"] = folder / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(out["cmyk"], quality=95)

    png16 = np.array([[0, 32768, 65535], [65535, 65535, 65535]], dtype=np.uint16)
    out["png16"] = folder / "png16.png"
    Image.fromarray(png16).save(out["png16"])

    out["exif_rotated"] = folder / "exif_rotated.jpg"
    _exif_rotated_jpeg(out["exif_rotated"])

    rgb = np.zeros((16, 24, 3), dtype=np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 24, dtype=np.float32).astype(np.uint8)[None, :]
    rgb[..., 1] = np.linspace(0, 255, 16, dtype=np.float32).astype(np.uint8)[:, None]
    rgb[..., 2] = 128
    for name, ext, kwargs in (
        ("webp", ".webp", {"lossless": True}),
        ("bmp", ".bmp", {}),
        ("tif", ".tif", {}),
    ):
        out[name] = folder / f"{name}{ext}"
        Image.fromarray(rgb).save(out[name], **kwargs)
    return out


def make_bad_files(folder: Path) -> dict[str, Path]:
    """Write files that must fail to load; return name -> path.

    zero_byte (empty .jpg), truncated (noise PNG cut in half), not_image (text in a .png),
    corrupt (a real PNG signature and header followed by garbage).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    rng = np.random.default_rng(1234)

    out["zero_byte"] = folder / "zero_byte.jpg"
    out["zero_byte"].write_bytes(b"")

    # Noise does not compress, so the pixel data spans most of the file and halving it cuts into IDAT.
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    png = buf.getvalue()
    out["truncated"] = folder / "truncated.png"
    out["truncated"].write_bytes(png[: len(png) // 2])

    out["not_image"] = folder / "not_image.png"
    out["not_image"].write_text("this is not an image, just some text\n")

    # 8-byte signature + 25-byte IHDR chunk = 33 bytes of valid PNG, then noise.
    out["corrupt"] = folder / "corrupt.png"
    out["corrupt"].write_bytes(png[:33] + rng.integers(0, 256, 512, dtype=np.uint8).tobytes())
    return out
