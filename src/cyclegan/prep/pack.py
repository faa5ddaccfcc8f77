"""``cyclegan prep pack``: a folder of images as one uint8 [N, S, S, 3] array in an .npz.

One domain at, e.g., 64x64, as ``np.savez_compressed`` writes it; train on it with
``--data-a a.npz --data-b b.npz`` (see ``cyclegan.npz``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cyclegan.data import find_images
from cyclegan.errors import DataError, ImageLoadError, PrepError
from cyclegan.image import IMAGE_EXTENSIONS, load_image
from cyclegan.npz import write_image_array

FITS = ("crop", "stretch")


@dataclass
class PackResult:
    out: Path
    count: int
    size: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def fit_square(img: Image.Image, size: int, *, fit: str = "crop") -> Image.Image:
    """``crop``: centre-crop to a square, then resize (keeps proportions, loses the edges of long
    sides); ``stretch``: resize the whole image to size x size (keeps everything, distorts shapes)."""
    if fit == "crop":
        return ImageOps.fit(img, (size, size), method=Image.BICUBIC)
    if fit == "stretch":
        return img.resize((size, size), Image.BICUBIC)
    raise PrepError(f"fit {fit!r}: choose from {', '.join(FITS)}")


def pack_folder(
    in_dir: str | Path, out: str | Path, *, size: int, fit: str = "crop", compress: bool = True,
    limit: int = 0,
) -> PackResult:
    """Every image under ``in_dir`` (recursive, sorted) as uint8 [N, size, size, 3] in ``out``.

    Unreadable files are skipped and reported; ``limit`` > 0 keeps the first ``limit`` usable images.
    """
    if size < 8:
        raise PrepError(f"--size must be >= 8, got {size}")
    if fit not in FITS:
        raise PrepError(f"fit {fit!r}: choose from {', '.join(FITS)}")
    out = Path(out)
    if out.suffix.lower() != ".npz":
        raise PrepError(f"{out}: the output file must end in .npz")
    files = find_images(in_dir)
    if not files:
        raise DataError(f"{in_dir}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    if limit:
        files = files[: limit]
    images = np.empty((len(files), size, size, 3), dtype=np.uint8)
    count, skipped = 0, []
    for path in files:
        try:
            img = load_image(path)
        except ImageLoadError as e:
            skipped.append((path, e.reason))
            continue
        images[count] = np.asarray(fit_square(img, size, fit=fit))
        count += 1
    if not count:
        raise DataError(f"{in_dir}: none of the {len(files)} image file(s) could be read")
    write_image_array(out, images[:count], compress=compress)
    return PackResult(out=out, count=count, size=size, skipped=skipped)
