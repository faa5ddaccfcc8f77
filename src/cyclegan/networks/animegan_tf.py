"""AnimeGANv2 as the authors' TensorFlow-1 graph computes it (TachibanaYoshino/AnimeGANv2, net/generator.py).

The layer table is ``networks.animegan``'s (the PyTorch port's), so the state dict is the same; two
details of the TF graph differ from the port and change the output by several levels on the
published Hayao / Shinkai / Paprika weights, so this variant reproduces them:

- upsampling is TF-1's ``tf.image.resize_images`` (bilinear, no aligned corners, no half-pixel
  centres; ``networks.tfresize``) instead of the port's bilinear with aligned corners;
- layer norm is ``tf.contrib.layers.layer_norm``, whose variance epsilon is 1e-12 (PyTorch's
  GroupNorm defaults to 1e-5).

``cyclegan import animeganv2-tf`` builds this generator; it trains and exports like ``animeganv2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cyclegan.networks.animegan import AnimeGANv2Generator
from cyclegan.networks.generators import GENERATORS
from cyclegan.networks.tfresize import upsample2x_tf1

if TYPE_CHECKING:
    from cyclegan.config.schema import GeneratorConfig

TF_LAYER_NORM_EPS = 1e-12  # tf.contrib.layers.layer_norm's fixed variance_epsilon


class AnimeGANv2TFGenerator(AnimeGANv2Generator):
    """[B, 3, H, W] RGB in [-1, 1] -> [B, 3, H, W] in [-1, 1], H and W multiples of 4."""

    def __init__(self, *, ngf: int = 64) -> None:
        super().__init__(ngf=ngf)
        for module in self.modules():
            if isinstance(module, nn.GroupNorm):
                module.eps = TF_LAYER_NORM_EPS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.down(self.stem(x)))  # [B, 2ngf, H/4, W/4]
        h = self.up1(upsample2x_tf1(h))  # [B, 2ngf, H/2, W/2]
        return torch.tanh(self.to_rgb(self.up2(upsample2x_tf1(h))))  # [B, 3, H, W]


@GENERATORS.register("animeganv2_tf")
def animeganv2_tf(cfg: GeneratorConfig) -> nn.Module:
    # Fixed layer table like animeganv2 (norm, n_blocks, dropout and upsample do not apply).
    return AnimeGANv2TFGenerator(ngf=cfg.ngf)
