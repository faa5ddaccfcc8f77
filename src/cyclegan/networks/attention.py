"""The attention generator: SE (Hu et al., CVPR 2018) and CBAM (Woo et al., ECCV 2018) residual blocks and
a SAGAN self-attention layer (Zhang et al., ICML 2019), with an optional VQ bottleneck (cyclegan.networks.vq).

    encoder      c7s1-ngf, d(2ngf), d(4ngf)                       as the paper's ResNet generator
    [VQ]         1x1 conv to vq_dim, nearest-code lookup, 1x1 conv back   (VQ-VAE, NeurIPS 2017)
    res blocks   n_blocks residual blocks, each recalibrated by squeeze-and-excitation; every
                 ``cbam_every``-th one ("improved") also applies CBAM before the SE
    attention    one self-attention layer over all bottleneck positions (global coherence)
    decoder      u(2ngf), u(ngf), c7s1-3, tanh                       as the paper's ResNet generator

There are two block types, "mixed" residual blocks with SE attention and "improved" ones that add
channel + spatial attention (CBAM) in front of the SE. We alternate them, mixed first, so every
improved block is preceded by a plain-SE one: with 9 blocks and ``cbam_every=2`` blocks 2, 4, 6 and 8
are improved.

``forward(x)`` returns the image, like every generator, so translation, export and checkpoint loading
need nothing special; ``forward(x, return_aux=True)`` returns ``(image, aux)`` with the VQ losses and
the codebook perplexity as tensors, which the training step adds to the generator objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyclegan.errors import ConfigError
from cyclegan.networks.blocks import residual_body
from cyclegan.networks.generators import GENERATORS, ResnetGenerator
from cyclegan.networks.options import ResidualOptions, read_options, require_at_least, require_fraction
from cyclegan.networks.vq import VectorQuantizer

if TYPE_CHECKING:
    from cyclegan.config.schema import GeneratorConfig


class SqueezeExcitation(nn.Module):
    """Channel recalibration (Hu et al., CVPR 2018): global average pool, bottleneck MLP, sigmoid gate."""

    def __init__(self, *, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        # [B, C, H, W] -> [B, C, H, W]; the gate [B, C, 1, 1] is computed from ``context`` when given
        # (another [B, C, h, w] map), otherwise from x itself.
        return x * self.gate(x if context is None else context)


class ChannelAttention(nn.Module):
    """CBAM's channel branch (Woo et al., ECCV 2018): one shared MLP on the average- and the
    max-pooled descriptor, summed, then a sigmoid. Max pooling adds the most salient response per
    channel, which average pooling alone washes out (Woo et al., ECCV 2018, sec. 3, channel attention)."""

    def __init__(self, *, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        # [B, C, H, W] -> gate [B, C, 1, 1]
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM's spatial branch: a 7x7 conv over the per-position channel mean and max, then a sigmoid."""

    def __init__(self, *, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        # [B, C, H, W] -> gate [B, 1, H, W]
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(stats))


class CBAM(nn.Module):
    """Channel attention, then spatial attention on the re-weighted map (CBAM's sequential order)."""

    def __init__(self, *, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels=channels, reduction=reduction)
        self.spatial = SpatialAttention()

    def forward(self, x: Tensor) -> Tensor:
        # [B, C, H, W] -> [B, C, H, W]
        x = x * self.channel(x)
        return x * self.spatial(x)


class AttentionResidualBlock(nn.Module):
    """x + SE(CBAM(body(x))), body as in the paper's residual block (reflection-padded 3x3 convs,
    instance norm, ReLU between). The attention re-weights the residual before it is added, as SE-ResNet
    and CBAM do, so the identity path stays untouched. ``cbam`` selects the "improved" block.

    The SE gate is computed from the block's input x, not from body(x): the residual ends in instance
    norm without affine parameters, so every channel of body(x) has mean exactly 0 and an SE squeeze
    (a global average) of it would give the same gate for every image. The input's channel means do
    carry the image's content, so the gate says which channels this block should change given what it
    sees. CBAM keeps its standard form on body(x): its max-pooled and spatial descriptors are not
    removed by the norm.
    """

    def __init__(
        self, *, channels: int, norm: str = "instance", dropout: float = 0.0, reduction: int = 16,
        cbam: bool = False,
    ) -> None:
        super().__init__()
        self.body = residual_body(channels=channels, norm=norm, dropout=dropout)
        self.cbam = CBAM(channels=channels, reduction=reduction) if cbam else nn.Identity()
        self.se = SqueezeExcitation(channels=channels, reduction=reduction)

    def forward(self, x: Tensor) -> Tensor:
        # [B, C, H, W] -> [B, C, H, W]
        return x + self.se(self.cbam(self.body(x)), context=x)


class SelfAttention(nn.Module):
    """Self-attention over all H*W positions (SAGAN, Zhang et al., ICML 2019): queries and keys are
    1x1 convs to C/8 channels, values keep C; the result is added as ``x + gamma * attention`` with
    gamma starting at 0, so the block begins as the identity and the network learns how much global
    context to mix in. Unlike SAGAN the scores are scaled by 1/sqrt(C/8) (Vaswani et al. 2017): this
    goes through ``scaled_dot_product_attention``, whose fused kernels never hold the (HW)^2 matrix.

    The cost is still quadratic in H*W: 64x64 bottleneck positions at 256px training, but a 1024px
    translation has 65,536 positions, about 16x the compute of the whole rest of the network."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, inner, kernel_size=1)
        self.key = nn.Conv2d(channels, inner, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        # [B, C, H, W] -> [B, C, H, W]
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2).unsqueeze(1)  # [B, 1, HW, C/8]
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1)  # [B, 1, HW, C/8]
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1)  # [B, 1, HW, C]
        out = F.scaled_dot_product_attention(q, k, v)  # [B, 1, HW, C]
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.gamma * out


class AttentionGenerator(ResnetGenerator):
    """The paper's ResNet encoder and decoder around attention residual blocks (see module docstring).

    Built on ``ResnetGenerator`` with no plain residual blocks; its ``transformer`` is replaced by the
    attention blocks, so the encoder/decoder (and their parameter names) are shared with it.
    """

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
        se_reduction: int = 16,
        cbam_every: int = 2,
        self_attention: bool = True,
        vq_codebook_size: int = 0,
        vq_dim: int = 64,
        vq_ema_decay: float = 0.99,
    ) -> None:
        super().__init__(in_channels=in_channels, out_channels=out_channels, ngf=ngf, n_blocks=0, norm=norm,
                         dropout=dropout, upsample=upsample)
        width = ngf * 2**self.n_downsampling
        # [B, 4ngf, H/4, W/4] -> same
        self.transformer = nn.Sequential(
            *(
                AttentionResidualBlock(
                    channels=width, norm=norm, dropout=dropout, reduction=se_reduction,
                    cbam=cbam_every > 0 and (i + 1) % cbam_every == 0,
                )
                for i in range(n_blocks)
            )
        )
        self.attention = SelfAttention(channels=width) if self_attention else nn.Identity()
        self.quantizer: VectorQuantizer | None = None
        if vq_codebook_size:
            # [B, 4ngf, h, w] -> [B, vq_dim, h, w] -> codes -> [B, 4ngf, h, w]
            self.pre_vq = nn.Conv2d(width, vq_dim, kernel_size=1)
            self.quantizer = VectorQuantizer(num_codes=vq_codebook_size, dim=vq_dim, ema_decay=vq_ema_decay)
            self.post_vq = nn.Conv2d(vq_dim, width, kernel_size=1)
        # Tells the training step to call forward(x, return_aux=True) and add the returned losses.
        self.aux_losses: bool = self.quantizer is not None

    def forward(self, x: Tensor, return_aux: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        # [B, 3, H, W] -> [B, 3, H, W], H and W divisible by 4; with return_aux also
        # {"vq_commitment", "vq_codebook", "vq_perplexity"} scalars when the generator quantises.
        h = self.encoder(x)
        aux: dict[str, Tensor] = {}
        if self.quantizer is not None:
            vq = self.quantizer(self.pre_vq(h))
            h = self.post_vq(vq.quantized)
            aux = {"vq_commitment": vq.commitment, "vq_codebook": vq.codebook_loss,
                   "vq_perplexity": vq.perplexity}
        y = self.decoder(self.attention(self.transformer(h)))
        return (y, aux) if return_aux else y


@dataclass(frozen=True)
class AttentionOptions(ResidualOptions):
    """``model.generator`` keys of the attention generator: the squeeze-and-excitation bottleneck
    (channels / se_reduction), CBAM on every k-th block (0: SE only), a self-attention layer after
    the blocks, and the optional vector-quantised bottleneck (vq_codebook_size codes of vq_dim; 0:
    none), whose codebook follows an EMA of decay vq_ema_decay (0: learned by gradient instead)."""

    se_reduction: int = 16
    cbam_every: int = 2
    self_attention: bool = True
    vq_codebook_size: int = 0
    vq_dim: int = 64
    vq_ema_decay: float = 0.99

    def check(self, key: str) -> None:
        super().check(key)
        require_at_least(f"{key}.se_reduction", self.se_reduction, 1)
        require_at_least(f"{key}.cbam_every", self.cbam_every, 0)
        require_at_least(f"{key}.vq_codebook_size", self.vq_codebook_size, 0)
        require_at_least(f"{key}.vq_dim", self.vq_dim, 1)
        require_fraction(f"{key}.vq_ema_decay", self.vq_ema_decay)
        if not self.vq_codebook_size:  # the code size and its decay would be accepted and ignored
            for name, default in (("vq_dim", 64), ("vq_ema_decay", 0.99)):
                if getattr(self, name) != default:
                    raise ConfigError(f"{key}.{name}: shapes the VQ bottleneck; needs {key}.vq_codebook_size "
                                      "> 0")


@GENERATORS.register("attention", options=AttentionOptions)
def attention_generator(cfg: GeneratorConfig) -> nn.Module:
    return AttentionGenerator(ngf=cfg.ngf, **vars(read_options(AttentionOptions, cfg)))
