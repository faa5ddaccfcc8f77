"""CUT / FastCUT generators saved by the CUT authors' code (taesungp/contrastive-unpaired-translation).

Their ResNet generator is the CycleGAN authors' layout with anti-aliased resampling by default: each
downsampling is conv (stride 1), norm, ReLU and a blur-pool layer, each upsampling a blur upsampling
layer, conv3x3, norm, ReLU. The blur layers' only state is their fixed binomial filter (``filt``,
[channels, 1, n, n]; n = 3 down and 4 up by default), from which the filter sizes are read; the
filters themselves are checked and not stored, since our generator derives them from its config
(``model.generator.antialias``). Files trained with --no_antialias / --no_antialias_up import too.
The result is a one-sided model (model.kind cut): one generator, A -> B. The same architecture
trains FastCUT; the checkpoint says cut, which only matters for further training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cyclegan.importers.common import (
    IMPORT_FORMATS,
    Converted,
    ForeignWeightsError,
    one_file,
    read_state_dict,
)
from cyclegan.importers.official import convert_generator, resnet_layout
from cyclegan.networks import count_parameters


@IMPORT_FORMATS.register("cut")
def convert_cut(paths: Sequence[Path]) -> Converted:
    path = one_file(paths, "cut", "the generator, e.g. latest_net_G.pth")
    tensors = read_state_dict(path)
    if "model.model.0.weight" in tensors:
        raise ForeignWeightsError(f"{path}: a U-Net generator; CUT's U-Net is the CycleGAN authors' layout: "
                                  "cyclegan import official ...")
    gcfg, layout = resnet_layout(tensors, path=path, fmt="cut", allow_antialias=True)
    net, cfg, dropped = convert_generator(path, gcfg, layout, tensors, kind="cut")
    return Converted(config=cfg, generators={"a2b": net}, dropped=dropped,
                     architecture=f"CUT {layout.description} ({count_parameters(net):,} parameters)")
