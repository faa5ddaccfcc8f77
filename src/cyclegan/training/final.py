"""The end of a run: its A -> B generator translates a few images it never trained on into
``<run>/final/``, through the same ``Translator`` as ``cyclegan translate`` (full size, same pre- and
post-processing), so a time-budgeted run ends with an answer to "what does it do to my photos?".

The held-aside images are the dataroot's ``testA/`` when it has one, else the ``data.val_fraction``
split of domain A; a run that asks for final translations with neither is refused before training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from cyclegan.config import Config
from cyclegan.data import check_files, find_images, resolve_domains
from cyclegan.errors import ConfigError, DataError
from cyclegan.image import load_image, save_image_atomic
from cyclegan.translate import Translator

FINAL_DIR = "final"


def held_aside_images(cfg: Config, val_a: Sequence | None) -> list:
    """The first ``train.final_translations`` images the run does not train on (paths, or images of a
    packed .npz); [] when none are asked for. Raises ConfigError when the run has none."""
    n = cfg.train.final_translations
    if not n:
        return []
    if cfg.data.dataroot:
        try:
            # only the first n are decoded (a test folder may hold thousands of images)
            test, _ = check_files(find_images(resolve_domains(cfg.data, "test")[0])[:n])
        except DataError:
            test = []  # no testA/ and testB/: the validation split, if any
        if test:
            return test
    if val_a:
        return [val_a[i] for i in range(min(n, len(val_a)))]
    raise ConfigError("train.final_translations: the run has no held-aside images (no testA/ and testB/ "
                      "beside trainA/, and data.val_fraction is 0); set data.val_fraction (e.g. 0.02) to "
                      "hold some out")


def write_final_translations(run_dir: Path, images: Sequence, *, device: torch.device) -> list[Path]:
    """Translate ``images`` with the run's newest checkpoint (its EMA generator when it has one) into
    ``run_dir/final/NNN_<name>.png``; returns the files written."""
    translator = Translator.from_checkpoint(run_dir, direction="a2b", device=str(device), precision="fp32")
    out = run_dir / FINAL_DIR
    out.mkdir(exist_ok=True)
    written = []
    for i, item in enumerate(images):
        img = item if isinstance(item, Image.Image) else load_image(item)
        name = f"{i:03d}" + (f"_{Path(item).stem}" if not isinstance(item, Image.Image) else "")
        written.append(save_image_atomic(translator(img), out / f"{name}.png"))
    return written
