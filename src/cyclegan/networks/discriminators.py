"""Discriminators: the PatchGAN of pix2pix/CycleGAN and its 1x1 "pixel" variant, a spectral-normalised
(Miyato et al., ICLR 2018) dual-head discriminator (PatchGAN + global head) and a plain CNN with one logit.

The PatchGAN and pixel variants output a map of real/fake scores rather than one scalar; ``dual``
returns a (patch map, global score) tuple; ``vanilla_cnn`` one logit per image. All expose
``features(x)``: the activation after every LeakyReLU followed by the output map, for a
feature-matching loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from cyclegan.networks.blocks import allocation_guard, init_weights, norm_layer, uses_bias
from cyclegan.networks.options import (
    MAX_DISCRIMINATOR_LAYERS,
    NORMS,
    read_options,
    require_at_least,
    require_at_most,
    require_choice,
)
from cyclegan.registry import Registry

if TYPE_CHECKING:
    from cyclegan.config.schema import DiscriminatorConfig

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
    one channel. With n_layers=3 every output pixel sees a 70x70 input patch (Isola et al., CVPR
    2017, sec. 3.2.2; Zhu et al., ICCV 2017, appendix 7.2), 2,764,737 parameters at ndf=64, and a
    256x256 image gives a 30x30 map.
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


def spectral_norm_convs(net: nn.Module) -> nn.Module:
    """Spectral normalisation on every conv of ``net`` (in place; returns it): the PatchGAN with
    ``model.discriminator.spectral_norm``, as SN-GAN normalises every layer of its discriminator."""
    for conv in [m for m in net.modules() if isinstance(m, nn.Conv2d)]:  # listed first: this adds modules
        _spectral(conv)
    return net


@dataclass(frozen=True)
class PixelOptions:
    """``model.discriminator`` keys of the 1x1 pixel discriminator; spectral_norm: spectral
    normalisation of every conv (Miyato et al., ICLR 2018), bounding how fast D can sharpen."""

    norm: str = "instance"
    spectral_norm: bool = False

    def check(self, key: str) -> None:
        require_choice(f"{key}.norm", self.norm, NORMS)


@dataclass(frozen=True)
class LayeredOptions:
    """``model.discriminator`` keys of the discriminators built from n_layers stride-2 stages."""

    norm: str = "instance"
    # patch: 3 = the 70x70 PatchGAN. dual / vanilla_cnn: channel doublings, ndf -> ndf * 2**n_layers
    # (capped at 8ndf) over n_layers + 1 stride-2 convs; 3 = 64 -> 512, a 16x16 map at 256px.
    n_layers: int = 3

    def check(self, key: str) -> None:
        require_choice(f"{key}.norm", self.norm, NORMS)
        require_at_least(f"{key}.n_layers", self.n_layers, 1)
        require_at_most(f"{key}.n_layers", self.n_layers, MAX_DISCRIMINATOR_LAYERS)


@dataclass(frozen=True)
class PatchOptions(LayeredOptions):
    spectral_norm: bool = False  # as PixelOptions


@DISCRIMINATORS.register("patch", options=PatchOptions)
def patch_discriminator(cfg: DiscriminatorConfig) -> nn.Module:
    opts = read_options(PatchOptions, cfg)
    net = NLayerDiscriminator(ndf=cfg.ndf, n_layers=opts.n_layers, norm=opts.norm)
    return spectral_norm_convs(net) if opts.spectral_norm else net


@DISCRIMINATORS.register("pixel", options=PixelOptions)
def pixel_discriminator(cfg: DiscriminatorConfig) -> nn.Module:
    opts = read_options(PixelOptions, cfg)
    net = PixelDiscriminator(ndf=cfg.ndf, norm=opts.norm)
    return spectral_norm_convs(net) if opts.spectral_norm else net


# ----------------------------------------------------------------------------------------------
# The dual-head discriminator and the plain CNN


def _spectral(layer: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al., ICLR 2018): the weight is divided by its largest
    singular value, estimated by one power iteration per training forward, so each layer is
    1-Lipschitz and D cannot sharpen its decision faster than the generator can follow."""
    return nn.utils.parametrizations.spectral_norm(layer)


class DualHeadDiscriminator(nn.Module):
    """A shared trunk of stride-2 convs, each spectral-normalised (Miyato et al., ICLR 2018) and followed by
    instance norm and LeakyReLU(0.2), with channels doubling ``n_layers`` times from ndf (64 -> 512 for
    n_layers=3, capped at 8ndf), then two heads on the trunk's output:

    - patch head, a spectral-normalised 3x3 conv to one channel: a score per local patch (PatchGAN);
    - global head, average pooling and a spectral-normalised fully connected layer: one score per image.

    Trunk: n_layers + 1 convs of 4x4, stride 2, padding 1 (4x4 s2 p1 halves sizes exactly, as in the
    PatchGAN). At 256x256 and n_layers=3 the trunk ends at [B, 512, 16, 16]; the animal2sprite preset
    drops the last downsampling for 96x96 sprites (n_layers=2): [B, 256, 12, 12]. Every conv output is
    normalised, the first included. Spectral norm covers the fully connected layer too, as in SN-GAN.

    ``forward`` returns the tuple (patch [B, 1, h, w], global [B, 1]); losses that know about two heads
    (``relativistic``) weigh them separately, the others average over heads.
    """

    def __init__(
        self, *, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance"
    ) -> None:
        super().__init__()
        bias = uses_bias(norm)
        stages: list[nn.Module] = []
        channels = in_channels
        for i in range(n_layers + 1):
            out_channels = ndf * min(2**i, 8)
            stages.append(
                nn.Sequential(
                    _spectral(
                        nn.Conv2d(channels, out_channels, kernel_size=4, stride=2, padding=1, bias=bias)
                    ),
                    norm_layer(norm, out_channels),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
            channels = out_channels
        # [B, 3, H, W] -> [B, ndf * min(2**n_layers, 8), H / 2**(n_layers+1), W / 2**(n_layers+1)]
        self.trunk = nn.Sequential(*stages)
        # -> [B, 1, h, w]
        self.patch_head = _spectral(nn.Conv2d(channels, 1, kernel_size=3, padding=1))
        # -> [B, 1]
        self.global_head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), _spectral(nn.Linear(channels, 1))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.patch_head(h), self.global_head(h)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[activation after each trunk stage, ..., patch score map]: the last element is forward's
        patch head, as for the single-head discriminators."""
        out = []
        for stage in self.trunk:
            x = stage(x)
            out.append(x)
        out.append(self.patch_head(x))
        return out


class VanillaCNNDiscriminator(_StagedDiscriminator):
    """A "vanilla" CNN discriminator: 3x3 convs in a row ending in a fully connected layer
    that compresses 512 channels to one real/fake logit per image.

    Stride-2 3x3 convs (padding 1) whose channels double from ndf to ndf * 2**n_layers (64 -> 512 for
    n_layers=3, capped at 8ndf),
    norm and LeakyReLU(0.2) after each but the first conv (no norm on the image, as in the PatchGAN),
    then global average pooling so the fully connected layer sees exactly those 512 channels whatever
    the image size. [B, 3, H, W] -> [B, 1].
    """

    def __init__(
        self, *, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance"
    ) -> None:
        super().__init__()
        bias = uses_bias(norm)
        stages: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, ndf, kernel_size=3, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
            )
        ]
        channels = ndf
        for i in range(1, n_layers + 1):
            out_channels = ndf * min(2**i, 8)
            stages.append(
                nn.Sequential(
                    nn.Conv2d(channels, out_channels, kernel_size=3, stride=2, padding=1, bias=bias),
                    norm_layer(norm, out_channels),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
            channels = out_channels
        # [B, C, h, w] -> [B, C] -> [B, 1]
        stages.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels, 1)))
        self.stages = nn.Sequential(*stages)


@DISCRIMINATORS.register("dual", options=LayeredOptions)  # always spectral-normalised
def dual_discriminator(cfg: DiscriminatorConfig) -> nn.Module:
    return DualHeadDiscriminator(ndf=cfg.ndf, **vars(read_options(LayeredOptions, cfg)))


@DISCRIMINATORS.register("vanilla_cnn", options=LayeredOptions)
def vanilla_cnn_discriminator(cfg: DiscriminatorConfig) -> nn.Module:
    return VanillaCNNDiscriminator(ndf=cfg.ndf, **vars(read_options(LayeredOptions, cfg)))


def build_discriminator(
    cfg: DiscriminatorConfig, *, init: str = "normal", init_gain: float = 0.02
) -> nn.Module:
    """Build the discriminator named by ``cfg.name`` and initialise its weights."""
    factory = DISCRIMINATORS.get_or_raise(cfg.name)
    with allocation_guard("model.discriminator", f"discriminator {cfg.name} with ndf {cfg.ndf}"):
        return init_weights(factory(cfg), init, init_gain)
