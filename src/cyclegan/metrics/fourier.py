"""Fourier-domain analysis of translations.

Generators are compared (U-Net against ResNet, say) by the 2-D FFT of an input and its translations,
the zero frequency shifted to the centre and normalised by 1/sqrt(MN) (numpy's ``norm="ortho"``).
Read by eye such pictures stay qualitative; here the spectra are also summarised as numbers, as
Durall, Keuper & Keuper (CVPR 2020) do with the azimuthal average of the power spectrum:

- ``log_magnitude_spectrum``: log(1 + |F|) after fftshift, the usual picture of a spectrum;
- ``radial_power_spectrum``: |F|^2 averaged over rings of equal spatial frequency (azimuthal average),
  in cycles per pixel, so images of different sizes share one frequency axis and can be averaged;
- ``high_frequency_ratio``: the share of (non-DC) spectral energy above a cutoff frequency.

Spectra are taken of the luminance (ITU-R BT.601 weights, as Pillow's "L" mode). The radial spectrum
and the ratio use the mean-subtracted image, so overall brightness does not count as energy.
With the orthonormal FFT, Parseval holds: the ring powers of white noise of variance s^2 are all s^2.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import torch

__all__ = [
    "NYQUIST",
    "default_bins",
    "high_frequency_ratio",
    "log_magnitude_spectrum",
    "mean_radial_power_spectrum",
    "radial_frequency",
    "radial_power_spectrum",
    "ring_centres",
    "to_luminance",
]

NYQUIST = 0.5  # cycles per pixel: the highest frequency a sampled image can hold
_BT601 = np.array([0.299, 0.587, 0.114])


def to_luminance(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8/float image -> float64 [H, W]. Accepts [H, W], [H, W, 3] (numpy/PIL) or [3, H, W] (torch)."""
    if isinstance(image, torch.Tensor):
        arr = image.detach().cpu().double().numpy()
        if arr.ndim == 3:
            arr = np.moveaxis(arr, 0, -1)  # [3, H, W] -> [H, W, 3]
    else:
        arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr @ _BT601
    raise ValueError(f"expected a [H, W], [H, W, 3] or [3, H, W] image, got shape {list(arr.shape)}")


def _spectrum(gray: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT, complex [H, W]:
    F(u, v) = 1/sqrt(MN) sum_{m, n} f(m, n) exp(-2 pi i (mu/M + nv/N))."""
    return np.fft.fftshift(np.fft.fft2(gray, norm="ortho"))


def log_magnitude_spectrum(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """log(1 + |F(u, v)|), zero frequency at the centre: float64 [H, W]."""
    return np.log1p(np.abs(_spectrum(to_luminance(image))))


def radial_frequency(height: int, width: int) -> np.ndarray:
    """Spatial frequency in cycles per pixel of every element of a centred [H, W] spectrum."""
    fy = np.fft.fftshift(np.fft.fftfreq(height))
    fx = np.fft.fftshift(np.fft.fftfreq(width))
    return np.hypot(fy[:, None], fx[None, :])  # [H, W], 0 at the centre, up to ~0.707 in corners


def _power(image: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    gray = to_luminance(image)
    power = np.abs(_spectrum(gray - gray.mean())) ** 2  # [H, W]
    return power, radial_frequency(*gray.shape)


def default_bins(height: int, width: int) -> int:
    """One ring per frequency step of the shorter side: min(H, W) // 2 rings up to Nyquist."""
    return max(1, min(height, width) // 2)


def ring_centres(n_bins: int) -> np.ndarray:
    """Centres of the rings of ``radial_power_spectrum``: (i + 1) * 0.5 / n_bins cycles/pixel, [n_bins]."""
    return (np.arange(n_bins) + 1.0) * (NYQUIST / n_bins)


def radial_power_spectrum(
    image: np.ndarray | torch.Tensor, *, n_bins: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power -> (ring centres [n_bins] in cycles/pixel, mean power [n_bins]).

    Ring i is centred at (i + 1) * 0.5 / n_bins with width 0.5 / n_bins, so the last ring holds the
    Nyquist frequency and, with the default n_bins on a square image, ring centres are exactly the
    frequencies k / N the FFT samples along the axes. DC (the removed mean) is in no ring; corner
    frequencies beyond the last ring are left out. A ring with no sample in it is NaN.
    """
    power, freq = _power(image)
    bins = default_bins(*power.shape) if n_bins is None else n_bins
    if bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {bins}")
    width = NYQUIST / bins
    ring = np.floor(freq / width - 0.5).astype(np.int64)  # f in [(i + .5) w, (i + 1.5) w) -> ring i
    inside = (ring >= 0) & (ring < bins)
    total = np.bincount(ring[inside], weights=power[inside], minlength=bins)
    count = np.bincount(ring[inside], minlength=bins)
    mean = np.full(bins, np.nan)
    np.divide(total, count, out=mean, where=count > 0)
    return ring_centres(bins), mean


def mean_radial_power_spectrum(
    images: Iterable[np.ndarray | torch.Tensor], *, n_bins: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Radial spectra averaged over images (NaN rings ignored) -> (centres, mean power, image count)."""
    spectra, freqs = [], None
    for img in images:
        freqs, p = radial_power_spectrum(img, n_bins=n_bins)
        spectra.append(p)
    if not spectra:
        raise ValueError("mean_radial_power_spectrum needs at least one image")
    stacked = np.vstack(spectra)  # [n_images, n_bins]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rings stay NaN, the honest answer
        mean = np.nanmean(stacked, axis=0)
    return freqs, mean, len(spectra)


def high_frequency_ratio(image: np.ndarray | torch.Tensor, *, cutoff: float = 0.25) -> float:
    """Share of non-DC spectral energy at frequencies above ``cutoff`` cycles/pixel (0.25 = half of
    Nyquist). 0 for a flat image; blurring lowers it, sharpening or noise raises it."""
    if not 0.0 < cutoff < NYQUIST * np.sqrt(2.0):
        raise ValueError(f"cutoff must be in (0, 0.707) cycles/pixel, got {cutoff}")
    power, freq = _power(image)
    total = power[freq > 0].sum()
    if total <= 0:
        return 0.0
    return float(power[freq > cutoff].sum() / total)
