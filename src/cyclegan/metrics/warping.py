"""Warping error: the standard measure of temporal consistency (Lai et al., "Learning Blind Video
Temporal Consistency", ECCV 2018, sec. 5.1).

For each pair of consecutive frames, the output frame t-1 is warped into frame t along the optical
flow of the *input* video, and the warping error of the pair is the mean absolute difference between
output frame t and that warp over the pixels the occlusion mask keeps (non-occluded, inside the
frame, off motion boundaries); the video's warping error is the mean over its pairs. The flow comes
from the input because the output's own flow would follow its flicker. The same number for the
input video itself is the floor: what motion, interpolation and flow errors alone cost.

Units: absolute differences of uint8 values / 255, averaged over the kept pixels and the three
channels -- 0 for a perfectly consistent video, 1/255 ~ 0.0039 per grey level. Lai et al.'s
published code averages *squared* differences (images in [0, 1]); that variant is reported as
``mean_sq`` alongside, for comparison with their tables. Their flow is FlowNet 2; here it is OpenCV's
DIS flow (MEDIUM preset: the metric runs offline, so it buys the most accurate preset), so absolute
values are comparable between videos measured here, not with their tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from cyclegan.errors import EvaluationError
from cyclegan.temporal import FLOW_PRESETS, compute_flow, occlusion_mask, require_opencv, to_gray, warp

__all__ = ["WarpingError", "masked_warping_error", "warping_error"]


@dataclass(frozen=True)
class WarpingError:
    """Per-pair and mean warping error of a video and of its input (the floor), in [0, 1] units.

    ``per_pair[i]`` is the pair (frame i, frame i+1); None where the mask kept no pixel (a scene cut,
    a flash), and such pairs are left out of the means. ``kept`` is the mean share of pixels the
    occlusion mask kept.
    """

    mean: float
    mean_sq: float
    input_mean: float
    input_mean_sq: float
    pairs: int
    frames: int
    kept: float
    per_pair: list[float | None] = field(repr=False)
    input_per_pair: list[float | None] = field(repr=False)

    def as_dict(self) -> dict:
        return {
            "warping_error": self.mean,
            "warping_error_sq": self.mean_sq,
            "input_warping_error": self.input_mean,
            "input_warping_error_sq": self.input_mean_sq,
            "pairs": self.pairs,
            "frames": self.frames,
            "pairs_without_valid_pixels": sum(v is None for v in self.per_pair),
            "mean_kept_fraction": self.kept,
            "per_pair": self.per_pair,
            "input_per_pair": self.input_per_pair,
        }


def masked_warping_error(
    cur: np.ndarray, prev: np.ndarray, flow: np.ndarray, keep: np.ndarray
) -> tuple[float, float] | None:
    """(mean |cur - warp(prev, flow)|, mean squared) over the ``keep`` pixels, in [0, 1] units, or None
    when ``keep`` is empty. ``cur``/``prev``: [H, W, 3] uint8 (or float in 0..255); ``flow``: cur ->
    prev [H, W, 2]; ``keep``: [H, W] bool."""
    n = int(np.count_nonzero(keep))
    if n == 0:
        return None
    warped = warp(np.ascontiguousarray(prev, dtype=np.float32), flow)
    diff = (cur.astype(np.float32) - warped)[keep] / 255.0  # [n, C]
    return float(np.abs(diff).mean()), float(np.square(diff).mean())


def _mean(values: list[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else float("nan")


def warping_error(
    frames_out: Iterable[np.ndarray],
    frames_in: Iterable[np.ndarray],
    *,
    preset: str = "medium",
    motion_boundaries: bool = True,
) -> WarpingError:
    """The warping error of ``frames_out`` (a translation of ``frames_in``) and of ``frames_in`` itself.

    Both are iterables of [H, W, 3] uint8 frames of one size, in order and of equal length; they are
    read once, two frames at a time (bounded memory). ``preset``: the DIS preset for the input's flow.
    Raises EvaluationError for mismatched sizes or lengths, or fewer than two frames.
    """
    require_opencv("the warping error", EvaluationError)
    if preset not in FLOW_PRESETS:
        raise EvaluationError(f"flow preset {preset!r}: choose from {', '.join(FLOW_PRESETS)}")
    per, per_sq, inp, inp_sq, kept = [], [], [], [], []
    prev_in = prev_gray = prev_out = None
    missing = object()
    it_out, it_in = iter(frames_out), iter(frames_in)
    t = 0
    while True:
        y, x = next(it_out, missing), next(it_in, missing)
        if y is missing and x is missing:
            break
        if y is missing or x is missing:
            raise EvaluationError(
                f"the output and input videos differ in length (one ended after {t} frames)")
        if y.shape[:2] != x.shape[:2]:
            raise EvaluationError(
                f"frame {t}: output {y.shape[1]}x{y.shape[0]} and input {x.shape[1]}x{x.shape[0]} differ in "
                "size"
            )
        gray = to_gray(x)
        if prev_gray is not None:
            if gray.shape != prev_gray.shape:
                raise EvaluationError(f"frame {t}: the frame size changes within the video")
            back = compute_flow(gray, prev_gray, preset=preset)  # t -> t-1
            fwd = compute_flow(prev_gray, gray, preset=preset)  # t-1 -> t
            keep = ~occlusion_mask(back, fwd, motion_boundaries=motion_boundaries)
            kept.append(float(keep.mean()))
            for values, sq, cur, prev in ((per, per_sq, y, prev_out), (inp, inp_sq, x, prev_in)):
                err = masked_warping_error(cur[..., :3], prev[..., :3], back, keep)
                values.append(None if err is None else err[0])
                sq.append(None if err is None else err[1])
        prev_in, prev_gray, prev_out = x, gray, y
        t += 1
    if t < 2:
        raise EvaluationError(f"the warping error needs at least 2 frames, got {t}")
    return WarpingError(
        mean=_mean(per), mean_sq=_mean(per_sq), input_mean=_mean(inp), input_mean_sq=_mean(inp_sq),
        pairs=t - 1, frames=t, kept=float(np.mean(kept)), per_pair=per, input_per_pair=inp,
    )
