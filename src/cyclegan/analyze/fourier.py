"""``cyclegan analyze fourier``: spectra of inputs and their translations by one or more checkpoints.

Draws an input and its translations (U-Net / ResNet, say) beside their log-magnitude spectra after
fftshift, and adds as numbers what such a figure is read for by eye: the azimuthally
averaged radial power spectrum over all inputs, of each checkpoint's translations and of a folder of
real target-domain images, and the high-frequency energy ratio above a cutoff.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cyclegan.checkpoint import load_generator, resolve_checkpoint
from cyclegan.data import find_images
from cyclegan.errors import EvaluationError
from cyclegan.fileio import write_bytes_atomic, write_json_atomic
from cyclegan.image import is_image_file, load_image, pil_to_uint8
from cyclegan.metrics.fourier import (
    default_bins,
    high_frequency_ratio,
    log_magnitude_spectrum,
    mean_radial_power_spectrum,
    ring_centres,
)
from cyclegan.metrics.generate import translate_uint8
from cyclegan.sources import resolve_source

__all__ = ["analyze_fourier", "collect_images"]


def collect_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named directly, plus every image under named folders (sorted, recursive)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += find_images(p)
        elif p.is_file():
            if not is_image_file(p):
                raise EvaluationError(f"{p}: not an image file (by extension)")
            files.append(p)
        else:
            raise EvaluationError(f"{p}: no such file or folder")
    if not files:
        raise EvaluationError(f"no images found in {', '.join(map(str, paths)) or 'the arguments'}")
    return files


def _load(path: Path, max_side: int | None) -> torch.Tensor:
    img = load_image(path)
    if max_side and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    return pil_to_uint8(img)  # [3, H, W]


def _label(path: Path) -> str:
    ckpt = resolve_checkpoint(resolve_source(path))
    if ckpt.parent.name == "checkpoints":
        return f"{ckpt.parent.parent.name}/{ckpt.name}"
    return ckpt.name


def _summary(images: list[torch.Tensor], names: list[str], *, cutoff: float, n_bins: int) -> dict:
    ratios = [high_frequency_ratio(im, cutoff=cutoff) for im in images]
    _, power, n = mean_radial_power_spectrum(images, n_bins=n_bins)
    return {
        "n_images": n,
        "hf_ratio_mean": float(np.mean(ratios)),
        "hf_ratio": dict(zip(names, ratios)),
        "radial_power": [None if not np.isfinite(v) else float(v) for v in power],
    }


def _figure(shown, rows_labels, col_titles, freqs, curves, *, cutoff: float) -> bytes:
    """Image/spectrum pairs per shown input (rows), then the radial spectra; returns PNG bytes."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # the eval extra
        from matplotlib.figure import Figure
    except ImportError:
        raise EvaluationError("matplotlib is not installed; the Fourier figure needs it: pip install "
                              "'cyclegan[eval]'")
    n_rows, n_cols = len(shown), len(col_titles)
    fig = Figure(figsize=(2.2 * n_cols, 2.3 * n_rows + 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n_rows + 1, n_cols, height_ratios=[1] * n_rows + [1.4])
    for r, row in enumerate(shown):
        for c, (kind, data) in enumerate(row):
            ax = fig.add_subplot(grid[r, c])
            if kind == "image":
                ax.imshow(data.permute(1, 2, 0).numpy())
            else:
                ax.imshow(data, cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_titles[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(rows_labels[r], fontsize=7)
    ax = fig.add_subplot(grid[n_rows, :])
    for label, power in curves:
        ax.semilogy(freqs, power, label=label)
    ax.axvline(cutoff, color="gray", linestyle="--", linewidth=0.8, label=f"cutoff {cutoff:g}")
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("mean power")
    ax.set_title("azimuthally averaged power spectrum", fontsize=9)
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def analyze_fourier(
    inputs: Sequence[str | os.PathLike],
    *,
    checkpoints: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    json_out: str | os.PathLike | None = None,
    direction: str = "a2b",
    real: str | os.PathLike | None = None,
    cutoff: float = 0.25,
    max_side: int | None = None,
    max_show: int = 4,
    device: str | torch.device = "cpu",
    echo: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Translate ``inputs`` (files or folders) with each checkpoint; write the figure ``out`` (PNG) and
    the numbers ``json_out`` (default: ``out`` with .json). Returns the JSON dict.

    ``real`` is a folder of real target-domain images whose spectrum is the reference a translation
    should approach. ``max_side`` downsizes large photos (longest side) before translating.
    """
    if not checkpoints:
        raise EvaluationError("analyze fourier needs at least one --checkpoint")
    files = collect_images(inputs)
    images = [_load(p, max_side) for p in files]
    names = [str(p) for p in files]
    real_files = collect_images([real]) if real else []
    real_images = [_load(p, max_side) for p in real_files]
    n_bins = min(default_bins(*im.shape[1:]) for im in images + real_images)

    translated: list[tuple[str, str, list[torch.Tensor]]] = []
    for ck in checkpoints:
        generator, cfg = load_generator(ck, direction=direction, device=device)
        label = _label(Path(ck))
        if any(label == t[0] for t in translated):
            label = f"{label} #{len(translated) + 1}"
        echo(f"analyze: translating {len(images)} image(s) with {label} ({cfg.model.generator.name})")
        outs = [translate_uint8(generator, im.unsqueeze(0))[0] for im in images]
        translated.append((label, cfg.model.generator.name, outs))

    result: dict = {
        "direction": direction,
        "cutoff": cutoff,
        "n_bins": n_bins,
        "frequencies": [float(f) for f in ring_centres(n_bins)],
        "inputs": _summary(images, names, cutoff=cutoff, n_bins=n_bins),
        "checkpoints": {},
    }
    for (label, gen_name, outs), ck in zip(translated, checkpoints):
        result["checkpoints"][label] = {
            "path": str(ck),
            "generator": gen_name,
            **_summary(outs, names, cutoff=cutoff, n_bins=n_bins),
        }
    if real_images:
        result["real"] = {"path": str(real), **_summary(real_images, [str(p) for p in real_files],
                                                        cutoff=cutoff, n_bins=n_bins)}

    # -- figure: up to max_show inputs, each with its spectrum and every checkpoint's translation
    shown, row_labels = [], []
    for i in range(min(max_show, len(images))):
        row = [("image", images[i]), ("spectrum", log_magnitude_spectrum(images[i]))]
        for _, _, outs in translated:
            row += [("image", outs[i]), ("spectrum", log_magnitude_spectrum(outs[i]))]
        shown.append(row)
        row_labels.append(files[i].name)
    col_titles = ["input", "input spectrum"]
    for label, gen_name, _ in translated:
        col_titles += [f"{label} ({gen_name})", "spectrum"]
    freqs = np.array(result["frequencies"])
    curves = [(f"inputs (HF {result['inputs']['hf_ratio_mean']:.3f})",
               np.array(result["inputs"]["radial_power"], dtype=float))]
    for label, entry in result["checkpoints"].items():
        curves.append((f"{label} (HF {entry['hf_ratio_mean']:.3f})",
                       np.array(entry["radial_power"], dtype=float)))
    if "real" in result:
        curves.append((f"real {Path(real).name} (HF {result['real']['hf_ratio_mean']:.3f})",
                       np.array(result["real"]["radial_power"], dtype=float)))
    out = Path(out)
    write_bytes_atomic(out, _figure(shown, row_labels, col_titles, freqs, curves, cutoff=cutoff))
    json_path = Path(json_out) if json_out else out.with_suffix(".json")
    write_json_atomic(json_path, result)
    result["out"], result["json"] = str(out), str(json_path)
    return result
