"""Sample grids: the fixed images through the generators at epoch ends, written to ``samples/``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from cyclegan.devices import autocast
from cyclegan.errors import RunDirError, plain_reason
from cyclegan.image import make_grid, save_image_atomic, to_uint8
from cyclegan.training.step import TrainStep


@torch.no_grad()
def sample_grid(step: TrainStep, fixed: dict[str, Tensor]):
    """The sample grid of ``step.sample_rows`` on the fixed images, networks in eval mode."""
    step.models.train(False)
    try:
        with autocast(step.device, step.cfg.train.precision):
            rows = step.sample_rows(fixed)
        return make_grid([to_uint8(r.float()).cpu() for r in rows])
    finally:
        step.models.train(True)


def save_sample(grid, path: Path) -> None:
    """Write a sample grid; a full disk is one line naming the file, not a traceback."""
    try:
        save_image_atomic(grid, path)
    except OSError as e:
        raise RunDirError(f"{path}: could not write the sample grid ({plain_reason(e)})") from None

