"""Running a generator on uint8 images for measurement: whole images, padded to the size it needs.

Deliberately minimal (no tiling, no alpha, no colour management): metrics and analyses want the
plain network output at the input's own resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan.image import to_model_range, to_uint8

__all__ = ["translate_uint8"]


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if not (pad_h or pad_w):
        return x, h, w
    # Reflection continues the image content without a hard edge, so the border the network sees is
    # plausible; it needs the pad to be smaller than the side, otherwise fall back to replicating.
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), h, w


@torch.no_grad()
def translate_uint8(
    generator: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 8,
) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> uint8 [N, 3, H, W] on the CPU, through ``generator`` in eval mode.

    H and W are reflection-padded to ``generator.size_multiple`` and the output is cropped back. The
    generator's train/eval mode is restored afterwards, so this is safe to call mid-training. Inputs
    go to the device of the generator's parameters.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 [N, 3, H, W], got {images.dtype} {list(images.shape)}")
    multiple = int(getattr(generator, "size_multiple", 1))
    param = next(generator.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = generator.training
    generator.eval()
    try:
        outs = []
        for chunk in images.split(batch_size):
            x, h, w = _pad_to_multiple(to_model_range(chunk.to(device)), multiple)
            outs.append(to_uint8(generator(x)[..., :h, :w].float()).cpu())
        return torch.cat(outs) if outs else images.new_empty(images.shape)
    finally:
        generator.train(was_training)
