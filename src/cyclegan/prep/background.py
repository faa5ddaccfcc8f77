"""``cyclegan prep remove-background``: each image's subject on a white background.

For a style domain drawn on white (game sprites, clip art), the photos of the other domain must sit on
white too, or the generator spends its capacity learning to paint backgrounds white. A pretrained
segmentation network would need downloaded weights; we download none and use OpenCV's GrabCut
(Rother, Kolmogorov & Blake, SIGGRAPH 2004) instead:
colour mixture models of foreground and background, initialised from a centred rectangle (the subject
of a curated animal photo is near the middle), refined by graph cuts. Where GrabCut fails, a folder of
hand-made masks (white = subject) overrides it image by image. A preview grid (originals, masks,
results) shows at a glance which images need such a mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from cyclegan.data import find_images
from cyclegan.errors import DataError, ImageLoadError, PrepError
from cyclegan.image import IMAGE_EXTENSIONS, load_image, make_grid, save_image_atomic
from cyclegan.prep.deps import opencv


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 8-connected foreground region: GrabCut often leaves specks of background that
    happen to share the subject's colours, and one animal per photo is the common case."""
    cv2 = opencv("background removal")
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:  # background plus at most one region
        return mask
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def grabcut_mask(
    rgb: np.ndarray, *, margin: float = 0.05, iterations: int = 5, max_side: int = 400,
    keep_largest: bool = True,
) -> np.ndarray:
    """Foreground mask of ``rgb`` (uint8 [H, W, 3]) -> bool [H, W], by GrabCut from a centred rectangle.

    The rectangle leaves ``margin`` (a fraction of each side) outside: GrabCut treats everything there
    as certain background and learns the background colours from it. Images are segmented at most
    ``max_side`` pixels on their long side (GrabCut's cost grows with the pixel count and a mask
    needs little resolution) and the mask is scaled back up. OpenCV's RNG is seeded, so the same image
    always gets the same mask.
    """
    cv2 = opencv("background removal")
    if not 0.0 < margin < 0.5:
        raise PrepError(f"--margin must be in (0, 0.5), got {margin}")
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = rgb if scale == 1.0 else cv2.resize(
        rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    sh, sw = small.shape[:2]
    mx, my = max(1, round(sw * margin)), max(1, round(sh * margin))
    rect = (mx, my, max(1, sw - 2 * mx), max(1, sh - 2 * my))
    mask = np.zeros((sh, sw), dtype=np.uint8)
    bgd_model = np.zeros((1, 65), dtype=np.float64)
    fgd_model = np.zeros((1, 65), dtype=np.float64)
    cv2.setRNGSeed(0)
    bgr = np.ascontiguousarray(small[..., ::-1])
    cv2.grabCut(bgr, mask, rect, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_RECT)
    fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    if keep_largest and fg.any():
        fg = _largest_component(fg)
    if scale != 1.0:
        fg = cv2.resize(fg.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    return fg


def composite_on_white(rgb: np.ndarray, mask: np.ndarray, *, feather: float = 1.0) -> np.ndarray:
    """uint8 [H, W, 3] with everything outside ``mask`` (bool [H, W]) white. ``feather`` > 0 blurs
    the mask edge by that many pixels (Gaussian sigma) so outlines do not look cut out with scissors."""
    alpha = mask.astype(np.float32)
    if feather > 0:
        cv2 = opencv("background removal")
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=feather)
    alpha = alpha[..., None]
    out = rgb.astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _user_mask(masks_dir: Path, rel: Path, size: tuple[int, int]) -> np.ndarray | None:
    """The mask for image ``rel`` in ``masks_dir`` (same relative path, any image extension), or None."""
    stem = masks_dir / rel.with_suffix("")
    for ext in sorted(IMAGE_EXTENSIONS):
        candidate = stem.with_suffix(ext)
        if candidate.is_file():
            m = load_image(candidate).convert("L")
            if m.size != size:
                m = m.resize(size, Image.NEAREST)
            return np.asarray(m) > 127
    return None


def _thumb(img: Image.Image, size: int) -> torch.Tensor:
    t = ImageOps.pad(img.convert("RGB"), (size, size), color=(128, 128, 128))
    return torch.from_numpy(np.asarray(t).copy()).permute(2, 0, 1)  # [3, size, size] uint8


@dataclass
class BackgroundResult:
    out_dir: Path
    written: int
    from_masks: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    preview: Path | None = None


def remove_background(
    in_dir: str | Path,
    out_dir: str | Path,
    *,
    masks_dir: str | Path | None = None,
    margin: float = 0.05,
    iterations: int = 5,
    max_side: int = 400,
    feather: float = 1.0,
    preview: str | Path | None = None,
    preview_count: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> BackgroundResult:
    """Write every image under ``in_dir`` to ``out_dir`` (same relative path, as .png) with its
    background replaced by white; a mask from ``masks_dir`` wins over GrabCut when one exists.
    ``preview`` is a PNG of the first ``preview_count`` images: originals, masks, results."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    files = find_images(in_dir)
    if not files:
        raise DataError(f"{in_dir}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    if out_dir.resolve() == in_dir.resolve() or in_dir.resolve() in out_dir.resolve().parents:
        raise PrepError(f"{out_dir}: must not be {in_dir} or inside it (results would mix with the inputs)")
    masks = Path(masks_dir) if masks_dir is not None else None
    if masks is not None and not masks.is_dir():
        raise DataError(f"{masks}: mask folder not found")
    if iterations < 1:
        raise PrepError(f"--iterations must be >= 1, got {iterations}")
    opencv("background removal")  # fail before any work when OpenCV is missing
    written, from_masks, skipped = 0, 0, []
    rows: list[list[torch.Tensor]] = [[], [], []]
    for i, path in enumerate(files):
        try:
            img = load_image(path)
        except ImageLoadError as e:
            skipped.append((path, e.reason))
            continue
        rgb = np.asarray(img)
        rel = path.relative_to(in_dir)
        mask = _user_mask(masks, rel, img.size) if masks is not None else None
        if mask is not None:
            from_masks += 1
        else:
            mask = grabcut_mask(rgb, margin=margin, iterations=iterations, max_side=max_side)
        result = Image.fromarray(composite_on_white(rgb, mask, feather=feather))
        save_image_atomic(result, (out_dir / rel).with_suffix(".png"))
        written += 1
        if preview is not None and len(rows[0]) < preview_count:
            rows[0].append(_thumb(img, 128))
            rows[1].append(_thumb(Image.fromarray(mask.astype(np.uint8) * 255), 128))
            rows[2].append(_thumb(result, 128))
        if progress is not None:
            progress(i + 1, len(files))
    preview_path = None
    if preview is not None and rows[0]:
        preview_path = save_image_atomic(make_grid([torch.stack(r) for r in rows]), Path(preview))
    return BackgroundResult(out_dir=out_dir, written=written, from_masks=from_masks, skipped=skipped,
                            preview=preview_path)
