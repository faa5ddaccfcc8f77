"""``cyclegan analyze video INPUT OUTPUT``: how much a translated video flickers.

Decodes the input video and its translation side by side (PyAV, two frames in memory at a time),
scales the translation to the input's size when they differ, and measures the warping error of
Lai et al. (ECCV 2018; ``cyclegan.metrics.warping``) of the translation and of the input itself (the
floor: what motion and the flow's own errors cost). A translation with no flicker of its own sits
near the floor; per-frame CycleGAN output typically sits several times above it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cyclegan.errors import EvaluationError
from cyclegan.fileio import write_json_atomic
from cyclegan.metrics.warping import WarpingError, warping_error
from cyclegan.temporal import require_opencv

__all__ = ["analyze_video", "format_video_table", "read_video_frames"]

UNITS = ("mean absolute difference of 8-bit values / 255 over non-occluded pixels (0 = no change along the "
         "flow)")


def read_video_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """The frames of ``path``'s first video stream as [H, W, 3] uint8 RGB, one at a time."""
    try:
        import av  # extra: video (PyAV)
    except ImportError:
        raise EvaluationError(f"{path}: reading video needs PyAV (pip install 'cyclegan[video]')") from None
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise EvaluationError(f"{path}: cannot open video ({e})") from None
    count = 0
    try:
        if not container.streams.video:
            raise EvaluationError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")  # [H, W, 3] uint8
            count += 1
    except av.error.FFmpegError as e:
        raise EvaluationError(f"{path}: corrupt video data after frame {count} ({e})") from None
    finally:
        container.close()


def _aligned(
    outs: Iterator[np.ndarray], ins: Iterator[np.ndarray], output_path: Path, input_path: Path
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(output, input) frame pairs, the output scaled to the input's size where they differ (a
    translation made with --max-side: the warping error needs one pixel grid); a video that ends
    before the other is an error naming both frame counts."""
    cv2 = require_opencv("analyze video", EvaluationError)
    n = 0
    missing = object()
    while True:
        y, x = next(outs, missing), next(ins, missing)
        if y is missing and x is missing:
            return
        if y is missing or x is missing:
            n_out = n + (y is not missing) + sum(1 for _ in outs)
            n_in = n + (x is not missing) + sum(1 for _ in ins)
            raise EvaluationError(
                f"{output_path}: {n_out} frames, but {input_path} has {n_in}; "
                "the warping error compares the two videos frame by frame"
            )
        if y.shape[:2] != x.shape[:2]:
            y = cv2.resize(y, (x.shape[1], x.shape[0]), interpolation=cv2.INTER_AREA)
        n += 1
        yield y, x


def analyze_video(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    json_out: str | os.PathLike | None = None,
    preset: str = "medium",
    progress: bool = False,
) -> dict:
    """The warping error of ``output_path`` (a translation of ``input_path``) and of the input.

    Returns a JSON-able dict (also written atomically to ``json_out`` when given): ``warping_error``,
    ``input_warping_error``, their ratio, Lai et al.'s squared variant, frame and pair counts, the
    share of pixels the occlusion mask kept, and the per-pair values. ``preset``: DIS preset of the
    input's flow (``medium``: the most accurate; the metric runs offline).
    """
    input_path, output_path = Path(input_path), Path(output_path)
    with contextlib.closing(read_video_frames(input_path)) as src, \
            contextlib.closing(read_video_frames(output_path)) as dst:
        pairs = _aligned(dst, src, output_path, input_path)
        with contextlib.ExitStack() as stack:
            if progress:
                pairs = stack.enter_context(
                    tqdm(pairs, unit="frame", dynamic_ncols=True, file=sys.stderr, desc=output_path.name)
                )
            # tee holds at most one pair: warping_error reads the two streams in step.
            a, b = itertools.tee(pairs)
            result = warping_error((p[0] for p in a), (p[1] for p in b), preset=preset)
    report = _report(result, input_path, output_path, preset)
    if json_out is not None:
        write_json_atomic(json_out, report)
    return report


def _report(result: WarpingError, input_path: Path, output_path: Path, preset: str) -> dict:
    ratio = result.mean / result.input_mean if result.input_mean > 0 else float("inf")
    return {
        "input": str(input_path),
        "output": str(output_path),
        "metric": "warping error (Lai et al., ECCV 2018)",
        "units": UNITS,
        "flow": f"OpenCV DIS, preset {preset}, from the input video",
        "ratio_to_input": ratio,
        **result.as_dict(),
    }


def format_video_table(report: dict) -> str:
    """A short text table of ``analyze_video``'s result."""

    def fmt(v) -> str:
        return "n/a" if v is None or not np.isfinite(v) else f"{v:.4f}"

    rows = [
        ("output", Path(report["output"]).name, report["warping_error"], report["warping_error_sq"]),
        ("input (floor)", Path(report["input"]).name, report["input_warping_error"],
         report["input_warping_error_sq"]),
    ]
    width = max(len(r[1]) for r in rows)
    lines = [f"{'video':<14} {'file':<{width}}  {'warping error':>13}  {'squared':>9}"]
    for role, name, err, sq in rows:
        lines.append(f"{role:<14} {name:<{width}}  {fmt(err):>13}  {fmt(sq):>9}")
    ratio = report["ratio_to_input"]
    lines.append(
        f"{report['pairs']} frame pairs, {100 * report['mean_kept_fraction']:.0f} % of pixels outside "
        "occlusions; output / input = "
        f"{'n/a' if ratio is None or not np.isfinite(ratio) else f'{ratio:.2f}x'}"
    )
    return "\n".join(lines)
