"""Cycle-reconstruction scores: how well x -> G(x) -> F(G(x)) returns to x (CycleGAN paper sec. 3.2).

These need no pretrained network, so they are always available, including offline and during
training without Inception weights. All take two uint8 batches ``[N, 3, H, W]`` of the same shape
(real, reconstructed) and return one value per image, float64 ``[N]``, on the inputs' device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cycle_l1", "psnr", "ssim"]


def _pair(real: torch.Tensor, rec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("real", real), ("reconstructed", rec)):
        if t.dtype != torch.uint8:
            raise TypeError(f"{name} images must be uint8, got {t.dtype}")
        if t.dim() != 4 or t.shape[1] != 3:
            raise ValueError(f"{name} images must have shape [N, 3, H, W], got {list(t.shape)}")
    if real.shape != rec.shape:
        raise ValueError(f"shape mismatch: real {list(real.shape)} vs reconstructed {list(rec.shape)}")
    return real.double(), rec.to(real.device).double()


def cycle_l1(real: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
    """Mean absolute error in model units ([-1, 1], i.e. /127.5): the scale of the training cycle loss."""
    x, y = _pair(real, rec)
    return (x - y).abs().mean(dim=(1, 2, 3)) / 127.5


def psnr(real: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for 8-bit images; identical images give +inf."""
    x, y = _pair(real, rec)
    mse = (x - y).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)  # mse == 0 -> inf, as the definition says


def _gaussian_window(size: int, sigma: float, *, device, channels: int) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, size, size).contiguous()  # [C, 1, k, k] depthwise


def ssim(
    real: torch.Tensor,
    rec: torch.Tensor,
    *,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with their constants: 11x11 Gaussian window, sigma 1.5,
    K1 0.01, K2 0.03, L 255. Computed per RGB channel over the valid window positions, then averaged.

    Images smaller than the window use the largest odd window that fits.
    """
    x, y = _pair(real, rec)
    size = min(window, x.shape[2], x.shape[3])
    size -= 1 - size % 2  # keep it odd so the window has a centre
    w = _gaussian_window(size, sigma, device=x.device, channels=3)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=3)  # valid positions only, as in Wang et al.'s reference code

    c1, c2 = (k1 * 255.0) ** 2, (k2 * 255.0) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))

