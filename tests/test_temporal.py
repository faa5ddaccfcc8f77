"""Temporal consistency (cyclegan.temporal): warping and occlusion against hand-made flows, scene cuts,
the per-pixel age bound, the old blend formula, and bounded memory on a long stream."""

from __future__ import annotations

import itertools
import tracemalloc

import cv2  # the `prep` extra, which `.[dev]` installs
import numpy as np
import pytest
from click.testing import CliRunner

from cyclegan.cli import main
from cyclegan.errors import TranslateError
from cyclegan.metrics.warping import warping_error
from cyclegan.temporal import (
    TemporalStabilizer,
    compute_flow,
    flow_preset,
    frame_difference,
    occlusion_mask,
    scene_cut,
    stabilize,
    warp,
)


def texture(h: int, w: int, seed: int = 0, blur: float = 2.0) -> np.ndarray:
    """A smooth random RGB texture in [40, 215] (DIS needs texture; the margins keep colour shifts
    unclipped)."""
    rng = np.random.default_rng(seed)

    def field(channels):
        x = cv2.GaussianBlur(rng.random((h, w, channels), dtype=np.float32), (0, 0), blur).reshape(h, w,
                                                                                                   channels)
        return np.clip((x - x.mean()) / (4 * x.std()) + 0.5, 0, 1)  # photo-like contrast

    # Mostly luminance, as photos are: the flow and the cut test look at grey levels.
    x = 0.75 * field(1) + 0.25 * field(3)
    return (40 + 175 * x).astype(np.uint8)


def pan(canvas: np.ndarray, n: int, size: int, step: tuple[int, int]) -> list[np.ndarray]:
    """Frames of a camera panning over ``canvas`` by ``step`` = (dx, dy) pixels per frame."""
    return [canvas[4 + t * step[1]: 4 + t * step[1] + size, 4 + t * step[0]: 4 + t * step[0] + size]
            for t in range(n)]


def constant_flow(h: int, w: int, dx: float, dy: float) -> np.ndarray:
    flow = np.empty((h, w, 2), np.float32)
    flow[..., 0], flow[..., 1] = dx, dy
    return flow


# ------------------------------------------------------------------------------ warping, occlusion


def test_warp_by_a_known_shift_matches_the_shifted_frame():
    img = texture(40, 50)
    warped = warp(img, constant_flow(40, 50, 3, -2))  # out[y, x] = img[y - 2, x + 3]
    np.testing.assert_array_equal(warped[2:, :-3], img[:-2, 3:])
    # Outside the source: the nearest edge pixel (replicated), never black.
    np.testing.assert_array_equal(warped[5:, -1], img[3:-2, -1])
    # Sub-pixel: bilinear, the mean of the two neighbours.
    half = warp(img.astype(np.float32), constant_flow(40, 50, 0.5, 0))
    np.testing.assert_allclose(half[:, :-1], (img[:, :-1].astype(np.float32) + img[:, 1:]) / 2, atol=0.02)


def test_the_strip_that_leaves_the_frame_is_masked():
    h, w = 24, 30
    mask = occlusion_mask(constant_flow(h, w, 4, 0), constant_flow(h, w, -4, 0))
    assert not mask[:, : w - 4].any()
    assert mask[:, w - 4:].all()


def test_a_disoccluded_strip_behind_a_moving_object_is_masked():
    # Frame A: an object in columns 10..19 over a static background; in frame B it has moved 5 px
    # right (columns 15..24), covering A's background columns 20..24.
    h, w = 20, 40
    a_to_b = np.zeros((h, w, 2), np.float32)
    a_to_b[:, 10:20, 0] = 5
    b_to_a = np.zeros((h, w, 2), np.float32)
    b_to_a[:, 15:25, 0] = -5
    mask = occlusion_mask(a_to_b, b_to_a, motion_boundaries=False)
    expected = np.zeros((h, w), bool)
    expected[:, 20:25] = True  # A's background that B covers: its flow goes to B and does not come back
    np.testing.assert_array_equal(mask, expected)
    # The motion-boundary test adds the object's left and right edges (where the flow jumps).
    edges = occlusion_mask(a_to_b, b_to_a) & ~mask
    assert set(np.flatnonzero(edges.any(axis=0))) == {9, 19}


def test_dis_flow_recovers_a_known_shift():
    img = texture(96, 96)
    moved = np.roll(img, (2, -3), axis=(0, 1))  # moved[y, x] = img[y - 2, x + 3]
    flow = compute_flow(moved, img, preset="medium")  # moved -> img: (dx, dy) = (3, -2)
    inner = flow[16:-16, 16:-16].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, axis=0), [3, -2], atol=0.1)
    assert flow_preset(256, 256) == "medium" and flow_preset(512, 512) == "fast"
    assert flow_preset(2160, 3840) == "ultrafast"


# ------------------------------------------------------------------------------------ scene cuts


def test_scene_cut_tells_a_cut_from_fast_motion():
    a, b = texture(80, 80, seed=1), texture(80, 80, seed=2)
    canvas = texture(80, 140, seed=3)
    # A pan of 10 % of the width per frame differs a lot pixel by pixel but is not a cut.
    assert frame_difference(canvas[:, :80], canvas[:, 8:88]) > 0.05
    assert not scene_cut(canvas[:, :80], canvas[:, 8:88])
    assert scene_cut(a, b)


def test_the_stabiliser_resets_at_a_scene_cut():
    size = 64
    frames = pan(texture(80, 140, seed=4), 6, size, (3, 0)) + pan(texture(80, 140, seed=5), 6, size, (3, 0))
    rng = np.random.default_rng(0)
    styled = [np.clip(f.astype(np.int16) + rng.integers(-20, 21, 3), 0, 255).astype(np.uint8) for f in frames]
    stab = TemporalStabilizer(mode="flow", strength=0.8)
    outs, cuts = [], []
    for x, y in zip(frames, styled):
        outs.append(stab(x, y))
        cuts.append(stab.last_cut)
    assert cuts == [False] * 6 + [True] + [False] * 5
    np.testing.assert_array_equal(outs[6], styled[6])  # nothing of the old shot carries over
    assert not np.array_equal(outs[7], styled[7])  # and the new shot is stabilised again


# --------------------------------------------------------------------------------- the stabiliser


def test_flow_mode_cuts_the_flicker_of_a_pan_by_the_expected_amount():
    # A "model" that flickers by design: the identity plus a random colour shift per frame. Along the
    # flow, flow mode is an exponential moving average of the shifts, e_t = s e_(t-1) + (1 - s) c_t,
    # so the warping error of pair t is mean |e_t - e_(t-1)| instead of mean |c_t - c_(t-1)|.
    n, s = 16, 0.7
    frames = pan(texture(112, 200, seed=6), n, 80, (4, 1))
    shifts = np.random.default_rng(1).normal(0, 6, size=(n, 3)).round()
    styled = [(f.astype(np.float32) + c).astype(np.uint8) for f, c in zip(frames, shifts)]
    outs = list(stabilize(frames, styled, mode="flow", strength=s, max_age=1000))

    ema = [shifts[0]]
    for c in shifts[1:]:
        ema.append(s * ema[-1] + (1 - s) * c)
    expected = np.mean([np.abs(ema[t] - ema[t - 1]).mean() for t in range(1, n)]) / 255
    per_frame = np.mean([np.abs(shifts[t] - shifts[t - 1]).mean() for t in range(1, n)]) / 255

    base = warping_error(styled, frames)
    assert base.mean == pytest.approx(per_frame, rel=0.1)  # the metric sees the flicker it was given
    stable = warping_error(outs, frames)
    # Interpolation, the frame border and the soft mask edge add a little; the flicker goes.
    assert stable.mean == pytest.approx(expected, rel=0.25, abs=0.001)
    assert stable.mean < 0.5 * base.mean
    # Off leaves frames alone.
    assert all(a is b for a, b in zip(stabilize(frames, styled, mode="off"), styled))


def test_a_pixel_inherits_for_at_most_max_age_frames():
    frame = texture(48, 48, seed=7)
    styled = [np.full((48, 48, 3), 100 + 10 * (t % 2), np.uint8) for t in range(12)]
    stab = TemporalStabilizer(mode="flow", strength=0.5, max_age=4)
    outs = [stab(frame, y) for y in styled]
    fresh = [t for t in range(12) if np.array_equal(outs[t], styled[t])]
    # Frame 0 starts the shot; a pixel then inherits on frames 1..4 and is refreshed on frame 5.
    assert fresh == [0, 5, 10]


def test_blend_mode_is_the_former_temporal_smoothing_bit_for_bit():
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (9, 11, 3), dtype=np.uint8) for _ in range(6)]
    alpha = 0.35
    # The loop of video.translate_video before the temporal module existed (git 2cfd751).
    prev, old = None, []
    for y in frames:
        cur = y.astype(np.float32)
        if prev is not None:
            cur = alpha * prev + (1.0 - alpha) * cur
        prev = cur
        old.append(np.clip(np.rint(cur), 0, 255).astype(np.uint8))
    new = list(stabilize(frames, frames, mode="blend", strength=alpha))
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a, b)


def test_resized_outputs_and_size_changes_are_handled():
    frames = pan(texture(100, 160, seed=8), 4, 64, (2, 0))
    styled = [cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in frames]  # --max-side 32
    outs = list(stabilize(frames, styled, mode="flow"))
    assert [o.shape for o in outs] == [(32, 32, 3)] * 4
    stab = TemporalStabilizer(mode="flow")
    stab(frames[0], frames[0])
    small = frames[1][:40, :40]
    np.testing.assert_array_equal(stab(small, small), small)  # a new size starts afresh


def test_bad_options_and_uneven_streams_are_one_line_errors():
    with pytest.raises(TranslateError, match="--temporal-strength"):
        TemporalStabilizer(strength=1.0)
    with pytest.raises(TranslateError, match="choose from off, blend, flow"):
        TemporalStabilizer(mode="optical")
    frames = [texture(16, 16)] * 3
    with pytest.raises(TranslateError, match="differ in length"):
        list(stabilize(frames, frames[:2], mode="flow"))


def test_memory_stays_bounded_on_a_long_stream():
    canvas = texture(96, 400, seed=9)

    def clip(n):  # a camera panning back and forth, made lazily: no list of frames anywhere
        for t in range(n):
            x = 4 + abs((t * 5) % 560 - 280)
            yield canvas[16:80, x: x + 64]

    def flicker(n):
        rng = np.random.default_rng(3)
        for f in clip(n):
            yield np.clip(f.astype(np.int16) + rng.integers(-10, 11, 3), 0, 255).astype(np.uint8)

    def peak(n):
        tracemalloc.start()
        try:
            for _ in stabilize(clip(n), flicker(n), mode="flow"):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = peak(20), peak(400)
    # 380 more 64x64 frames would be ~4.7 MB (12 KB each, input and output); the state is ~0.1 MB.
    assert long < short + 200_000, (short, long)
    # And a stream with no end is consumed lazily.
    endless = stabilize(itertools.cycle(clip(10)), itertools.cycle(flicker(10)), mode="flow")
    assert sum(1 for _ in itertools.islice(endless, 50)) == 50


@pytest.mark.parametrize(("h", "w"), [(1, 1), (2, 2), (5, 20), (12, 48), (16, 100), (31, 200), (200, 31)])
def test_tiny_and_thin_frames_get_a_flow_and_are_stabilised(h, w):
    # DIS raises below ~12 px a side and crashed the process (SIGSEGV) on 12x48, 16x100 and 31x200.
    canvas = texture(max(h, 64) + 8, max(w, 64) + 8, seed=4)
    frames = [np.ascontiguousarray(canvas[k : k + h, :w]) for k in range(4)]
    for preset in ("medium", "ultrafast"):
        flow = compute_flow(frames[0], frames[1], preset=preset)
        assert flow.shape == (h, w, 2) and np.isfinite(flow).all()
    # A still, flickering tiny video: flow mode averages the flicker away as on large frames.
    rng = np.random.default_rng(0)
    still = np.full((h, w, 3), 120, np.uint8)
    styled = [np.clip(still.astype(int) + rng.integers(-20, 21, still.shape), 0, 255).astype(np.uint8)
              for _ in range(12)]
    outs = list(stabilize([still] * 12, styled, mode="flow", strength=0.8))
    assert [o.shape for o in outs] == [(h, w, 3)] * 12
    assert np.abs(np.diff(np.stack(outs[4:]).astype(int), axis=0)).mean() < \
        0.6 * np.abs(np.diff(np.stack(styled[4:]).astype(int), axis=0)).mean()


def test_translate_temporal_flow_on_a_video_of_2x2_frames(random_run, tmp_path):
    av = pytest.importorskip("av")
    src = tmp_path / "tiny.mp4"
    with av.open(str(src), "w") as c:
        v = c.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 2, 2, "yuv420p"
        for k in range(6):
            for p in v.encode(av.VideoFrame.from_ndarray(np.full((2, 2, 3), 40 * k, np.uint8),
                                                         format="rgb24")):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    r = CliRunner().invoke(main, ["translate", "--checkpoint", str(random_run(0)), str(src), "--out",
                                  str(tmp_path / "out.mp4"), "--temporal", "flow", "--quiet",
                                  "--precision", "fp32"])  # auto would add an ONNX export
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and (tmp_path / "out.mp4").is_file()
