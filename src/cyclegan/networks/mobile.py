"""Small student generators for distillation, and the intermediate features a distillation matches.

``MobileResnetGenerator`` (registered ``mobile_resnet``) is the paper's ResNet generator with every
residual block made depthwise-separable, the MobileResnetGenerator of GAN Compression (Li et al.,
CVPR 2020, sec. 3.2 "Efficient generator design space"): each 3x3 conv of a block becomes a depthwise
3x3 conv, a norm and a pointwise 1x1 conv (MobileNet, Howard et al. 2017). A block of C channels then
costs 2 x (9C + C^2) multiply-adds per pixel instead of 2 x 9C^2, about 8x fewer at C = 128; with a
smaller ``ngf`` the encoder and decoder shrink quadratically too. The encoder, decoder, parameter
names outside the blocks, ``size_multiple`` and gradient checkpointing are ResnetGenerator's.

``distill_features(net, x)`` runs a generator once and returns its output together with four feature
maps at 1/4 resolution (the bottleneck of every supported generator), the layers a distillation
matches through learned 1x1 projections:

    ResNet / mobile ResNet   encoder output, then after 1/3, 2/3 and all of the residual blocks
                             (GAN Compression's mapping layers model.9/12/15/18 for 9 blocks)
    AnimeGANv2               the downsampled map, after the first and third inverted residual
                             blocks, and the body's output

Each tap reproduces its generator's ``forward`` exactly (tests compare the two), so matching features
costs no second pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from cyclegan.errors import ConfigError
from cyclegan.networks.animegan import AnimeGANv2Generator
from cyclegan.networks.blocks import dropout_layer, norm_layer, uses_bias
from cyclegan.networks.generators import GENERATORS, ResnetGenerator
from cyclegan.networks.options import ResidualOptions, read_options

if TYPE_CHECKING:
    from cyclegan.config.schema import GeneratorConfig

# Feature maps every tap returns: the projections and the loss pair the i-th of student and teacher.
N_FEATURES = 4


class SeparableConv(nn.Sequential):
    """Depthwise k x k conv, norm, pointwise 1x1 conv: [B, C_in, H, W] -> [B, C_out, H', W'] (no padding
    of its own; the block pads by reflection first, as the paper's ResNet block does)."""

    def __init__(self, *, in_channels: int, out_channels: int, norm: str, kernel_size: int = 3) -> None:
        bias = uses_bias(norm)
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size=kernel_size, groups=in_channels, bias=bias),
            norm_layer(norm, in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=bias),
        )


class MobileResnetBlock(nn.Module):
    """x + (pad, separable conv3x3, norm, ReLU, [dropout], pad, separable conv3x3, norm): the ResNet
    block's layout with depthwise-separable convs. [B, C, H, W] -> same."""

    def __init__(self, *, channels: int, norm: str = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            SeparableConv(in_channels=channels, out_channels=channels, norm=norm),
            norm_layer(norm, channels),
            nn.ReLU(inplace=True),
            dropout_layer(dropout),
            nn.ReflectionPad2d(1),
            SeparableConv(in_channels=channels, out_channels=channels, norm=norm),
            norm_layer(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class MobileResnetGenerator(ResnetGenerator):
    """ResnetGenerator with depthwise-separable residual blocks (see the module docstring).

    c7s1-ngf, d(2ngf), d(4ngf), n_blocks x MR(4ngf), u(2ngf), u(ngf), c7s1-3 + Tanh.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 32,
        n_blocks: int = 9,
        norm: str = "instance",
        dropout: float = 0.0,
        upsample: str = "transpose",
    ) -> None:
        super().__init__(in_channels=in_channels, out_channels=out_channels, ngf=ngf, n_blocks=0, norm=norm,
                         dropout=dropout, upsample=upsample)
        width = ngf * 2**self.n_downsampling
        # [B, 4ngf, H/4, W/4] -> same
        self.transformer = nn.Sequential(
            *(MobileResnetBlock(channels=width, norm=norm, dropout=dropout) for _ in range(n_blocks))
        )
        _use_group_norm_kernel(self)


def _use_group_norm_kernel(net: nn.Module) -> None:
    """Replace every InstanceNorm2d without affine parameters or running statistics by GroupNorm with
    one group per channel: the same function (per-sample, per-channel mean and biased variance, eps
    1e-5) and the same (empty) state dict, but PyTorch's CPU group-norm kernel is several times faster
    than instance norm's, which runs through batch norm on a reshaped tensor. Measured on the 2-core dev
    VM, one thread, 256x256: 0.23 -> 0.14 s for the ngf-24 student; its 41 norms cost as much as its
    convolutions before."""
    for name, child in net.named_children():
        if isinstance(child, nn.InstanceNorm2d) and not child.affine and not child.track_running_stats:
            setattr(net, name,
                    nn.GroupNorm(child.num_features, child.num_features, eps=child.eps, affine=False))
        else:
            _use_group_norm_kernel(child)


@GENERATORS.register("mobile_resnet", options=ResidualOptions)
def mobile_resnet(cfg: GeneratorConfig) -> nn.Module:
    return MobileResnetGenerator(ngf=cfg.ngf, **vars(read_options(ResidualOptions, cfg)))


# ----------------------------------------------------------------------------------------------
# Features for distillation


def _resnet_stages(n_blocks: int) -> tuple[int, ...]:
    # Blocks run before each tap: 0 (the encoder output), then a third, two thirds and all of them.
    return (0, n_blocks // 3, 2 * n_blocks // 3, n_blocks)


def _resnet_features(net: ResnetGenerator, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    h = net.encoder(x)  # [B, 4ngf, H/4, W/4]
    stages = _resnet_stages(len(net.transformer))
    feats = [h] * stages.count(0)
    # train.grad_checkpointing: recompute the blocks in backward, as ResnetGenerator.forward does
    recompute = net.checkpoint_blocks and net.training and torch.is_grad_enabled()
    for i, block in enumerate(net.transformer, start=1):
        h = torch.utils.checkpoint.checkpoint(block, h, use_reentrant=False) if recompute else block(h)
        feats += [h] * stages.count(i)
    return net.decoder(h), feats


def _animegan_features(net: AnimeGANv2Generator, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    # AnimeGANv2Generator.forward, with the taps.
    half = net.stem(x)  # [B, ngf, H/2, W/2]
    h = net.down(half)  # [B, 2ngf, H/4, W/4]
    feats = [h]
    for i, layer in enumerate(net.body):
        h = layer(h)
        if i in (1, 3, len(net.body) - 1):  # after IR(2ngf -> 4ngf), after the third IR, the body's output
            feats.append(h)
    h = F.interpolate(h, size=half.shape[-2:], mode="bilinear", align_corners=True)
    h = net.up1(h)
    h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=True)
    return torch.tanh(net.to_rgb(net.up2(h))), feats


# Exact classes only: a subclass (the attention generator) runs a different forward.
_TAPS: dict[type, Callable[[nn.Module, Tensor], tuple[Tensor, list[Tensor]]]] = {
    ResnetGenerator: _resnet_features,
    MobileResnetGenerator: _resnet_features,
    AnimeGANv2Generator: _animegan_features,
}


def has_distill_features(net: nn.Module) -> bool:
    return type(net) in _TAPS


def distill_features(net: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """One forward pass of ``net`` -> (its output [B, 3, H, W], N_FEATURES maps [B, C_i, H/4, W/4]).

    The output equals ``net(x)``. Generators without taps (U-Net, attention, TorchScript) raise a
    ConfigError: distil them with the feature loss off."""
    tap = _TAPS.get(type(net))
    if tap is None:
        raise ConfigError(f"{type(net).__name__} exposes no distillation features (supported: resnet, "
                          "mobile_resnet, animeganv2); set distill.lambda_feature 0 to match outputs only")
    return tap(net, x)


@torch.no_grad()
def distill_channels(net: nn.Module) -> list[int]:
    """Channels of each of ``distill_features``' maps, from one pass over a small probe image."""
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    side = 4 * int(getattr(net, "size_multiple", 4))  # large enough for every reflection pad of a generator
    was_training = net.training
    net.eval()
    try:
        _, feats = distill_features(net, torch.zeros(1, 3, side, side, device=device))
    finally:
        net.train(was_training)
    return [int(f.shape[1]) for f in feats]


class FeatureProjections(nn.Module):
    """One learned 1x1 conv per feature map, student channels -> teacher channels (GAN Compression
    eq. 3, the f_t of its distillation loss); trained with the student, discarded after.
    [B, C_s_i, h, w] -> [B, C_t_i, h, w] for each i."""

    def __init__(self, *, student_channels: list[int], teacher_channels: list[int]) -> None:
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"{len(student_channels)} student maps but {len(teacher_channels)} teacher maps")
        self.maps = nn.ModuleList(nn.Conv2d(s, t, kernel_size=1) for s, t in zip(student_channels,
                                                                                 teacher_channels))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        return [proj(f) for proj, f in zip(self.maps, feats)]
