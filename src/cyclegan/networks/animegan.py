"""The AnimeGANv2 generator (Chen, Liu and Chen, AnimeGAN 2019/2020), in the layout of its PyTorch port.

The TensorFlow original was ported to PyTorch with the released photo -> anime weights
(face_paint_512_v1/v2, paprika, celeba_distill); this is the same layer table, written for this
project, so those weights import unchanged (``cyclegan import animeganv2``) and the architecture can
be trained like any other generator. With ngf = 64 it has 2,143,552 parameters.

    stem     c7s1-ngf/2, d(ngf), c3(ngf)                  conv-GroupNorm-LeakyReLU(0.2) blocks
    down     d(2ngf), c3(2ngf)
    body     c3(2ngf), IR(2ngf -> 4ngf), 3 x IR(4ngf), c3(4ngf -> 2ngf)
    up1      bilinear 2x, c3(2ngf), c3(2ngf)
    up2      bilinear 2x, c3(ngf), c3(ngf), c7(ngf/2)
    to_rgb   1x1 conv to 3 channels, tanh

GroupNorm with one group normalises each sample over all its channels and positions (layer norm,
the TF original's choice). IR is a MobileNetV2 inverted residual block (Sandler et al. 2018):
1x1 expansion to twice the channels, depthwise 3x3, 1x1 projection with GroupNorm and no activation,
plus the input when the channel counts agree. The downsampling convs pad right and bottom only,
like TF's "same" padding of a stride-2 conv. Upsampling is bilinear with aligned corners to the exact
size of the matching encoder map, as the port's ``forward`` does by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan.errors import ConfigError
from cyclegan.networks.generators import GENERATORS
from cyclegan.networks.options import read_options

if TYPE_CHECKING:
    from cyclegan.config.schema import GeneratorConfig


class ConvNormLReLU(nn.Sequential):
    """Reflection pad, conv (no padding of its own), GroupNorm(1 group), LeakyReLU(0.2).

    ``padding`` is one int for all sides or (left, right, top, bottom). [B, in, H, W] -> [B, out, H', W']
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | tuple[int, int, int, int] = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            nn.ReflectionPad2d(padding),
            nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, groups=groups,
                      bias=bias),
            nn.GroupNorm(num_groups=1, num_channels=out_channels),
            nn.LeakyReLU(0.2, inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expansion (x2), depthwise 3x3 (with bias), 1x1 projection + GroupNorm; a skip when in == out."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = 2 * in_channels
        self.residual = in_channels == out_channels
        self.layers = nn.Sequential(
            ConvNormLReLU(in_channels=in_channels, out_channels=hidden, kernel_size=1, padding=0),
            ConvNormLReLU(in_channels=hidden, out_channels=hidden, groups=hidden, bias=True),
            nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False),
            nn.GroupNorm(num_groups=1, num_channels=out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, in, H, W] -> [B, out, H, W]
        y = self.layers(x)
        return x + y if self.residual else y


def _down(in_channels: int, out_channels: int) -> ConvNormLReLU:
    # Stride 2 with one pixel of padding right and bottom: H -> H/2 for even H.
    return ConvNormLReLU(in_channels=in_channels, out_channels=out_channels, stride=2, padding=(0, 1, 0, 1))


class AnimeGANv2Generator(nn.Module):
    """See the module docstring. [B, 3, H, W] in [-1, 1] -> [B, 3, H, W] in [-1, 1], H and W multiples of
    4."""

    def __init__(self, *, ngf: int = 64) -> None:
        super().__init__()
        if ngf % 2:
            raise ValueError(f"AnimeGANv2 needs an even ngf, got {ngf}")
        # Both stride-2 stages halve exactly when H and W are multiples of 4, so each bilinear
        # upsampling is an exact 2x; 4 is also the smallest multiple for which every reflection
        # padding fits (two multiples, 8 px, leave a 2x2 map at the bottleneck).
        self.size_multiple: int = 4
        c1, c2, c3, c4 = ngf // 2, ngf, 2 * ngf, 4 * ngf

        def conv(c_in: int, c_out: int, kernel_size: int = 3) -> ConvNormLReLU:
            return ConvNormLReLU(in_channels=c_in, out_channels=c_out, kernel_size=kernel_size,
                                 padding=kernel_size // 2)

        self.stem = nn.Sequential(conv(3, c1, 7), _down(c1, c2), conv(c2, c2))
        self.down = nn.Sequential(_down(c2, c3), conv(c3, c3))
        self.body = nn.Sequential(
            conv(c3, c3),
            InvertedResidual(in_channels=c3, out_channels=c4),
            *(InvertedResidual(in_channels=c4, out_channels=c4) for _ in range(3)),
            conv(c4, c3),
        )
        self.up1 = nn.Sequential(conv(c3, c3), conv(c3, c3))
        self.up2 = nn.Sequential(conv(c3, c2), conv(c2, c2), conv(c2, c1, 7))
        self.to_rgb = nn.Conv2d(c1, 3, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.stem(x)  # [B, ngf, H/2, W/2]
        h = self.body(self.down(half))  # [B, 2ngf, H/4, W/4]
        h = F.interpolate(h, size=half.shape[-2:], mode="bilinear", align_corners=True)
        h = self.up1(h)  # [B, 2ngf, H/2, W/2]
        h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return torch.tanh(self.to_rgb(self.up2(h)))  # [B, 3, H, W]


@dataclass(frozen=True)
class AnimeGANv2Options:
    """A fixed layer table (no norm, n_blocks, dropout or upsample keys); ngf scales the widths."""

    ngf: int = 64

    def check(self, key: str) -> None:
        if self.ngf % 2:
            raise ConfigError(f"{key}.ngf: animeganv2 starts at ngf/2 channels; needs an even ngf, got "
                              f"{self.ngf}")


@GENERATORS.register("animeganv2", options=AnimeGANv2Options)
def animeganv2(cfg: GeneratorConfig) -> nn.Module:
    return AnimeGANv2Generator(**vars(read_options(AnimeGANv2Options, cfg)))
