"""White-box Cartoonization's generator (SystemErrorWang/White-box-Cartoonization,
``test_code/saved_models/model-33999``): a TensorFlow-1 checkpoint of ``test_code/network.py``'s
``unet_generator`` under ``generator/``.

Variables: ``Conv`` .. ``Conv_9`` (slim convolutions, ``weights`` [kh, kw, in, out] and ``biases``)
and ``block_<i>/conv1``, ``block_<i>/conv2`` for the residual blocks (four in the release), 36
variables, 1,467,075 parameters at the released channel 32. The width (``channel`` = ngf) is read
from ``Conv/weights``; the four blocks of ``cartoonize.py`` are required. They fill the ``whitebox``
generator (``networks.whitebox``), which adds the guided filter ``cartoonize.py`` applies and takes
RGB like every model here (the publisher's BGR order is handled inside). Read without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cyclegan.config import GeneratorConfig
from cyclegan.importers.common import IMPORT_FORMATS, Converted, ForeignWeightsError
from cyclegan.importers.official import make_config
from cyclegan.importers.tfcheckpoint import TFCheckpoint, build_from_plan, first_kernel_width
from cyclegan.networks import count_parameters
from cyclegan.networks.whitebox import RESIDUAL_BLOCKS

SCOPE = "generator/"
FIRST = SCOPE + "Conv/weights"


def _conv(name: str) -> list[tuple[str, str]]:
    return [(f"{SCOPE}{name}/weights", "conv"), (f"{SCOPE}{name}/biases", "vector")]


def whitebox_plan(n_blocks: int) -> list[tuple[str, str]]:
    """(TF variable, kind) for each entry of ``WhiteBoxGenerator.state_dict()``, in its order."""
    plan = _conv("Conv") + [v for i in range(1, 5) for v in _conv(f"Conv_{i}")]
    plan += [v for b in range(n_blocks) for c in ("conv1", "conv2") for v in _conv(f"block_{b}/{c}")]
    return plan + [v for i in range(5, 10) for v in _conv(f"Conv_{i}")]


@IMPORT_FORMATS.register("whitebox")
def convert_whitebox(paths: Sequence[Path]) -> Converted:
    if len(paths) != 1:
        raise ForeignWeightsError(f"cyclegan import whitebox: expected one checkpoint prefix (e.g. "
                                  f"saved_models/model-33999), got {len(paths)} paths")
    ckpt = TFCheckpoint(paths[0])
    hint = (" (it looks like an AnimeGANv2 checkpoint: cyclegan import animeganv2-tf ...)"
            if any(n.startswith("generator/G_MODEL/") for n in ckpt.entries) else "")
    ngf = first_kernel_width(ckpt, FIRST, what="a White-box Cartoonization generator", hint=hint)
    description = f"White-box Cartoonization generator with channel {ngf}"
    cfg = make_config(GeneratorConfig(name="whitebox", ngf=ngf), path=ckpt.index_path)
    net, ignored = build_from_plan(ckpt, whitebox_plan(RESIDUAL_BLOCKS), cfg, scope=SCOPE,
                                   description=description)
    architecture = f"{description}, guided filter r 1 eps 5e-3 ({count_parameters(net):,} parameters)"
    if ignored:
        architecture += f"; {ignored} other variables of the checkpoint ignored"
    return Converted(config=cfg, generators={"a2b": net}, architecture=architecture,
                     sources=ckpt.files)
