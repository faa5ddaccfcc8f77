"""Running a generator on uint8 images for measurement: whole images, padded to the size it needs.

Deliberately minimal (no tiling, no alpha, no colour management): metrics and analyses want the
plain network output at the input's own resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from cyclegan.image import pad_to_multiple, to_model_range, to_uint8

__all__ = ["translate_uint8"]


@torch.no_grad()
def translate_uint8(
    generator: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 8,
) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> uint8 [N, 3, H, W] on the CPU, through ``generator`` in eval mode.

    H and W are reflection-padded (``image.pad_to_multiple``) to ``generator.size_multiple`` and
    the output is cropped back. The
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
            h, w = chunk.shape[-2:]
            # The same padding as translate (one implementation; at least two strides, since a
            # 1-pixel bottleneck breaks instance norm).
            x, (top, left) = pad_to_multiple(to_model_range(chunk.to(device)), multiple, minimum=2 * multiple)
            outs.append(to_uint8(generator(x)[..., top:top + h, left:left + w].float()).cpu())
        return torch.cat(outs) if outs else images.new_empty(images.shape)
    finally:
        generator.train(was_training)
