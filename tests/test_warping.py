"""The warping error (cyclegan.metrics.warping, Lai et al. 2018) on videos whose answer is known, and
`analyze video` (cyclegan.analyze.video) on video files."""

from __future__ import annotations

import json

import av  # the `video` extra, which `.[dev]` installs
import cv2  # the `prep` extra, likewise
import numpy as np
import pytest
from test_temporal import constant_flow, pan, texture

from cyclegan.analyze.video import analyze_video, format_video_table
from cyclegan.errors import EvaluationError
from cyclegan.metrics.warping import masked_warping_error, warping_error


def test_a_static_video_has_zero_warping_error():
    frame = texture(48, 64)
    result = warping_error([frame] * 5, [frame] * 5)
    assert result.pairs == 4 and result.frames == 5
    assert result.mean < 1e-4 and result.input_mean < 1e-4
    assert result.kept > 0.99


def test_independent_noise_frames_have_a_high_warping_error():
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(4)]
    frames = pan(texture(64, 96, seed=1), 4, 48, (3, 0))  # the input moves smoothly
    result = warping_error(noise, frames)
    # Two independent uniform values differ by 1/3 of the range on average.
    assert result.mean == pytest.approx(1 / 3, abs=0.03)
    assert result.input_mean < 0.02  # the input's own warping error: the floor


def test_a_global_colour_flicker_on_a_pan_is_measured_exactly():
    n = 6
    frames = pan(texture(80, 120, seed=2), n, 64, (5, 2))
    shifts = np.array([[0, 0, 0], [12, -6, 3], [0, 9, 0], [-15, 0, 6], [3, 3, 3], [0, 0, -9]])
    styled = [(f.astype(np.int16) + c).astype(np.uint8) for f, c in zip(frames, shifts)]
    result = warping_error(styled, frames)
    expected = [np.abs(shifts[t] - shifts[t - 1]).mean() / 255 for t in range(1, n)]
    # An integer pan warps exactly; DIS's sub-pixel residue adds a little interpolation error.
    np.testing.assert_allclose(result.per_pair, np.array(expected) + result.input_per_pair, atol=0.003)
    # The squared variant (Lai et al.'s code) follows from the same shifts.
    sq = np.mean([np.mean(np.square((shifts[t] - shifts[t - 1]) / 255)) for t in range(1, n)])
    assert result.mean_sq == pytest.approx(sq, rel=0.1)


def test_masked_warping_error_with_a_known_flow_and_mask():
    prev = texture(30, 40, seed=3)
    cur = np.roll(prev, 2, axis=1)  # cur[y, x] = prev[y, x - 2]
    flow = constant_flow(30, 40, -2, 0)
    keep = np.ones((30, 40), bool)
    keep[:, :2] = False  # the strip that entered the frame
    err, err_sq = masked_warping_error(cur, prev, flow, keep)
    assert err == 0 and err_sq == 0
    assert masked_warping_error(cur, prev, flow, np.zeros((30, 40), bool)) is None
    err_all, _ = masked_warping_error(cur, prev, flow, np.ones((30, 40), bool))
    assert err_all > 0  # without the mask the wrapped-around strip counts


def test_mismatched_videos_are_one_line_errors():
    a = texture(32, 32)
    with pytest.raises(EvaluationError, match="differ in length"):
        warping_error([a, a, a], [a, a])
    with pytest.raises(EvaluationError, match="differ in size"):
        warping_error([a[:16], a[:16]], [a, a])
    with pytest.raises(EvaluationError, match="at least 2 frames"):
        warping_error([a], [a])


# ------------------------------------------------------------------------ analyze video (PyAV files)


def _write_video(path, frames) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=12)  # lossless: the test measures our flicker, not the codec's
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "bgr0"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def test_analyze_video_reports_output_and_input_and_writes_json(tmp_path):
    frames = pan(texture(80, 120, seed=4), 8, 64, (4, 1))
    shifts = np.random.default_rng(5).integers(-12, 13, size=(8, 3))
    flicker = [(f.astype(np.int16) + c).astype(np.uint8) for f, c in zip(frames, shifts)]
    _write_video(tmp_path / "in.mkv", frames)
    _write_video(tmp_path / "out.mkv", flicker)
    # The same translation at half size (--max-side 32) is scaled back to the input's grid.
    _write_video(tmp_path / "small.mkv",
                 [cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in flicker])

    report = analyze_video(tmp_path / "in.mkv", tmp_path / "out.mkv", json_out=tmp_path / "r" / "we.json")
    direct = warping_error(flicker, frames)
    assert report["warping_error"] == pytest.approx(direct.mean, rel=1e-6)
    assert report["frames"] == 8 and report["pairs"] == 7
    assert report["ratio_to_input"] > 3
    assert json.loads((tmp_path / "r" / "we.json").read_text())["input_warping_error"] == pytest.approx(
        direct.input_mean)
    table = format_video_table(report)
    assert "input (floor)" in table and "out.mkv" in table

    small = analyze_video(tmp_path / "in.mkv", tmp_path / "small.mkv")
    assert small["ratio_to_input"] > 3


def test_analyze_video_refuses_videos_of_different_lengths_and_missing_files(tmp_path):
    frames = pan(texture(60, 90, seed=6), 6, 48, (3, 0))
    _write_video(tmp_path / "in.mkv", frames)
    _write_video(tmp_path / "short.mkv", frames[:4])
    with pytest.raises(EvaluationError, match=r"short.mkv: 4 frames, but .*in.mkv has 6"):
        analyze_video(tmp_path / "in.mkv", tmp_path / "short.mkv")
    with pytest.raises(EvaluationError, match="nope.mp4: no such video file"):
        analyze_video(tmp_path / "in.mkv", tmp_path / "nope.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(EvaluationError, match="junk.mp4: cannot open video"):
        analyze_video(tmp_path / "junk.mp4", tmp_path / "in.mkv")
