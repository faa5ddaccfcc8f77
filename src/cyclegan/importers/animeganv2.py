"""AnimeGANv2 generators of the PyTorch port (bryandlee/animegan2-pytorch): face_paint_512_v1/v2,
paprika, celeba_distill and files trained with that code.

Key layout of the port's ``Generator``: ``block_a`` .. ``block_e`` sequences of conv-norm-LeakyReLU
blocks (``<block>.<i>.1.weight`` conv, ``<block>.<i>.2.{weight,bias}`` GroupNorm), four inverted residual
blocks at ``block_c.1`` .. ``block_c.4`` (``.layers.0`` expansion, ``.layers.1`` depthwise conv with
bias, ``.layers.2`` projection, ``.layers.3`` GroupNorm) and ``out_layer.0.weight``. Our
``networks.animegan`` generator has the same layer table under its own names; the width is read
from the first conv (ngf = 2 x its output channels; 64 for every released file).

The port's ``forward`` upsamples with align_corners=True by default (its torch.hub ``face2paint``
too), which is what the imported generator computes; its test.py script defaults to the other mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cyclegan.config import GeneratorConfig
from cyclegan.importers.common import IMPORT_FORMATS, Converted, Layout, no_layout, one_file, read_state_dict
from cyclegan.importers.official import convert_generator
from cyclegan.networks import count_parameters

EXPECTED = ("the AnimeGANv2 port's keys (block_a.0.1.weight [32, 3, 7, 7] ... out_layer.0.weight [3, 32, 1, "
            "1])")


def animegan_layout(ngf: int) -> Layout:
    layout = Layout(description=f"AnimeGANv2 generator with ngf {ngf}")

    def conv_norm(prefix: str, *, bias: bool = False) -> None:  # pad, conv, GroupNorm, LeakyReLU
        layout.conv(f"{prefix}.1", bias="stored" if bias else "absent")
        layout.norm(f"{prefix}.2", "group")

    for prefix in ("block_a.0", "block_a.1", "block_a.2", "block_b.0", "block_b.1", "block_c.0"):
        conv_norm(prefix)
    for i in range(1, 5):  # inverted residual blocks
        layers = f"block_c.{i}.layers"
        conv_norm(f"{layers}.0")
        conv_norm(f"{layers}.1", bias=True)  # depthwise
        layout.conv(f"{layers}.2", bias="absent")
        layout.norm(f"{layers}.3", "group")
    for prefix in ("block_c.5", "block_d.0", "block_d.1", "block_e.0", "block_e.1", "block_e.2"):
        conv_norm(prefix)
    layout.conv("out_layer.0", bias="absent")
    return layout


@IMPORT_FORMATS.register("animeganv2")
def convert_animeganv2(paths: Sequence[Path]) -> Converted:
    path = one_file(paths, "animeganv2", "the generator, e.g. face_paint_512_v2.pt")
    tensors = read_state_dict(path)
    first = tensors.get("block_a.0.1.weight")
    if first is None or first.ndim != 4 or tuple(first.shape[1:]) != (3, 7, 7):
        raise no_layout(path, "animeganv2", EXPECTED, tensors)
    ngf = 2 * int(first.shape[0])
    layout = animegan_layout(ngf)
    net, cfg, dropped = convert_generator(path, GeneratorConfig(name="animeganv2", ngf=ngf), layout, tensors)
    return Converted(config=cfg, generators={"a2b": net}, dropped=dropped,
                     architecture=f"{layout.description} ({count_parameters(net):,} parameters)")
