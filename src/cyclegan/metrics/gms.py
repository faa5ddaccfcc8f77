"""GMS: sqrt(FID / IS) per direction, "Avg GMS" the mean over the two directions.

A single number that falls with FID (Heusel et al., NeurIPS 2017) and rises with IS (Salimans et al.,
NeurIPS 2016): lower is better. It is not a published metric; it is reported here because CycleGAN
course projects compare runs by it. For example FID 46.70193 and IS 2.41466 give GMS
sqrt(46.70193 / 2.41466) = 4.39783; with 39.83461 and 3.62382 (3.31548) the "Avg GMS" is 3.85666.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["average_gms", "gms"]


def gms(*, fid: float, inception_score: float) -> float:
    """sqrt(FID / IS) for one translation direction."""
    if inception_score <= 0:
        raise ValueError(f"inception_score must be > 0, got {inception_score}")
    if fid < 0:
        raise ValueError(f"fid must be >= 0, got {fid}")
    return math.sqrt(fid / inception_score)


def average_gms(values: Iterable[float]) -> float:
    """Mean of the per-direction GMS values ("Avg GMS")."""
    vals = list(values)
    if not vals:
        raise ValueError("average_gms needs at least one value")
    return sum(vals) / len(vals)
