"""Building blocks shared by the generators and discriminators, plus weight initialisation.

Layer choices follow the CycleGAN paper (Zhu et al., ICCV 2017, appendix 7.2) and its code
(junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py): reflection padding in the generator,
instance norm, ReLU in generators and LeakyReLU(0.2) in discriminators.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

from cyclegan.errors import ConfigError, NetworkMemoryError, first_line


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A fresh normalisation layer of the given kind for ``channels`` feature maps."""
    if kind == "instance":
        # No affine parameters and no running statistics, as in the paper's code: every image is
        # normalised by its own statistics at train and test time alike, which is what lets the
        # generator shed the contrast of the source domain (Ulyanov et al. 2016).
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    if kind == "none":
        # Identity rather than nothing, so submodule indices (hence state_dict keys) do not depend
        # on the norm kind.
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}; choose from batch, instance, none")


def uses_bias(norm: str) -> bool:
    """Whether a conv followed by ``norm`` should carry a bias.

    BatchNorm's affine shift makes a preceding bias redundant, so it is dropped there. Instance
    norm without affine parameters also cancels a per-channel bias, but the paper's code keeps it
    there, and the published parameter counts (11,378,179 for ResNet-9, 2,764,737 for the 70x70
    PatchGAN) include it, so we match.
    """
    return norm != "batch"


def dropout_layer(p: float) -> nn.Module:
    # Identity at p == 0 keeps submodule indices stable whether or not dropout is configured.
    return nn.Dropout(p) if p > 0 else nn.Identity()


def residual_body(*, channels: int, norm: str, dropout: float) -> nn.Sequential:
    """pad, conv3x3, norm, ReLU, [dropout], pad, conv3x3, norm: the residual branch shared by the
    ResNet generator's blocks and the attention generator's blocks. [B, C, H, W] -> same."""
    bias = uses_bias(norm)
    return nn.Sequential(
        nn.ReflectionPad2d(1),
        nn.Conv2d(channels, channels, kernel_size=3, bias=bias),
        norm_layer(norm, channels),
        nn.ReLU(inplace=True),
        dropout_layer(dropout),
        nn.ReflectionPad2d(1),
        nn.Conv2d(channels, channels, kernel_size=3, bias=bias),
        norm_layer(norm, channels),
    )


class ResnetBlock(nn.Module):
    """Residual block of the ResNet generator: x + (pad, conv3x3, norm, ReLU, [dropout], pad,
    conv3x3, norm). Reflection padding instead of zero padding avoids border artifacts (Zhu et al.,
    ICCV 2017, appendix 7.2); no ReLU after the sum, as in the paper's code."""

    def __init__(self, *, channels: int, norm: str = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        self.block = residual_body(channels=channels, norm=norm, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, C, H, W] -> [B, C, H, W]
        return x + self.block(x)


def upconv(
    in_channels: int, out_channels: int, *, mode: str, bias: bool, kernel_size: int = 3
) -> nn.Sequential | nn.ConvTranspose2d:
    """A layer that doubles H and W.

    ``transpose``: ConvTranspose2d with stride 2 (the paper; kernel 3 with output_padding 1 in the
    ResNet generator, kernel 4 in the U-Net). ``resize``: nearest-neighbour 2x upsampling followed
    by a reflection-padded 3x3 conv; every output pixel then gets the same number of kernel taps,
    which removes the checkerboard artifacts of strided transposed convs (Odena et al. 2016,
    "Deconvolution and checkerboard artifacts", Distill 2016).
    """
    if mode == "transpose":
        if kernel_size == 3:
            # (H - 1) * 2 - 2 + 3 + 1 = 2H
            return nn.ConvTranspose2d(
                in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1, bias=bias
            )
        if kernel_size == 4:
            # (H - 1) * 2 - 2 + 4 = 2H
            return nn.ConvTranspose2d(
                in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=bias
            )
        raise ValueError(f"transposed upsampling supports kernel 3 or 4, got {kernel_size}")
    if mode == "resize":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.ReflectionPad2d(1),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, bias=bias),
        )
    raise ConfigError(f"unknown upsample {mode!r}; choose from resize, transpose")


class UpsampleBlock(nn.Sequential):
    """Decoder stage of the ResNet generator: 2x upsampling conv, norm, ReLU."""

    def __init__(
        self, *, in_channels: int, out_channels: int, norm: str = "instance", mode: str = "transpose"
    ) -> None:
        # [B, in, H, W] -> [B, out, 2H, 2W]
        super().__init__(
            upconv(in_channels, out_channels, mode=mode, bias=uses_bias(norm), kernel_size=3),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )


# ----------------------------------------------------------------------------------------------
# Initialisation and counting

_CONV_OR_LINEAR = (nn.modules.conv._ConvNd, nn.Linear)
_BATCH_NORM = nn.modules.batchnorm._BatchNorm


def init_weights(net: nn.Module, kind: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise ``net`` in place and return it.

    Conv/Linear weights: ``normal`` N(0, gain) (the paper: "weights are initialized from a Gaussian
    distribution N(0, 0.02)"), ``xavier`` (xavier_normal with ``gain``), ``kaiming`` (kaiming_normal,
    fan_in, a=0; ``gain`` unused) or ``orthogonal`` (with ``gain``); biases 0. BatchNorm: weight
    N(1, gain), bias 0, so it starts close to the identity.
    """
    if kind not in ("normal", "xavier", "kaiming", "orthogonal"):
        raise ConfigError(f"unknown init {kind!r}; choose from kaiming, normal, orthogonal, xavier")
    for m in net.modules():
        if isinstance(m, _CONV_OR_LINEAR):
            # Under a parametrisation (spectral norm) ``m.weight`` is recomputed on every access, so
            # initialising it in place would be lost: initialise the stored original instead.
            weight = (m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight")
                      else m.weight)
            if kind == "normal":
                nn.init.normal_(weight, 0.0, gain)
            elif kind == "xavier":
                nn.init.xavier_normal_(weight, gain=gain)
            elif kind == "kaiming":
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _BATCH_NORM) and m.affine:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


# Substrings of the RuntimeErrors torch raises when an allocation fails (CPU allocator, CUDA, MPS).
_ALLOCATION_MESSAGES = ("out of memory", "can't allocate", "cannot allocate", "failed to allocate",
                        "not enough memory", "defaultcpuallocator")


@contextlib.contextmanager
def allocation_guard(key: str, what: str) -> Iterator[None]:
    """While building ``what`` (e.g. "generator resnet with ngf 512", configured under ``key``), an
    allocation failure becomes one NetworkMemoryError line instead of an allocator traceback; any other
    error is a bug and passes through. ``config.validate`` refuses absurd sizes before this; what is
    left is a network within MAX_NETWORK_BYTES that this machine still cannot hold."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        if isinstance(e, RuntimeError) and not any(m in str(e).lower() for m in _ALLOCATION_MESSAGES):
            raise
        raise NetworkMemoryError(f"{key}: not enough memory to build {what} ({first_line(e)})") from None


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def count_macs(net: nn.Module, *, height: int = 256, width: int = 256, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass of ``net`` on a [batch, 3, height, width] input.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` with ``net`` run on the meta device (shapes
    only: no memory, no arithmetic; well under a second for ResNet-9), as its FLOPs / 2 (one multiply
    and one add per MAC). The counter covers convolutions, transposed convolutions and matrix products;
    normalisation, activation and padding are memory-bound and uncounted, as in the MAC counts of
    the literature. A transposed convolution counts its true products (input positions x kernel x
    channels): GAN Compression's profiler counts them over the output positions, four times as many
    at stride 2, which is why it reports 56.8 G for the ResNet-9 generator at 256x256 where this
    counts 49.6 G.
    """
    # The module runs with meta stand-ins for its parameters and buffers: nothing is copied or changed.
    meta = {name: torch.empty_like(t, device="meta")
            for name, t in itertools.chain(net.named_parameters(), net.named_buffers())}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        torch.func.functional_call(net, meta, (torch.empty(batch, 3, height, width, device="meta"),))
    return counter.get_total_flops() // 2
