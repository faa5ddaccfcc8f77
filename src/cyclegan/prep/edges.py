"""``cyclegan prep edge-smooth``: edge-smoothed copies of style images.

CartoonGAN (Chen, Lai & Liu, CVPR 2018, sec. 3.2.1) makes the discriminator tell crisp cartoon
outlines from blurred ones: each style image gets a copy whose edges are smoothed, and the copies are
shown to the discriminator labelled fake (``losses.edge_promote_loss``). The recipe, also used by
AnimeGAN: Canny edges, dilated, and a Gaussian blur applied only inside the dilated edge mask; flat
regions stay bit-for-bit the same, so the only difference the discriminator can learn from is the
sharpness of outlines.

The blur acts in pixels, so it must happen at the scale the network sees: a 5-pixel blur on a 1080p
frame vanishes once the frame is scaled to 286. ``size`` scales each image (shorter side) first; the
training run's own cache scales as its data pipeline does (``data.training_scale``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cyclegan.data import find_images
from cyclegan.errors import DataError, ImageLoadError, PrepError
from cyclegan.fileio import write_json_atomic
from cyclegan.image import IMAGE_EXTENSIONS, load_image, save_image_atomic
from cyclegan.jsonfile import read_json_object
from cyclegan.prep.deps import opencv

# CartoonGAN's settings as commonly reproduced (the paper gives the steps, not the numbers): Canny
# hysteresis thresholds 100 / 200 on 8-bit grey, a 5x5 dilation and a 5x5 Gaussian (OpenCV derives
# sigma = 1.1 from the kernel size).
CANNY_LOW = 100
CANNY_HIGH = 200
DILATE = 5
BLUR = 5

MANIFEST = "edge_smooth.json"  # settings of the copies in a folder, so a later run can reuse them


@dataclass(frozen=True)
class EdgeSmoothSettings:
    canny_low: int = CANNY_LOW
    canny_high: int = CANNY_HIGH
    dilate: int = DILATE
    blur: int = BLUR
    size: int = 0  # shorter side before smoothing; 0 keeps each image's size

    def check(self) -> None:
        if not 0 <= self.canny_low <= self.canny_high:
            raise PrepError(f"Canny thresholds must satisfy 0 <= low <= high, got {self.canny_low}, "
                            f"{self.canny_high}")
        if self.dilate < 1:
            raise PrepError(f"--dilate must be >= 1, got {self.dilate}")
        if self.blur < 1 or self.blur % 2 == 0:
            raise PrepError(f"--blur must be an odd kernel size >= 1, got {self.blur}")
        if self.size and self.size < 8:
            raise PrepError(f"--size must be 0 (keep) or >= 8, got {self.size}")


def edge_mask(rgb: np.ndarray, settings: EdgeSmoothSettings = EdgeSmoothSettings()) -> np.ndarray:
    """uint8 [H, W, 3] -> bool [H, W]: Canny edges of the grey image, dilated by ``settings.dilate``."""
    cv2 = opencv("edge smoothing")
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, settings.canny_low, settings.canny_high)
    kernel = np.ones((settings.dilate, settings.dilate), dtype=np.uint8)
    return cv2.dilate(edges, kernel) > 0


def edge_smooth(rgb: np.ndarray, settings: EdgeSmoothSettings = EdgeSmoothSettings()) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [H, W, 3]: Gaussian-blurred inside the dilated edge mask, unchanged
    elsewhere (CartoonGAN sec. 3.2.1)."""
    cv2 = opencv("edge smoothing")
    mask = edge_mask(rgb, settings)
    blurred = cv2.GaussianBlur(np.ascontiguousarray(rgb), (settings.blur, settings.blur), 0)
    return np.where(mask[..., None], blurred, rgb)


def scale_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """``img`` with its shorter side ``size`` (aspect kept); unchanged when ``size`` is 0 or already met."""
    w, h = img.size
    if not size or min(w, h) == size:
        return img
    scale = size / min(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)


@dataclass
class EdgeSmoothResult:
    out_dir: Path
    written: int
    existing: int  # copies already there from an earlier run with the same settings
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def smoothed_path(style_file: Path, style_dir: Path, out_dir: Path) -> Path:
    """Where the smoothed copy of ``style_file`` lives: same relative path under ``out_dir``, as .png
    (lossless: JPEG would add ringing around exactly the outlines the loss is about)."""
    return (out_dir / style_file.relative_to(style_dir)).with_suffix(".png")


def edge_smooth_folder(
    style_dir: str | Path,
    out_dir: str | Path,
    *,
    settings: EdgeSmoothSettings = EdgeSmoothSettings(),
    rescale: Callable[[Image.Image], Image.Image] | None = None,
    rescale_key: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> EdgeSmoothResult:
    """An edge-smoothed PNG in ``out_dir`` for every image under ``style_dir`` (same relative path).

    ``rescale`` (default: shorter side to ``settings.size``) brings each image to the training scale
    before smoothing; ``rescale_key`` describes it for the folder's manifest (e.g. the data config's
    preprocess and load size), so copies made at another scale are never reused. Copies already in ``out_dir``
    from an earlier run with the same settings are
    kept, so a second run only fills in what is missing; a folder made with other settings is refused
    rather than mixed. Unreadable images are skipped and reported, and so is the second of two images
    that differ only in extension (a.png, a.jpg: one copy name, a.png), which would overwrite the first's
    copy.
    """
    settings.check()
    style_dir, out_dir = Path(style_dir), Path(out_dir)
    if style_dir.suffix.lower() == ".npz":
        raise PrepError(f"{style_dir}: edge smoothing needs a folder of style images, not an .npz array")
    files = find_images(style_dir)
    if not files:
        raise DataError(f"{style_dir}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    if out_dir.resolve() == style_dir.resolve() or style_dir.resolve() in out_dir.resolve().parents:
        # Inside the style folder the blurred copies would become style images themselves.
        raise PrepError(f"{out_dir}: must not be {style_dir} or inside it (the copies would join the style "
                        "set)")
    opencv("edge smoothing")  # fail before any work when OpenCV is missing
    manifest = out_dir / MANIFEST
    if rescale is not None and not rescale_key:
        raise ValueError("a custom rescale needs a rescale_key describing it")
    record = {"settings": dataclasses.asdict(settings),
              "rescale": rescale_key or f"shorter side {settings.size}"}
    if manifest.is_file():
        previous = read_json_object(manifest, {"settings": dict, "rescale": str}, error=PrepError)
        if previous != record:
            raise PrepError(f"{out_dir}: holds copies made with other settings ({previous.get('settings')}); "
                            "choose another --out")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise PrepError(f"{out_dir}: exists and is not an edge-smoothing folder (no {MANIFEST}); choose "
                        "another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(manifest, record)
    resize = rescale or (lambda img: scale_shorter_side(img, settings.size))
    written, existing, skipped = 0, 0, []
    first_for: dict[Path, Path] = {}
    for i, path in enumerate(files):
        target = smoothed_path(path, style_dir, out_dir)
        if (first := first_for.setdefault(target, path)) != path:
            # a.png and a.jpg: one copy name, and training pairs both with it (data.edge_smoothed_files).
            skipped.append((path, (f"same name as {first.name}, whose copy {target.name} it would overwrite; "
                                   "rename one of them to smooth both")))
            continue
        if target.is_file():
            existing += 1
        else:
            try:
                img = resize(load_image(path))
            except ImageLoadError as e:
                skipped.append((path, e.reason))
                continue
            save_image_atomic(Image.fromarray(edge_smooth(np.asarray(img), settings)), target)
            written += 1
        if progress is not None:
            progress(i + 1, len(files))
    return EdgeSmoothResult(out_dir=out_dir, written=written, existing=existing, skipped=skipped)
