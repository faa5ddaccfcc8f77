"""The White-box Cartoonization generator (Wang and Yu, CVPR 2020; SystemErrorWang/White-box-Cartoonization),
with the guided filter its inference script applies, so a translation matches the publisher's.

``test_code/network.py``'s ``unet_generator`` (channel c = ngf, 32 in the release) in the authors'
variable order, every conv with a bias and "SAME" zero padding, LeakyReLU(0.2) after each but the last:

    c7s1-c, c3s2-c, c3-2c, c3s2-2c, c3-4c, n_blocks x [c3-4c, LReLU, c3-4c, + input] (4 released),
    c3-2c, 2x resize (+ the 2c map of the encoder), c3-2c, c3-c, 2x resize (+ the first c map), c3-c, c7-3

followed, as ``test_code/cartoonize.py`` runs it, by a guided filter (He, Sun and Tang, ECCV 2010;
``guided_filter.py``) of the network's output guided by the input photo, radius 1, eps 5e-3, each
channel on its own. The resizes are TF-1's bilinear (``networks.tfresize``). The output is not
squashed by a tanh: the publisher clips it to [-1, 1] when converting to pixels, as ``to_uint8`` does.

The publisher feeds BGR (OpenCV) images in [-1, 1]; this module takes RGB like every generator of
the toolkit and swaps the channel order on the way in and out. Sides must be multiples of 8 (the
publisher crops to them; two stride-2 stages need 4 and the skips need exact halves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan.networks.generators import GENERATORS
from cyclegan.networks.tfresize import upsample2x_tf1

if TYPE_CHECKING:
    from cyclegan.config.schema import GeneratorConfig

RESIDUAL_BLOCKS = 4  # unet_generator's num_blocks, as cartoonize.py builds it
GUIDED_FILTER_RADIUS = 1  # test_code/cartoonize.py
GUIDED_FILTER_EPS = 5e-3
LEAKY_SLOPE = 0.2  # tf.nn.leaky_relu's default alpha


def _conv(c_in: int, c_out: int, kernel_size: int = 3) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(_lrelu(self.conv1(x)))


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


def _down(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    # TF "SAME" for a 3x3 stride-2 conv on an even side: one zero row/column after, none before.
    return conv(F.pad(x, (0, 1, 0, 1)))


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)^2 window inside the image, per channel: the publisher's zero-padded box
    sum divided by the box sum of ones. [B, C, H, W] -> [B, C, H, W]"""
    k = 2 * radius + 1
    ones = torch.ones_like(x[:1, :1])
    return F.avg_pool2d(x, k, stride=1, padding=radius) / F.avg_pool2d(ones, k, stride=1, padding=radius)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, *, radius: int, eps: float) -> torch.Tensor:
    """Edge-preserving smoothing of ``src`` guided by ``guide``, channel by channel. [B, C, H, W] both."""
    mean_g, mean_s = box_mean(guide, radius), box_mean(src, radius)
    cov = box_mean(guide * src, radius) - mean_g * mean_s
    var = box_mean(guide * guide, radius) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_s - a * mean_g
    return box_mean(a, radius) * guide + box_mean(b, radius)


class WhiteBoxGenerator(nn.Module):
    """See the module docstring. [B, 3, H, W] RGB in [-1, 1] -> [B, 3, H, W] RGB, H and W multiples of 8."""

    def __init__(self, *, ngf: int = 32, n_blocks: int = RESIDUAL_BLOCKS) -> None:
        super().__init__()
        self.size_multiple: int = 8
        c = ngf
        # Attribute order = the publisher's variable order (Conv, Conv_1 .. Conv_4, block_*, Conv_5 ..).
        self.conv0 = _conv(3, c, 7)
        self.conv1 = nn.Conv2d(c, c, 3, stride=2)
        self.conv2 = _conv(c, 2 * c)
        self.conv3 = nn.Conv2d(2 * c, 2 * c, 3, stride=2)
        self.conv4 = _conv(2 * c, 4 * c)
        self.blocks = nn.Sequential(*(_ResBlock(4 * c) for _ in range(n_blocks)))
        self.conv5 = _conv(4 * c, 2 * c)
        self.conv6 = _conv(2 * c, 2 * c)
        self.conv7 = _conv(2 * c, c)
        self.conv8 = _conv(c, c)
        self.conv9 = _conv(c, 3, 7)

    def generate(self, x: torch.Tensor) -> torch.Tensor:
        """The U-Net alone, in the publisher's channel order. [B, 3, H, W] -> [B, 3, H, W]"""
        x0 = _lrelu(self.conv0(x))  # [B, c, H, W]
        x1 = _lrelu(self.conv2(_lrelu(_down(x0, self.conv1))))  # [B, 2c, H/2, W/2]
        x2 = _lrelu(self.conv4(_lrelu(_down(x1, self.conv3))))  # [B, 4c, H/4, W/4]
        x2 = _lrelu(self.conv5(self.blocks(x2)))  # [B, 2c, H/4, W/4]
        x3 = _lrelu(self.conv7(_lrelu(self.conv6(upsample2x_tf1(x2) + x1))))  # [B, c, H/2, W/2]
        x4 = _lrelu(self.conv8(upsample2x_tf1(x3) + x0))  # [B, c, H, W]
        return self.conv9(x4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bgr = x.flip(1)
        out = guided_filter(bgr, self.generate(bgr), radius=GUIDED_FILTER_RADIUS, eps=GUIDED_FILTER_EPS)
        return out.flip(1)


@GENERATORS.register("whitebox")
def whitebox(cfg: GeneratorConfig) -> nn.Module:
    # ngf = the publisher's ``channel`` (32 released); the layer table is fixed like animeganv2's
    # (4 residual blocks, no norm layers, TF-1 resize), so no other generator key applies.
    return WhiteBoxGenerator(ngf=cfg.ngf)
