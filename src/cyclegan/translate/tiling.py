"""Tiling: overlapping tiles, their seamless blending, shared whole-image statistics, and the memory
a translation needs.

When one forward pass would not fit the memory budget (``tile="auto"``) or ``tile=N`` asks for it,
the padded image is cut into overlapping tiles whose outputs are blended with raised-cosine weights;
across every overlap the two weights sum to one, so no tile edge can show as a step.

Instance norm (the CycleGAN default), group norm (AnimeGANv2's layer norm, the mobile students'
per-channel kernel) and batch norm without running statistics would normalise every tile by its own
statistics and give each one a different colour cast; a global pooling gate (squeeze-and-excitation,
CBAM's channel branch) would gate each tile by its own content. For eager PyTorch models the
statistics and gates are therefore taken from one pass over the whole image (downscaled to fit the
budget when needed) and shared by all tiles. Layers no recorded value can stand in for (self-attention,
layer norm, other adaptive pools) make tiling refuse. ONNX and TorchScript models cannot be
instrumented that way and use per-tile statistics, which the blending turns into slow, seamless colour
drifts rather than steps.

``estimate_memory`` bounds what translating one image holds at its peak: the full-resolution copies
around the network (which tiling does not shrink) plus the generator's pass (which it does), with the
same tile and pass sizes as the translation itself uses.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyclegan.errors import TranslateError
from cyclegan.image import padded_size
from cyclegan.networks.attention import ChannelAttention, SelfAttention

__all__ = [
    "ACTIVATION_FACTOR",
    "DEFAULT_NGF",
    "MemoryEstimate",
    "activation_bytes_per_pixel",
    "blend_tiles",
    "blend_weights",
    "estimate_memory",
    "input_stat_norms",
    "shared_norm_stats",
    "tile_overlap",
    "tile_side",
    "tile_starts",
    "tiles_per_pass",
]

# Peak memory of one generator forward pass per input pixel, in units of ngf float32 values. The
# paper's ResNet-9 (ngf 64) peaks at ~0.97 KB/px on CPU in fp32 (measured, 1024x1024, RSS); 4.5 x 64
# x 4 B = 1.15 KB/px adds room for the padded input, the output and the tile accumulators. U-Nets
# need less per pixel, so the estimate errs on the safe side for them.
ACTIVATION_FACTOR = 4.5
DEFAULT_NGF = 64

# Full-resolution copies around the network, in bytes per pixel of the image (N) and of its padded
# version (P), counted from the tensors Translator.translate_tensor holds (float32 = 12 B/px for RGB):
# - while blending tiles: the uint8 batch (3 N) and its float copy (12 N), the padded input (12 P), the
#   output sum (12 P), the weight sum (4 P) and their quotient (12 P);
# - while converting back: the float input (12 N), the uint8 batch (3 N), the padded input and the
#   output (24 P), and to_uint8's float temporaries and result (27 N).
# A whole (untiled) pass holds less than the first line, the second line alike.
_BLEND_BYTES = (15, 40)  # (per image pixel, per padded pixel)
_CONVERT_BYTES = (42, 24)


def activation_bytes_per_pixel(ngf: int | None) -> float:
    """The generator's peak bytes per padded pixel for a pass, from its base width (None: the paper's 64)."""
    return ACTIVATION_FACTOR * (ngf if ngf is not None else DEFAULT_NGF) * 4


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# ------------------------------------------------------------------------------------------ layout


def tile_side(
    height: int, width: int, *, tile: str | int, multiple: int, pixels_per_pass: int
) -> int | None:
    """Tile side for a padded ``height`` x ``width`` image, or None to run it whole.

    ``tile`` is "off", "auto" (tile only when the image has more than ``pixels_per_pass`` pixels) or a
    side in pixels; tiles are multiples of ``multiple`` and at least two of them.
    """
    m = multiple
    if tile == "off":
        return None
    if isinstance(tile, int):
        t = max(_round_up(tile, m), 2 * m)
        return t if height > t or width > t else None
    if height * width <= pixels_per_pass:
        return None
    t = int(math.sqrt(pixels_per_pass)) // m * m
    return max(t, _round_up(64, m), 2 * m)


def tile_overlap(tile: int, *, multiple: int, requested: int | None = None) -> int:
    """Pixels shared by neighbouring tiles: ``requested`` (at most half a tile), else a default."""
    if requested is not None:
        return min(requested, tile // 2)
    # A quarter of the tile, at most 128 px: about the paper ResNet's effective receptive field
    # radius, while costing at most ~30% extra compute for small tiles.
    return min(_round_up(max(16, min(128, tile // 4)), multiple), tile // 2)


def tiles_per_pass(tile_pixels: int, *, batch_size: int, pixels_per_pass: int) -> int:
    """How many tiles of ``tile_pixels`` one forward pass takes: as many as the budget holds, at
    least one and at most ``batch_size``."""
    return max(1, min(batch_size, pixels_per_pass // tile_pixels))


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ~``overlap`` shared.

    Starts are multiples of ``multiple`` (so every tile sees the same stride grid as the whole image)
    and spread evenly; the last tile ends exactly at ``length``.
    """
    if length <= tile:
        return [0]
    overlap = min(overlap, tile - multiple)
    n = math.ceil((length - overlap) / (tile - overlap))
    last = length - tile
    starts = {(round(i * last / (n - 1)) // multiple) * multiple for i in range(n)}
    starts.add(last)
    return sorted(starts)


def _ramp(n: int) -> Tensor:
    # Raised cosine sampled at pixel centres: never exactly 0, and ramp(n) + ramp(n).flip(0) == 1.
    return 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n)


def blend_weights(starts: Sequence[int], tile: int) -> list[Tensor]:
    """1-D blending weights (float32 [tile]) for each tile: ramps up over the overlap with the previous
    tile and down over the overlap with the next one, so overlapping weights sum to one."""
    weights = []
    for i, s in enumerate(starts):
        w = torch.ones(tile, dtype=torch.float64)
        if i > 0:
            a = starts[i - 1] + tile - s  # pixels shared with the previous tile
            if a > 0:
                w[:a] *= _ramp(a)
        if i < len(starts) - 1:
            b = s + tile - starts[i + 1]
            if b > 0:
                w[tile - b :] *= _ramp(b).flip(0)
        weights.append(w.float())
    return weights


def blend_tiles(
    x: Tensor, run: Callable[[Tensor], Tensor], *, tile: int, overlap: int, multiple: int, per_pass: int
) -> Tensor:
    """[1, C, H', W'] -> [1, C_out, H', W'] float32: ``run`` on overlapping tiles, ``per_pass`` tiles a
    call, blended with ``blend_weights``. H' and W' are multiples of ``multiple``."""
    _, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    ys = tile_starts(h, th, overlap, multiple)
    xs = tile_starts(w, tw, overlap, multiple)
    wy = [v.to(x.device) for v in blend_weights(ys, th)]
    wx = [v.to(x.device) for v in blend_weights(xs, tw)]
    coords = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    out: Tensor | None = None
    wsum = torch.zeros((1, 1, h, w), dtype=torch.float32, device=x.device)
    for k in range(0, len(coords), per_pass):
        chunk = coords[k : k + per_pass]
        batch = torch.cat([x[:, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] for i, j in chunk])
        y = run(batch)  # [n, C_out, th, tw]
        if out is None:
            out = torch.zeros((1, y.shape[1], h, w), dtype=torch.float32, device=x.device)
        for n, (i, j) in enumerate(chunk):
            weight = wy[i][:, None] * wx[j][None, :]  # [th, tw]
            out[0, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] += y[n] * weight
            wsum[0, 0, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] += weight
    assert out is not None
    return out / wsum


# ------------------------------------------------------------------------ shared image statistics

# Layers whose output depends on the whole input at once and cannot be given a recorded value:
# attention over every position, and layer norm (whose normalised dims may be spatial).
_UNSHARABLE = (SelfAttention, nn.MultiheadAttention, nn.LayerNorm)
_GLOBAL_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


def _uses_input_stats(m: nn.Module) -> bool:
    """Whether ``m`` normalises by statistics of its input over the spatial positions."""
    if isinstance(m, nn.GroupNorm):
        return True  # any number of groups: per sample, over the group's channels and all positions
    if isinstance(m, nn.modules.instancenorm._InstanceNorm):
        return m.training or not m.track_running_stats
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m.training or m.running_mean is None
    return False


def _is_global_gate(m: nn.Module) -> bool:
    """A module whose output is one value per channel of the whole map: a squeeze (global pooling to
    one position) or CBAM's channel branch, which pools inside its forward."""
    if isinstance(m, ChannelAttention):
        return True
    if isinstance(m, _GLOBAL_POOLS):
        size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,)
        return all(s == 1 for s in size)
    return False


def _unsharable(m: nn.Module) -> bool:
    return isinstance(m, _UNSHARABLE) or (isinstance(m, _GLOBAL_POOLS) and not _is_global_gate(m))


def input_stat_norms(module: nn.Module) -> list[nn.Module]:
    """Layers whose output depends on statistics of the whole image: instance, group and (training or
    running-stat-free) batch norms, global pooling (squeeze-and-excitation, CBAM's channel branch), and
    the layers tiling cannot share at all (self-attention, layer norm, other adaptive pools), which make
    ``shared_norm_stats`` refuse. None for TorchScript, whose layers cannot be patched."""
    if isinstance(module, torch.jit.ScriptModule):
        return []
    return [m for m in module.modules() if _uses_input_stats(m) or _is_global_gate(m) or _unsharable(m)]


def _norm_stats(mod: nn.Module, v: Tensor) -> tuple[Tensor, Tensor]:
    """[1, C, *spatial] float32 -> per-channel mean and biased variance, each [1, C, 1, ...]."""
    n, c = v.shape[:2]
    ones = (1,) * (v.dim() - 2)
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):  # over the batch too
        flat = v.transpose(0, 1).reshape(c, -1)
        return flat.mean(1).view(1, c, *ones), flat.var(1, unbiased=False).view(1, c, *ones)
    groups = mod.num_groups if isinstance(mod, nn.GroupNorm) else c
    if groups == c:  # per channel: reduce in place, no reshaped copy of a channels_last map
        dims = tuple(range(2, v.dim()))
        return v.mean(dim=dims, keepdim=True), v.var(dim=dims, unbiased=False, keepdim=True)
    flat = v.reshape(n, groups, -1)
    mean = flat.mean(-1).repeat_interleave(c // groups, dim=1)  # [n, C]
    var = flat.var(-1, unbiased=False).repeat_interleave(c // groups, dim=1)
    return mean.view(n, c, *ones), var.view(n, c, *ones)


def _record_stats(norms: list[nn.Module], run: Callable[[Tensor], Tensor], x: Tensor) -> dict:
    """Run ``x`` once and keep each norm layer's input mean and variance ([1, C, 1, 1] float32) and each
    global gate's output ([1, C, 1, 1])."""
    stats: dict[nn.Module, tuple[Tensor, ...]] = {}

    def pre_hook(mod: nn.Module, args: tuple) -> None:
        stats[mod] = _norm_stats(mod, args[0].detach().float())

    def hook(mod: nn.Module, args: tuple, output: Tensor) -> None:
        stats[mod] = (output.detach(),)

    handles = [m.register_forward_pre_hook(pre_hook) if _uses_input_stats(m)
               else m.register_forward_hook(hook)
               for m in norms]
    try:
        run(x)
    finally:
        for h in handles:
            h.remove()
    return stats


def _normalise_with(mod: nn.Module, mean: Tensor, var: Tensor) -> Callable[[Tensor], Tensor]:
    inv_std = torch.rsqrt(var + mod.eps)
    shape = (1, -1) + (1,) * (mean.dim() - 2)

    def forward(x: Tensor) -> Tensor:
        y = (x.float() - mean) * inv_std  # [N, C, h, w] with one image's [1, C, 1, 1] statistics
        if mod.affine:
            y = y * mod.weight.view(shape) + mod.bias.view(shape)
        return y.to(x.dtype)

    return forward


def _recorded_output(value: Tensor) -> Callable[..., Tensor]:
    def forward(x: Tensor, *args, **kwargs) -> Tensor:
        # One image's gate [1, C, 1, 1], repeated for the tiles of the batch.
        return value.expand(x.shape[0], *value.shape[1:]).to(x.dtype)

    return forward


@contextlib.contextmanager
def _frozen_stats(stats: dict) -> Iterator[None]:
    """Make each recorded layer use its recorded statistics or output (instance attribute shadows forward).

    Not thread-safe: the module is patched in place for the duration of one tiled image.
    """
    try:
        for mod, recorded in stats.items():
            mod.forward = _normalise_with(mod,
                                          *recorded) if _uses_input_stats(mod) else _recorded_output(
                                              *recorded)
        yield
    finally:
        for mod in stats:
            mod.__dict__.pop("forward", None)


def _refuse_unsharable(norms: list[nn.Module]) -> None:
    bad = next((m for m in norms if _unsharable(m)), None)
    if bad is not None:
        raise TranslateError(
            f"tile: cannot give this generator's {type(bad).__name__} layer the whole image's values in each "
            "tile (it can depend on the whole image at once), so tiles could give a different image; use "
            "tile=off (and a memory_budget that holds the whole image)"
        )


@contextlib.contextmanager
def shared_norm_stats(
    x: Tensor, norms: list[nn.Module], run: Callable[[Tensor], Tensor], *, pixels_per_pass: int, multiple: int
) -> Iterator[None]:
    """While tiling x ([1, 3, H', W']), give every layer of ``norms`` the whole image's statistics (or
    gate), recorded by one ``run`` of x (downscaled to at most ``pixels_per_pass`` pixels). Raises
    TranslateError, before running anything, when one of them cannot be shared."""
    if not norms:
        yield
        return
    _refuse_unsharable(norms)
    _, _, h, w = x.shape
    ref = x
    if h * w > pixels_per_pass:
        # Means and variances are averages over the image, so a downscaled copy estimates them
        # well; area interpolation keeps local averages intact.
        s = math.sqrt(pixels_per_pass / (h * w))
        m = multiple
        size = (max(2 * m, int(h * s) // m * m), max(2 * m, int(w * s) // m * m))
        ref = F.interpolate(x, size=size, mode="area")
    stats = _record_stats(norms, run, ref)
    with _frozen_stats(stats):
        yield


# ------------------------------------------------------------------------------------------ memory


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes translating one image holds at its peak: ``copies`` (full-resolution tensors around the
    network, independent of the budget) and ``generator`` (the largest forward pass)."""

    copies: int
    generator: int

    @property
    def peak(self) -> int:
        return self.copies + self.generator


def estimate_memory(
    width: int,
    height: int,
    *,
    size_multiple: int,
    tile: str | int,
    memory_budget: int,
    bytes_per_pixel: float,
    batch_size: int = 1,
) -> MemoryEstimate:
    """Peak memory of translating one ``width`` x ``height`` image (after any resize) as a Translator
    with these settings does: padded to ``size_multiple`` (at least two of them), run whole or in tiles
    of ``tile_side``, ``tiles_per_pass`` at a time, with a shared-statistics pass of at most the
    budget's pixels. Errs on the safe side: the copies of the blending and the conversion phases are
    not held at the same time, and the larger is counted."""
    m = size_multiple
    ph, pw = padded_size(height, width, m, minimum=2 * m)
    n, p = width * height, ph * pw
    pixels_per_pass = max(1, int(memory_budget / bytes_per_pixel))
    copies = max(_BLEND_BYTES[0] * n + _BLEND_BYTES[1] * p, _CONVERT_BYTES[0] * n + _CONVERT_BYTES[1] * p)
    t = tile_side(ph, pw, tile=tile, multiple=m, pixels_per_pass=pixels_per_pass)
    if t is None:
        pass_pixels = p
    else:
        th, tw = min(t, ph), min(t, pw)
        per_pass = tiles_per_pass(th * tw, batch_size=batch_size, pixels_per_pass=pixels_per_pass)
        # The statistics pass runs the image downscaled to the budget (never below two multiples a side).
        stats_pixels = min(p, max(pixels_per_pass, 4 * m * m))
        pass_pixels = max(per_pass * th * tw, stats_pixels)
    return MemoryEstimate(copies=int(copies), generator=int(pass_pixels * bytes_per_pixel))
