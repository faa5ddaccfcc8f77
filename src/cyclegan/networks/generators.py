"""Generators: the ResNet encoder-transformer-decoder of the CycleGAN paper and the pix2pix U-Net.

The ResNet generator optionally resamples with anti-aliasing, as the default generator of the CUT
authors' code does (Park et al. 2020; blur pooling after Zhang, "Making convolutional networks
shift-invariant again", ICML 2019): a fixed binomial blur before each 2x subsampling and after each
2x zero-insertion upsampling, so that a shifted input gives a shifted output instead of aliasing.

Every generator maps [B, 3, H, W] in [-1, 1] to [B, 3, H, W] in [-1, 1] (Tanh output) and exposes
``size_multiple``, the number H and W must be divisible by; ``translate`` reflection-pads to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from cyclegan.errors import ConfigError
from cyclegan.networks.blocks import (
    ResnetBlock,
    UpsampleBlock,
    allocation_guard,
    dropout_layer,
    init_weights,
    norm_layer,
    upconv,
    uses_bias,
)
from cyclegan.networks.options import (
    ConvOptions,
    ResidualOptions,
    read_options,
    require_at_least,
    require_at_most,
    require_choice,
)
from cyclegan.registry import Registry

if TYPE_CHECKING:
    from cyclegan.config.schema import GeneratorConfig

GENERATORS = Registry("generator")
ANTIALIAS_MODES = ("none", "down", "up", "both")


@dataclass(frozen=True)
class ResnetOptions(ResidualOptions):
    """``model.generator`` keys of the ResNet generator. Anti-aliased resampling as in the CUT
    authors' default generator (none | down | up | both; CUT: both) with binomial blurs of the given
    sizes (CUT: 3 down, 4 up)."""

    antialias: str = "none"
    antialias_filter: int = 3
    antialias_up_filter: int = 4

    def check(self, key: str) -> None:
        super().check(key)
        require_choice(f"{key}.antialias", self.antialias, ANTIALIAS_MODES)
        for name in ("antialias_filter", "antialias_up_filter"):
            require_at_least(f"{key}.{name}", getattr(self, name), 1)
            require_at_most(f"{key}.{name}", getattr(self, name), 7)
        if self.antialias in ("up", "both") and self.upsample != "transpose":
            raise ConfigError(f"{key}.antialias {self.antialias}: the blurred upsampling replaces "
                              f"{key}.upsample; leave it transpose, not {self.upsample!r}")
        # A filter size without the blur it sizes would be accepted and ignored.
        if self.antialias not in ("down", "both") and self.antialias_filter != 3:
            raise ConfigError(f"{key}.antialias_filter: sizes the downsampling blur; needs {key}.antialias "
                              f"down or both, not {self.antialias}")
        if self.antialias not in ("up", "both") and self.antialias_up_filter != 4:
            raise ConfigError(f"{key}.antialias_up_filter: sizes the upsampling blur; needs {key}.antialias "
                              f"up or both, not {self.antialias}")


def binomial_filter(size: int) -> torch.Tensor:
    """The normalised 2-D binomial blur of side ``size``: outer product of row ``size - 1`` of
    Pascal's triangle with itself, divided by its sum ([1, 2, 1] x [1, 2, 1] / 16 for size 3).
    Every entry is a dyadic fraction, so it is exact in float32. [size, size]"""
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    grid = torch.outer(row, row)
    return (grid / grid.sum()).float()


class BlurDownsample(nn.Module):
    """Reflection pad, depthwise binomial blur, keep every second pixel: [B, C, H, W] -> [B, C, H/2, W/2].

    The filter is a non-persistent buffer: it is a constant of the config (``antialias_filter``), so
    checkpoints hold no copy of it and old checkpoints load unchanged.
    """

    def __init__(self, *, channels: int, size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        # An even filter has no centre; its extra tap goes to the right/bottom.
        self.pad = nn.ReflectionPad2d(((size - 1) // 2, size // 2, (size - 1) // 2, size // 2))
        self.register_buffer("filt", binomial_filter(size).expand(channels, 1, size, size).clone(),
                             persistent=False)  # [C, 1, size, size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.pad(x), self.filt, stride=2, groups=self.channels)


class BlurUpsample(nn.Module):
    """2x upsampling by a strided depthwise transposed binomial blur: [B, C, H, W] -> [B, C, 2H, 2W].

    Zero insertion followed by the blur; the filter is scaled by 4 because only one in four output
    positions receives an input sample, which keeps a constant image constant. Edges are replicated
    by one pixel first and the surplus border is cropped, so the output is aligned with the input.
    """

    def __init__(self, *, channels: int, size: int = 4) -> None:
        super().__init__()
        self.channels = channels
        self.padding = 1 + (size - 1) // 2
        self.trim = size % 2 == 0  # an even filter leaves one more row and column
        self.pad = nn.ReplicationPad2d(1)
        self.register_buffer("filt", (binomial_filter(size) * 4).expand(channels, 1, size, size).clone(),
                             persistent=False)  # [C, 1, size, size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv_transpose2d(self.pad(x), self.filt, stride=2, padding=self.padding, groups=self.channels)
        y = y[:, :, 1:, 1:]  # [B, C, 2H + trim, 2W + trim]
        if self.trim:
            y = y[:, :, :-1, :-1]
        return y


class AntialiasUpsampleBlock(nn.Sequential):
    """Decoder stage with anti-aliased upsampling: (blur upsampling, zero-padded conv3x3), norm, ReLU.
    The same indices as ``UpsampleBlock`` (upsampling layer, norm, ReLU). [B, in, H, W] -> [B, out, 2H, 2W]"""

    def __init__(self, *, in_channels: int, out_channels: int, norm: str, filter_size: int) -> None:
        super().__init__(
            nn.Sequential(
                BlurUpsample(channels=in_channels, size=filter_size),
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=uses_bias(norm)),
            ),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d(2ngf), d(4ngf), n_blocks x R(4ngf), u(2ngf), u(ngf), c7s1-3 + Tanh.

    The architecture of the CycleGAN paper (appendix 7.2, after Johnson et al. 2016) and exactly the
    ``ResnetGenerator`` of its code (junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py); the
    paper uses 9 blocks at 256x256 and 6 at 128x128.
    With ngf=64, 9 blocks and instance norm it has 11,378,179 parameters.

    ``antialias`` (none | down | up | both; CUT's default generator is both) replaces each stride-2
    conv by a stride-1 conv, norm, ReLU and ``BlurDownsample`` (down), and each transposed conv by
    ``BlurUpsample`` + conv3x3 (up); the parameter count is unchanged.
    """

    n_downsampling = 2

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        dropout: float = 0.0,
        upsample: str = "transpose",
        antialias: str = "none",
        antialias_filter: int = 3,
        antialias_up_filter: int = 4,
    ) -> None:
        super().__init__()
        if antialias not in ANTIALIAS_MODES:
            raise ConfigError(f"unknown antialias {antialias!r}; choose from {', '.join(ANTIALIAS_MODES)}")
        blur_down, blur_up = antialias in ("down", "both"), antialias in ("up", "both")
        # Two stride-2 convs down, two 2x upsamplings back up.
        self.size_multiple: int = 2**self.n_downsampling
        self.checkpoint_blocks: bool = False  # see _checkpointed_blocks
        bias = uses_bias(norm)

        # Reflection padding rather than zero padding at the 7x7 convs avoids dark borders
        # (Zhu et al., ICCV 2017, appendix 7.2).
        encoder: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, kernel_size=7, bias=bias),
            norm_layer(norm, ngf),
            nn.ReLU(inplace=True),
        ]
        # Encoder indices of the downsampling convs, whose outputs PatchNCE taps (nce_features).
        self.nce_taps: tuple[int, ...] = ()
        for i in range(self.n_downsampling):
            c_in, c_out = ngf * 2**i, ngf * 2 ** (i + 1)
            self.nce_taps += (len(encoder),)
            encoder += [
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=1 if blur_down else 2, padding=1, bias=bias),
                norm_layer(norm, c_out),
                nn.ReLU(inplace=True),
            ]
            if blur_down:
                encoder.append(BlurDownsample(channels=c_out, size=antialias_filter))
        # [B, 3, H, W] -> [B, 4ngf, H/4, W/4]
        self.encoder = nn.Sequential(*encoder)

        width = ngf * 2**self.n_downsampling
        # [B, 4ngf, H/4, W/4] -> same; the residual blocks change style, not resolution.
        self.transformer = nn.Sequential(
            *(ResnetBlock(channels=width, norm=norm, dropout=dropout) for _ in range(n_blocks))
        )

        decoder: list[nn.Module] = []
        for i in range(self.n_downsampling, 0, -1):
            c_in, c_out = ngf * 2**i, ngf * 2 ** (i - 1)
            decoder.append(
                AntialiasUpsampleBlock(in_channels=c_in, out_channels=c_out, norm=norm,
                                       filter_size=antialias_up_filter)
                if blur_up else UpsampleBlock(in_channels=c_in, out_channels=c_out, norm=norm, mode=upsample)
            )
        decoder += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, out_channels, kernel_size=7),  # no norm follows, so always a bias
            nn.Tanh(),  # images live in [-1, 1]
        ]
        # [B, 4ngf, H/4, W/4] -> [B, 3, H, W]
        self.decoder = nn.Sequential(*decoder)

    def nce_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder activations for PatchNCE (CUT, Park et al. 2020, appendix: "RGB pixels, the first
        and second downsampling convolution, and the first and the fifth residual block"; with fewer
        than five blocks, the last one). Channels: 3, 2ngf, 4ngf, 4ngf, 4ngf."""
        feats = [x]  # [B, 3, H, W]
        h = x
        for i, layer in enumerate(self.encoder):
            h = layer(h)
            if i in self.nce_taps:
                # [B, 2ngf, H/2, W/2], then [B, 4ngf, H/4, W/4]; with anti-aliased downsampling the
                # conv comes before the blur pooling, so H and 2ngf, then H/2 and 4ngf (as in CUT).
                feats.append(h)
        last = min(4, len(self.transformer) - 1)
        for i, block in enumerate(self.transformer[: last + 1]):
            h = block(h)
            if i == 0:
                feats.append(h)
            if i == last:
                feats.append(h)  # with one block, the same activation twice keeps five layers
        return feats

    @torch.jit.unused
    def _checkpointed_blocks(self, h):  # unannotated: TorchScript cannot resolve string annotations
        # Gradient checkpointing of the residual blocks (train.grad_checkpointing): activations are
        # recomputed in the backward pass instead of stored, trading ~30% more compute for the
        # memory that lets 512-1024px crops train on a 24 GB card.
        for block in self.transformer:
            h = torch.utils.checkpoint.checkpoint(block, h, use_reentrant=False)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, 3, H, W] -> [B, 3, H, W], H and W divisible by 4
        h = self.encoder(x)
        if self.checkpoint_blocks and self.training and torch.is_grad_enabled():
            h = self._checkpointed_blocks(h)
        else:
            h = self.transformer(h)
        return self.decoder(h)


class UnetSkipBlock(nn.Module):
    """One level of the U-Net: down, the inner levels, up, then concatenate with the input.

    Down is LeakyReLU(0.2) + 4x4 stride-2 conv + norm; up is ReLU + 2x upsampling conv + norm, as in
    pix2pix (Isola et al. 2017, appendix 6.1.1). The outermost level has no activation or norm
    before its conv (it sees the image) and ends in Tanh instead of a norm; the innermost has no
    norm on its down side, because its output is 1x1 where normalisation is degenerate.
    """

    def __init__(
        self,
        *,
        outer_channels: int,
        inner_channels: int,
        in_channels: int | None = None,
        submodule: UnetSkipBlock | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "instance",
        dropout: float = 0.0,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        self.outermost = outermost
        in_channels = outer_channels if in_channels is None else in_channels
        bias = uses_bias(norm)
        # The LeakyReLU is not in place: the block's input is also the skip connection. Because
        # the next up path starts with ReLU, and ReLU(LeakyReLU(x)) = ReLU(x), skipping x or its
        # activation gives the same network.
        down_conv = nn.Conv2d(in_channels, inner_channels, kernel_size=4, stride=2, padding=1, bias=bias)
        # Every level but the innermost receives [own up output, skip] from the level below.
        up_in = inner_channels if innermost else inner_channels * 2

        if outermost:
            down: list[nn.Module] = [down_conv]
            up: list[nn.Module] = [
                nn.ReLU(inplace=True),
                upconv(up_in, outer_channels, mode=upsample, bias=True, kernel_size=4),
                nn.Tanh(),
            ]
        elif innermost:
            down = [nn.LeakyReLU(0.2), down_conv]
            up = [
                nn.ReLU(inplace=True),
                upconv(up_in, outer_channels, mode=upsample, bias=bias, kernel_size=4),
                norm_layer(norm, outer_channels),
            ]
        else:
            down = [nn.LeakyReLU(0.2), down_conv, norm_layer(norm, inner_channels)]
            up = [
                nn.ReLU(inplace=True),
                upconv(up_in, outer_channels, mode=upsample, bias=bias, kernel_size=4),
                norm_layer(norm, outer_channels),
                dropout_layer(dropout),
            ]
        self.down = nn.Sequential(*down)
        self.submodule = submodule if submodule is not None else nn.Identity()
        self.up = nn.Sequential(*up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # outermost: [B, in, H, W] -> [B, outer, H, W]; otherwise -> [B, 2 * outer, H, W] (skip concat)
        y = self.up(self.submodule(self.down(x)))
        if self.outermost:
            return y
        return torch.cat([x, y], dim=1)


class UnetGenerator(nn.Module):
    """U-Net generator with ``num_downs`` stride-2 levels (pix2pix / CycleGAN paper code).

    Encoder channels ngf, 2ngf, 4ngf, then 8ngf for every remaining level; the bottleneck is 1x1
    when H = W = 2**num_downs. Dropout, if configured, sits in the 8ngf decoder levels except the
    innermost, as in pix2pix (appendix 6.1.1), where it is the generator's only noise source.
    """

    def __init__(
        self,
        *,
        num_downs: int,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        norm: str = "instance",
        dropout: float = 0.0,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"a U-Net needs at least 5 downsamplings, got {num_downs}")
        self.size_multiple: int = 2**num_downs
        common = {"norm": norm, "upsample": upsample}

        # Built from the bottleneck outwards, since each level wraps the one inside it.
        block = UnetSkipBlock(outer_channels=ngf * 8, inner_channels=ngf * 8, innermost=True, **common)
        for _ in range(num_downs - 5):
            block = UnetSkipBlock(
                outer_channels=ngf * 8, inner_channels=ngf * 8, submodule=block, dropout=dropout, **common
            )
        for mult in (4, 2, 1):
            block = UnetSkipBlock(
                outer_channels=ngf * mult, inner_channels=ngf * mult * 2, submodule=block, **common
            )
        self.model = UnetSkipBlock(
            outer_channels=out_channels,
            inner_channels=ngf,
            in_channels=in_channels,
            submodule=block,
            outermost=True,
            **common,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, 3, H, W] -> [B, 3, H, W], H and W divisible by 2**num_downs
        return self.model(x)


# ----------------------------------------------------------------------------------------------
# Registry: name -> (GeneratorConfig -> nn.Module)


@GENERATORS.register("resnet", options=ResnetOptions)
def resnet_generator(cfg: GeneratorConfig) -> nn.Module:
    return ResnetGenerator(ngf=cfg.ngf, **vars(read_options(ResnetOptions, cfg)))


@GENERATORS.register("unet_128", options=ConvOptions)
def unet_128(cfg: GeneratorConfig) -> nn.Module:
    # 7 levels: 128 -> 1 at the bottleneck.
    return UnetGenerator(num_downs=7, ngf=cfg.ngf, **vars(read_options(ConvOptions, cfg)))


@GENERATORS.register("unet_256", options=ConvOptions)
def unet_256(cfg: GeneratorConfig) -> nn.Module:
    # 8 levels: 256 -> 1 at the bottleneck.
    return UnetGenerator(num_downs=8, ngf=cfg.ngf, **vars(read_options(ConvOptions, cfg)))


def build_generator(cfg: GeneratorConfig, *, init: str = "normal", init_gain: float = 0.02) -> nn.Module:
    """Build the generator named by ``cfg.name`` and initialise its weights."""
    factory = GENERATORS.get_or_raise(cfg.name)
    with allocation_guard("model.generator", f"generator {cfg.name} with ngf {cfg.ngf}"):
        return init_weights(factory(cfg), init, init_gain)
