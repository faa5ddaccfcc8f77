"""Growing resolution (``train.resolution_schedule``): a run trains on small random crops of each
batch first and on larger ones later, then at ``data.crop_size``, so its first thousands of
iterations cost a fraction of a full-size one each.

The crops are taken at the images' own scale (a 64-px window of the usual 256-px training crop, not the
crop shrunk to 64 px): a fully convolutional translator then meets strokes, outlines and textures at
the scale it will translate them, and only its view of the whole scene grows. This is the cheap half of
progressive growing (Karras et al., ICLR 2018, sec. 3, grow the resolution during training) without
new layers, and the patch-based training that CartoonGAN-style translators use anyway.

The schedule is text, ``"SIZE:UNTIL,SIZE:UNTIL,..."``: crops of SIZE pixels until iteration UNTIL (the
run's global iteration count), sizes growing, each below ``data.crop_size``; from the last UNTIL on the
batches are used whole. Each crop's position is drawn from its own generator seeded by (train.seed,
iteration, domain), never from the global RNG, so a resume is bitwise whatever stage it resumes in.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Stage:
    size: int  # side of the square random crops, in pixels
    until_step: int  # used for the run's iterations [previous stage's until_step, until_step)


def parse_schedule(text: str) -> tuple[Stage, ...]:
    """``"64:2000,128:4000"`` -> (Stage(64, 2000), Stage(128, 4000)); ``""`` -> () (no schedule).
    Raises ValueError naming the part that is not ``SIZE:UNTIL`` or breaks the order."""
    if not text.strip():
        return ()
    stages = []
    for part in text.split(","):
        size, sep, until = part.strip().partition(":")
        if not sep or not size.strip().isdigit() or not until.strip().isdigit():
            raise ValueError(f"{part.strip()!r} is not SIZE:UNTIL_STEP (two whole numbers, e.g. 64:2000)")
        stages.append(Stage(size=int(size), until_step=int(until)))
    for before, after in itertools.pairwise(stages):
        if after.size <= before.size or after.until_step <= before.until_step:
            raise ValueError("sizes and steps must both grow from one stage to the next "
                             f"({before.size}:{before.until_step} then {after.size}:{after.until_step})")
    if stages[0].size < 8 or stages[0].until_step < 1:
        raise ValueError(f"the first stage {stages[0].size}:{stages[0].until_step} needs a size >= 8 and a "
                         "step >= 1")
    return tuple(stages)


def size_at(stages: tuple[Stage, ...], step: int) -> int | None:
    """The crop side for the iteration that follows ``step`` completed iterations; None once the
    schedule is over (the batches are used whole)."""
    for stage in stages:
        if step < stage.until_step:
            return stage.size
    return None


def stage_changes(stages: tuple[Stage, ...], step: int) -> bool:
    """Whether the iteration after ``step`` completed ones is the first of a new stage (not the first
    iteration of the run): what was sized for the previous stage (image pools) must be let go."""
    return step > 0 and size_at(stages, step) != size_at(stages, step - 1)


def random_crops(images: Tensor, size: int, *, seed: int, step: int, stream: int) -> Tensor:
    """[B, C, H, W] -> [B, C, size, size], each image cut at its own position. The positions come from
    a generator seeded by (``seed``, ``step``, ``stream``), so they repeat on a resume and differ
    between domains (``stream``) and iterations. Images already ``size`` wide or smaller in a side are
    returned unchanged in that side."""
    b, _, h, w = images.shape
    if h <= size and w <= size:
        return images
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step) * 4 + stream)
    tops = torch.randint(0, max(h - size, 0) + 1, (b,), generator=gen).tolist()
    lefts = torch.randint(0, max(w - size, 0) + 1, (b,), generator=gen).tolist()
    return torch.stack([img[:, t:t + size, s:s + size] for img, t, s in zip(images, tops, lefts)])


def crop_batch(batch: dict[str, Tensor], size: int, *, seed: int, step: int) -> dict[str, Tensor]:
    """Every image tensor of a training batch ({"A", "B", "A_smooth", ...}: [B, C, H, W]) cut to
    ``size``; tensors of one domain (same first letter: "B" and "B_smooth", an image and its
    edge-smoothed copy) share their crop positions."""
    return {key: random_crops(value, size, seed=seed, step=step, stream="AB".index(key[0]))
            if key[:1] in ("A", "B") and value.dim() == 4 else value
            for key, value in batch.items()}
