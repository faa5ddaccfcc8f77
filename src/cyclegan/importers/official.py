"""Generators saved by the CycleGAN / pix2pix authors' PyTorch code (junyanz/pytorch-CycleGAN-and-pix2pix).

Their files are state dicts of one ``nn.Sequential`` named ``model``:

    ResNet   model.1 conv7 | model.2 norm | model.4, model.7 stride-2 convs (+ norms) | model.10 ..
             residual blocks (model.<i>.conv_block.{1,5} convs, {2,6} norms; {1,6} and {2,7} with
             dropout) | two transposed convs (+ norms) | a final conv7 with bias. 6 or 9 blocks
             in their zoo; any count, any ngf.
    U-Net    nested blocks: model.model.{0 down conv, 1 inner block, 3 up conv}; an inner block's
             layers are .model.{1 down conv, 2 norm, 3 inner block, 5 up conv, 6 norm}, the innermost
             .model.{1, 3, 4}. 7 levels = unet_128, 8 = unet_256.

Convs carry a bias exactly when the norm is instance norm. Files of the pretrained zoo (horse2zebra.pth,
style_monet.pth, ...) were written before PyTorch 0.4 and keep InstanceNorm running statistics, which
the authors' loader drops; so do we. Training checkpoints are ``<epoch>_net_G_A.pth`` (A -> B) and
``<epoch>_net_G_B.pth`` (B -> A); given both, the result is one two-directional checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from cyclegan.config import Config, GeneratorConfig, config_from_dict
from cyclegan.errors import ConfigError
from cyclegan.importers.common import (
    IMPORT_FORMATS,
    Converted,
    ForeignWeightsError,
    Layout,
    bias_mode,
    check_layout,
    detect_norm,
    load_layout,
    no_layout,
    read_state_dict,
)
from cyclegan.networks import GENERATORS, binomial_filter, build_generator, count_parameters

RESNET_EXPECTED = ("a ResNet (model.1.weight [ngf, 3, 7, 7], model.<i>.conv_block...) or U-Net "
                   "(model.model.0.weight)")
UNET_NAMES = {7: "unet_128", 8: "unet_256"}


# -------------------------------------------------------------------------------------------------- ResNet


def resnet_layout(
    tensors: Mapping[str, Tensor], *, path: Path, fmt: str, allow_antialias: bool
) -> tuple[GeneratorConfig, Layout]:
    """Infer the ResNet generator of ``tensors`` (authors' or CUT's layout) and the layout it implies."""
    first = tensors.get("model.1.weight")
    if first is None or first.ndim != 4 or tuple(first.shape[1:]) != (3, 7, 7):
        raise no_layout(path, fmt, RESNET_EXPECTED if fmt == "official" else
                        "a ResNet generator (model.1.weight [ngf, 3, 7, 7], model.<i>.conv_block...)",
                        tensors)
    ngf = int(first.shape[0])
    norm = detect_norm(tensors, "model.2", "model.1")
    if norm is None:
        names = sorted(k for k in tensors if k.startswith("model.2."))
        raise ForeignWeightsError(f"{path}: model.2 holds {', '.join(names)}, which fits no norm layer "
                                  "(batch norm: weight, bias, running_mean, running_var; instance norm: "
                                  "none)")
    # CUT's anti-aliased downsampling: conv (stride 1), norm, ReLU, then a blur-pool layer whose only
    # state is its filter, model.7.filt.
    blur_down = "model.7.filt" in tensors
    start = 12 if blur_down else 10
    n_blocks = 0
    while f"model.{start + n_blocks}.conv_block.1.weight" in tensors:
        n_blocks += 1
    # The second conv of a block sits at index 5, or 6 behind a dropout layer (which holds no weights;
    # a batch norm at 6 does, so the test is on 5).
    dropout = n_blocks > 0 and f"model.{start}.conv_block.5.weight" not in tensors
    up_at = start + n_blocks
    blur_up = f"model.{up_at}.filt" in tensors
    if (blur_down or blur_up) and not allow_antialias:
        key = "model.7.filt" if blur_down else f"model.{up_at}.filt"
        raise ForeignWeightsError(f"{path}: {key} is the blur filter of an anti-aliased CUT generator, not "
                                  "part of the CycleGAN authors' generator; import it with: cyclegan import "
                                  "cut ...")
    down_size = _filter_size(tensors, "model.7.filt", path) if blur_down else 3
    up_size = _filter_size(tensors, f"model.{up_at}.filt", path) if blur_up else 4
    antialias = {(False, False): "none", (True, False): "down", (False, True): "up", (True, True): "both"}[
        (blur_down, blur_up)]
    gcfg = GeneratorConfig(name="resnet", ngf=ngf, n_blocks=n_blocks, norm=norm,
                           dropout=0.5 if dropout else 0.0,
                           antialias=antialias, antialias_filter=down_size, antialias_up_filter=up_size)

    what = f"ResNet generator with {n_blocks} blocks, ngf {ngf}, {norm} norm"
    if dropout:
        what += ", dropout"
    if antialias != "none":
        what += f", anti-aliased {antialias} (blur {down_size}/{up_size})"
    layout = Layout(description=what)
    bias = bias_mode(norm)
    layout.conv("model.1", bias=bias)
    layout.norm("model.2", norm)
    i = 4
    for stage in range(2):
        layout.conv(f"model.{i}", bias=bias)
        layout.norm(f"model.{i + 1}", norm)
        if blur_down:  # conv, norm, ReLU, blur pool
            channels = ngf * 2 ** (stage + 1)
            layout.constants[f"model.{i + 3}.filt"] = binomial_filter(down_size).expand(channels, 1, -1, -1)
            i += 4
        else:  # stride-2 conv, norm, ReLU
            i += 3
    second = 6 if dropout else 5  # pad, conv, norm, ReLU, [dropout], pad, conv, norm
    for b in range(n_blocks):
        block = f"model.{i + b}.conv_block"
        layout.conv(f"{block}.1", bias=bias)
        layout.norm(f"{block}.2", norm)
        layout.conv(f"{block}.{second}", bias=bias)
        layout.norm(f"{block}.{second + 1}", norm)
    i += n_blocks
    for stage in range(2):
        if blur_up:  # blur upsampling, conv3x3, norm, ReLU
            channels = ngf * 2 ** (2 - stage)
            layout.constants[f"model.{i}.filt"] = (binomial_filter(up_size) * 4).expand(channels, 1, -1, -1)
            layout.conv(f"model.{i + 1}", bias=bias)
            layout.norm(f"model.{i + 2}", norm)
            i += 4
        else:  # transposed conv, norm, ReLU
            layout.conv(f"model.{i}", bias=bias)
            layout.norm(f"model.{i + 1}", norm)
            i += 3
    layout.conv(f"model.{i + 1}", bias="stored")  # after the reflection pad; no norm follows, always a bias
    return gcfg, layout


def _filter_size(tensors: Mapping[str, Tensor], key: str, path: Path) -> int:
    filt = tensors[key]
    if filt.ndim != 4 or filt.shape[1] != 1 or filt.shape[2] != filt.shape[3] or not 1 <= filt.shape[2] <= 7:
        raise ForeignWeightsError(f"{path}: {key} has shape {list(filt.shape)}; expected a blur filter "
                                  "[channels, 1, n, n] with n from 1 to 7")
    return int(filt.shape[2])


# --------------------------------------------------------------------------------------------------- U-Net


def unet_layout(tensors: Mapping[str, Tensor], *, path: Path) -> tuple[GeneratorConfig, Layout]:
    first = tensors["model.model.0.weight"]
    if first.ndim != 4 or tuple(first.shape[1:]) != (3, 4, 4):
        raise ForeignWeightsError(f"{path}: model.model.0.weight has shape {list(first.shape)}; a U-Net's "
                                  "first conv is [ngf, 3, 4, 4]")
    ngf = int(first.shape[0])
    # Level 1 is the outermost block; every other block sits at .model.3 of the one around it.
    innermost, levels = "model.model.1", 2
    while any(k.startswith(f"{innermost}.model.3.model.") for k in tensors):
        innermost, levels = f"{innermost}.model.3", levels + 1
    if levels not in UNET_NAMES:
        raise ForeignWeightsError(f"{path}: a U-Net with {levels} levels; supported are 7 (unet_128) and "
                                  "8 (unet_256)")
    norm = detect_norm(tensors, "model.model.1.model.2", "model.model.1.model.1")
    if norm is None:
        raise ForeignWeightsError(
            f"{path}: model.model.1.model.2 fits no norm layer (batch or instance norm)")
    # Dropout layers hold no weights, so a U-Net trained with dropout cannot be told apart; it only
    # acts in training, and translation runs in eval mode.
    gcfg = GeneratorConfig(name=UNET_NAMES[levels], ngf=ngf, norm=norm)
    layout = Layout(description=f"U-Net generator with {levels} levels, ngf {ngf}, {norm} norm")
    bias = bias_mode(norm)

    def block(prefix: str, level: int) -> None:
        seq = f"{prefix}.model"
        if level == 1:  # down conv, inner block, ReLU, up conv (+ bias, tanh)
            layout.conv(f"{seq}.0", bias=bias)
            block(f"{seq}.1", 2)
            layout.conv(f"{seq}.3", bias="stored")
        elif level == levels:  # LeakyReLU, down conv, ReLU, up conv, norm
            layout.conv(f"{seq}.1", bias=bias)
            layout.conv(f"{seq}.3", bias=bias)
            layout.norm(f"{seq}.4", norm)
        else:  # LeakyReLU, down conv, norm, inner block, ReLU, up conv, norm, [dropout]
            layout.conv(f"{seq}.1", bias=bias)
            layout.norm(f"{seq}.2", norm)
            block(f"{seq}.3", level + 1)
            layout.conv(f"{seq}.5", bias=bias)
            layout.norm(f"{seq}.6", norm)

    block("model", 1)
    return gcfg, layout


# -------------------------------------------------------------------------------------------------- format


def make_config(gcfg: GeneratorConfig, *, kind: str = "cyclegan", path: Path) -> Config:
    """The full config of an imported generator: defaults everywhere else, validated."""
    try:
        return config_from_dict({"model": {"kind": kind, "generator": dataclasses.asdict(gcfg)}})
    except ConfigError as e:  # e.g. more blocks or a wider network than a config may ask for
        raise ForeignWeightsError(
            f"{path}: the architecture it holds cannot be configured here ({e})") from None


def convert_generator(
    path: Path, gcfg: GeneratorConfig, layout: Layout, tensors: Mapping[str, Tensor], *,
                      kind: str = "cyclegan"
) -> tuple[nn.Module, Config, int]:
    """Build our generator for ``gcfg`` and fill it by ``layout``: (network in eval mode, config, dropped).

    The file is checked against the network's shapes on the meta device first, so a small file that
    declares a huge network (and then lacks tensors, or holds views of a few stored bytes) is refused
    before the network is allocated: what an import allocates is bounded by what the file stores.
    """
    cfg = make_config(gcfg, kind=kind, path=path)
    with torch.device("meta"):  # shapes only, no storage
        shapes = GENERATORS[cfg.model.generator.name](cfg.model.generator).state_dict()
    check_layout(tensors, layout, shapes, path=path)
    net = build_generator(cfg.model.generator, init=cfg.model.init, init_gain=cfg.model.init_gain)
    dropped = load_layout(net, tensors, layout, path=path)
    return net.eval(), cfg, dropped


def direction_of(path: Path) -> str:
    """b2a for the authors' ``*_net_G_B.pth``; a2b for everything else (G_A, the test model's G, zoo
    files)."""
    return "b2a" if Path(path).stem.endswith("net_G_B") else "a2b"


def read_official(path: Path) -> tuple[GeneratorConfig, Layout, dict[str, Tensor]]:
    tensors = read_state_dict(path)
    if "model.model.0.weight" in tensors:
        gcfg, layout = unet_layout(tensors, path=path)
    else:
        gcfg, layout = resnet_layout(tensors, path=path, fmt="official", allow_antialias=False)
    return gcfg, layout, tensors


@IMPORT_FORMATS.register("official")
def convert_official(paths: Sequence[Path]) -> Converted:
    """One generator file, or the G_A and G_B files of one training run (two-directional result)."""
    paths = [Path(p) for p in paths]
    if len(paths) not in (1, 2):
        raise ForeignWeightsError(f"cyclegan import official: expected one generator file or a G_A and G_B "
                                  f"pair, got {len(paths)} files")
    directions = [direction_of(p) for p in paths]
    if len(paths) == 2 and sorted(directions) != ["a2b", "b2a"]:
        raise ForeignWeightsError(
            f"cyclegan import official: two files must be a run's *_net_G_A.pth and *_net_G_B.pth; got "
            f"{paths[0].name} and {paths[1].name}"
        )
    generators, configs, dropped = {}, [], 0
    for path, direction in zip(paths, directions):
        gcfg, layout, tensors = read_official(path)
        net, cfg, n = convert_generator(path, gcfg, layout, tensors)
        generators[direction] = net
        configs.append((path, cfg, layout.description))
        dropped += n
    if len(configs) == 2 and configs[0][1] != configs[1][1]:
        (p0, _, d0), (p1, _, d1) = configs
        raise ForeignWeightsError(f"{p1}: holds a {d1}, but {p0.name} a {d0}; G_A and G_B must share "
                                  "one architecture")
    path, cfg, description = configs[0]
    first = next(iter(generators.values()))
    architecture = f"official {description} ({count_parameters(first):,} parameters)"
    return Converted(config=cfg, generators=dict(sorted(generators.items())), architecture=architecture,
                     dropped=dropped)


