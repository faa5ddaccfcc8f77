"""Discriminators: the PatchGAN of pix2pix/CycleGAN and its 1x1 "pixel" variant.

Both output a map of real/fake scores rather than one scalar, and expose ``features(x)``: the
activation after every LeakyReLU followed by the output map, for a feature-matching loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cyclegan.networks.blocks import init_weights, norm_layer, uses_bias
from cyclegan.registry import Registry

if TYPE_CHECKING:
    from cyclegan.config import DiscriminatorConfig

DISCRIMINATORS = Registry("discriminator")


class _StagedDiscriminator(nn.Module):
    """A discriminator stored as ``stages``: each but the last ends in a LeakyReLU, the last
    produces the score map. ``forward`` runs them straight through; ``features`` keeps every
    stage's output, so neither computes anything twice."""

    stages: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[activation after each LeakyReLU, ..., score map]; the last element equals forward(x)."""
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class NLayerDiscriminator(_StagedDiscriminator):
    """PatchGAN (pix2pix section 3.2.2; CycleGAN appendix 7.2): C64-C128-C256-C512 for n_layers=3.

    4x4 convs with padding 1: the first has no norm; the next n_layers - 1 are stride 2 with channels
    doubling up to 8ndf; then one stride-1 conv to min(2**n_layers, 8) * ndf and a stride-1 conv to
    one channel. With n_layers=3 every output pixel sees a 70x70 input patch (seed 000 section
    5.3.2), 2,764,737 parameters at ndf=64, and a 256x256 image gives a 30x30 map.
    """

    def __init__(
        self, *, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance"
    ) -> None:
        super().__init__()
        bias = uses_bias(norm)
        # No norm on the first layer: it would normalise away the raw image statistics the
        # discriminator should judge (DCGAN, Radford et al. 2016).
        stages: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
            )
        ]
        channels = ndf
        for n in range(1, n_layers + 1):
            # n < n_layers: stride 2 halves H and W; the final one is stride 1 and only widens the
            # receptive field. Width doubles and caps at 8ndf.
            out_channels = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            stages.append(
                nn.Sequential(
                    nn.Conv2d(channels, out_channels, kernel_size=4, stride=stride, padding=1, bias=bias),
                    norm_layer(norm, out_channels),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
            channels = out_channels
        # One score per patch; no norm or activation, the GAN loss decides how to read it.
        stages.append(nn.Conv2d(channels, 1, kernel_size=4, stride=1, padding=1))
        # [B, 3, H, W] -> [B, 1, H/2**n_layers - 2, W/2**n_layers - 2] (each k4 s1 p1 conv removes 1)
        self.stages = nn.Sequential(*stages)


class PixelDiscriminator(_StagedDiscriminator):
    """1x1 PatchGAN ("PixelGAN", pix2pix section 4.4): judges each pixel's colour alone, so it
    pushes colour statistics but has no say on spatial structure."""

    def __init__(self, *, in_channels: int = 3, ndf: int = 64, norm: str = "instance") -> None:
        super().__init__()
        self.stages = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, ndf, kernel_size=1), nn.LeakyReLU(0.2, inplace=True)),
            nn.Sequential(
                nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=uses_bias(norm)),
                norm_layer(norm, ndf * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ),
            nn.Conv2d(ndf * 2, 1, kernel_size=1),
        )
        # [B, 3, H, W] -> [B, 1, H, W]


# ----------------------------------------------------------------------------------------------
# Registry: name -> (DiscriminatorConfig -> nn.Module)


@DISCRIMINATORS.register("patch")
def patch_discriminator(cfg: DiscriminatorConfig) -> nn.Module:
    return NLayerDiscriminator(ndf=cfg.ndf, n_layers=cfg.n_layers, norm=cfg.norm)


@DISCRIMINATORS.register("pixel")
def pixel_discriminator(cfg: DiscriminatorConfig) -> nn.Module:
    return PixelDiscriminator(ndf=cfg.ndf, norm=cfg.norm)


def build_discriminator(
    cfg: DiscriminatorConfig, *, init: str = "normal", init_gain: float = 0.02
) -> nn.Module:
    """Build the discriminator named by ``cfg.name`` and initialise its weights."""
    net = DISCRIMINATORS.get_or_raise(cfg.name)(cfg)
    return init_weights(net, init, init_gain)
