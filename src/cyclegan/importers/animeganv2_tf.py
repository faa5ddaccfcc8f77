"""AnimeGANv2 generators as the authors published them: TensorFlow-1 checkpoints
(TachibanaYoshino/AnimeGANv2, ``checkpoint/generator_{Hayao,Shinkai,Paprika}_weight/<Style>-<N>.ckpt``).

The checkpoint holds the trainable variables of ``net/generator.py``'s ``G_net`` under
``generator/G_MODEL/``: blocks ``A`` .. ``E`` of conv + layer-norm pairs (``Conv``, ``Conv_1``, ...
with ``weights``; ``LayerNorm``, ``LayerNorm_1``, ... with ``gamma`` and ``beta``), four inverted
residual blocks ``C/r1`` .. ``C/r4`` (``Conv`` expansion + ``LayerNorm``, depthwise ``rN/w`` and
``rN/bias`` + norm ``1``, ``Conv_1`` projection + norm ``2``) and ``out_layer/Conv``, the mapping
bryandlee/animegan2-pytorch's ``convert_weights.py`` documents. They fill the ``animeganv2_tf``
generator (``networks.animegan_tf``): the same layer table as ``animeganv2``, computing TF-1's
resize and layer norm so the output is the authors'. The width is read from ``A/Conv/weights``
([7, 7, 3, ngf/2]; ngf 64 for every release). Read without TensorFlow (``importers.tfcheckpoint``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cyclegan.config import GeneratorConfig
from cyclegan.importers.common import IMPORT_FORMATS, Converted, ForeignWeightsError
from cyclegan.importers.official import make_config
from cyclegan.importers.tfcheckpoint import TFCheckpoint, build_from_plan, first_kernel_width
from cyclegan.networks import count_parameters

SCOPE = "generator/G_MODEL/"
FIRST = SCOPE + "A/Conv/weights"
WHITEBOX_FIRST = "generator/Conv/weights"  # for the hint when the other TF format is given


def _conv_norm(block: str, i: int) -> list[tuple[str, str]]:
    suffix = f"_{i}" if i else ""
    return [(f"{SCOPE}{block}/Conv{suffix}/weights", "conv"),
            (f"{SCOPE}{block}/LayerNorm{suffix}/gamma", "vector"),
            (f"{SCOPE}{block}/LayerNorm{suffix}/beta", "vector")]


def _inverted_residual(r: str) -> list[tuple[str, str]]:
    base = f"{SCOPE}C/{r}/"
    return [(base + "Conv/weights", "conv"), (base + "LayerNorm/gamma", "vector"),
            (base + "LayerNorm/beta", "vector"),
            (base + f"{r}/w", "depthwise"), (base + f"{r}/bias", "vector"),
            (base + "1/gamma", "vector"), (base + "1/beta", "vector"),
            (base + "Conv_1/weights", "conv"), (base + "2/gamma", "vector"), (base + "2/beta", "vector")]


def animeganv2_plan() -> list[tuple[str, str]]:
    """(TF variable, kind) for each entry of ``AnimeGANv2Generator.state_dict()``, in its order."""
    plan = _conv_norm("A", 0) + _conv_norm("A", 1) + _conv_norm("A", 2)  # stem
    plan += _conv_norm("B", 0) + _conv_norm("B", 1)  # down
    plan += _conv_norm("C", 0)  # body
    for r in ("r1", "r2", "r3", "r4"):
        plan += _inverted_residual(r)
    plan += _conv_norm("C", 1)
    plan += _conv_norm("D", 0) + _conv_norm("D", 1)  # up1 (after the first resize)
    plan += _conv_norm("E", 0) + _conv_norm("E", 1) + _conv_norm("E", 2)  # up2
    return plan + [(f"{SCOPE}out_layer/Conv/weights", "conv")]


@IMPORT_FORMATS.register("animeganv2-tf")
def convert_animeganv2_tf(paths: Sequence[Path]) -> Converted:
    if len(paths) != 1:
        raise ForeignWeightsError(f"cyclegan import animeganv2-tf: expected one checkpoint prefix (e.g. "
                                  f"generator_Hayao_weight/Hayao-64.ckpt), got {len(paths)} paths")
    ckpt = TFCheckpoint(paths[0])
    hint = (" (it looks like a White-box Cartoonization checkpoint: cyclegan import whitebox ...)"
            if WHITEBOX_FIRST in ckpt.entries else "")
    ngf = 2 * first_kernel_width(ckpt, FIRST, what="an AnimeGANv2 TensorFlow generator", hint=hint)
    description = f"AnimeGANv2 TF generator with ngf {ngf}"
    cfg = make_config(GeneratorConfig(name="animeganv2_tf", ngf=ngf), path=ckpt.index_path)
    net, ignored = build_from_plan(ckpt, animeganv2_plan(), cfg, scope="generator/", description=description)
    architecture = f"{description} ({count_parameters(net):,} parameters)"
    if ignored:
        architecture += f"; {ignored} other variables of the checkpoint (optimizer, discriminator) ignored"
    return Converted(config=cfg, generators={"a2b": net}, architecture=architecture,
                     sources=ckpt.files)
