"""Seed 004's GMS: sqrt(FID / IS) per direction, "Avg GMS" the mean over the two directions.

Seed 004 does not define GMS in words, but its results table pins it down: Raw -> Cartoon has
FID 46.70193, IS 2.41466 and GMS 4.39783 = sqrt(46.70193 / 2.41466); Cartoon -> Raw has 39.83461,
3.62382 and 3.31548; "Avg GMS" 3.85666 is their mean. Lower is better (low FID, high IS).
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
    """Mean of the per-direction GMS values (seed 004's "Avg GMS")."""
    vals = list(values)
    if not vals:
        raise ValueError("average_gms needs at least one value")
    return sum(vals) / len(vals)
