"""Differentiable augmentation for discriminators trained on few images (DiffAugment; Zhao, Liu, Lin,
Zhu and Han, NeurIPS 2020).

A discriminator that sees a few hundred style images memorises them; augmenting its inputs helps
only if the generator's images are augmented the same way *and* gradients flow back through the
augmentation to the generator. Every operation here is a differentiable tensor expression on
[B, C, H, W] images in [-1, 1], randomised per sample.

Policies, as in the paper: ``color`` (brightness, saturation, contrast), ``translation`` (shift by up
to 1/8 of the size, zero fill) and ``cutout`` (zero a square of half the size at a random place).
``diff_augment(x, y, ...)`` draws one set of random parameters and applies it to every tensor it is
given, so a real/fake pair can share a transform; the training step augments every discriminator
input, real and fake, before each discriminator call (paper, sec. 3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

POLICIES = ("color", "translation", "cutout")


def parse_policy(text: str) -> tuple[str, ...]:
    """``"color,translation"`` -> ("color", "translation"); "" -> (); unknown names raise ValueError."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
    return names


def _rand(b: int, ref: Tensor) -> Tensor:  # [B, 1, 1, 1] uniform in [0, 1)
    return torch.rand(b, 1, 1, 1, device=ref.device, dtype=ref.dtype)


def _color(xs: Sequence[Tensor]) -> list[Tensor]:
    ref = xs[0]
    b = ref.shape[0]
    brightness = _rand(b, ref) - 0.5  # shift in [-0.5, 0.5)
    saturation = _rand(b, ref) * 2.0  # scale chroma by [0, 2)
    contrast = _rand(b, ref) + 0.5  # scale around the mean by [0.5, 1.5)
    out = []
    for x in xs:
        x = x + brightness
        mean_c = x.mean(dim=1, keepdim=True)
        x = (x - mean_c) * saturation + mean_c
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        out.append((x - mean) * contrast + mean)
    return out


def _translation(xs: Sequence[Tensor], ratio: float = 0.125) -> list[Tensor]:
    ref = xs[0]
    b, _, h, w = ref.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b,)).tolist()  # CPU draws: offsets index Python slices
    tx = torch.randint(-sw, sw + 1, (b,)).tolist()
    out = []
    for x in xs:
        padded = F.pad(x, (sw, sw, sh, sh))  # [B, C, H + 2sh, W + 2sw], zero fill
        # Output pixel (y, x) shows input pixel (y - ty, x - tx).
        out.append(torch.stack([
            padded[i, :, sh - ty[i]: sh - ty[i] + h, sw - tx[i]: sw - tx[i] + w] for i in range(b)
        ]))
    return out


def _cutout(xs: Sequence[Tensor], ratio: float = 0.5) -> list[Tensor]:
    ref = xs[0]
    b, _, h, w = ref.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # Square centres anywhere in the image; the square may hang over the border (then it is smaller).
    y0 = torch.randint(0, h, (b, 1, 1), device=ref.device) - ch // 2
    x0 = torch.randint(0, w, (b, 1, 1), device=ref.device) - cw // 2
    ys = torch.arange(h, device=ref.device).view(1, h, 1)
    xs_ = torch.arange(w, device=ref.device).view(1, 1, w)
    inside = (ys >= y0) & (ys < y0 + ch) & (xs_ >= x0) & (xs_ < x0 + cw)  # [B, H, W]
    mask = (~inside).unsqueeze(1).to(ref.dtype)  # [B, 1, H, W]: 0 inside the square
    return [x * mask for x in xs]


_OPS: dict[str, Callable[[Sequence[Tensor]], list[Tensor]]] = {
    "color": _color,
    "translation": _translation,
    "cutout": _cutout,
}


def diff_augment(*images: Tensor, policy: Sequence[str]) -> Tensor | tuple[Tensor, ...]:
    """Apply ``policy`` (in order) with one random draw shared by all ``images`` ([B, C, H, W] each,
    same B, H, W). Returns one tensor for one input, else a tuple."""
    out = list(images)
    for name in policy:
        out = _OPS[name](out)
    return out[0] if len(out) == 1 else tuple(out)
