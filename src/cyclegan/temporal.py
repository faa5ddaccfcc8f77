"""Temporal consistency for video translation: optical flow, warping, occlusion masks and a streaming
stabiliser that removes the frame-to-frame flicker of a per-frame generator without ghosting.

A per-frame generator answers tiny input changes (sensor noise, sub-pixel motion, codec blocks) with
visible output changes: flicker. The cure used here needs no trained network:

1. optical flow between consecutive *input* frames with OpenCV's DIS flow (Kroeger et al., ECCV
   2016: dense inverse search, fast on a CPU, no learned weights), forward and backward;
2. an occlusion mask from the forward-backward consistency check of Sundaram et al. (ECCV 2010) as
   used by Ruder et al. ("Artistic style transfer for videos", GCPR 2016, eq. 6-7) and by Lai et al.'s
   warping-error code (ECCV 2018): a pixel whose flow does not come back to itself, that leaves the
   frame, or that sits on a motion boundary has no reliable match in the previous frame;
3. the previous *stabilised* output warped into the current frame and blended with the current
   per-frame output only where the match is reliable: an exponential moving average along motion
   trajectories, so moving content is averaged with itself instead of with what was behind it
   (the ghosting of a plain in-place average).

Long shots must not drift or smear, so the stabiliser resets everything at a scene cut (a large
motion-compensated frame difference) and bounds, per pixel, how many consecutive frames a value
may inherit from the past (``max_age``); the inherited weight fades out over the last quarter of
that bound instead of dropping at once, so the refresh itself does not flicker.

Memory is bounded: the stabiliser keeps the previous input (grey), the previous output, an age map
and a pixel grid, whatever the length of the video.

Conventions: images are numpy ``[H, W, 3]`` uint8 RGB (grey ``[H, W]`` uint8); a flow is
``[H, W, 2]`` float32 (dx, dy) in pixels, defined on the grid of the frame it was computed *for*:
``frame[y, x]`` matches ``other[y + dy, x + dx]``. OpenCV is the optional ``prep`` extra
(opencv-python-headless); every function that needs it says so in its error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import ModuleType

import numpy as np

from cyclegan.errors import CycleGANError, TranslateError

__all__ = [
    "CUT_THRESHOLD",
    "FLOW_PRESETS",
    "TEMPORAL_MODES",
    "TemporalStabilizer",
    "compute_flow",
    "flow_preset",
    "frame_difference",
    "occlusion_mask",
    "require_opencv",
    "scene_cut",
    "stabilize",
    "to_gray",
    "warp",
]

TEMPORAL_MODES = ("off", "blend", "flow")
FLOW_PRESETS = ("auto", "ultrafast", "fast", "medium")
# OpenCV's DIS (5.1) raises on frames under ~12 px a side and crashes the process (SIGSEGV) on frames
# with a short side under 32 px and a long side of 48 px and more (its pyramid follows the long side):
# frames with a side under this are scaled up for the flow.
MIN_FLOW_SIDE = 32

# DIS preset by frame size ("auto"). Measured on horse2zebra photos under a known 1 % zoom plus a
# (3.3, 1.7) px shift, 2-core EPYC, one flow (ms / mean end-point error in px):
#               256x256      512x512      1280x720     1920x1080
#   ULTRAFAST   1.5 / 0.26   4.7 / 0.26   13 / 0.27    32 / 0.24
#   FAST        1.6 / 0.17   9.0 / 0.17   23 / 0.17    54 / 0.14
#   MEDIUM     11   / 0.13   35  / 0.11  121 / 0.07   289 / 0.07
# MEDIUM is worth its cost only on small frames; FAST gets within 0.05-0.1 px of it at a quarter of
# the time up to 1080p; beyond that ULTRAFAST keeps two flows per frame under ~0.1 s. The
# stabiliser computes two flows per frame, so at 512 px FAST costs ~18 ms against ~0.7-8 s for one
# CPU generator pass (ngf 8 ... 64), while MEDIUM would cost ~70 ms.
_MEDIUM_MAX_PIXELS = 400 * 400
_FAST_MAX_PIXELS = 1920 * 1088

# Mean absolute grey difference (0..1) between a frame and the previous frame warped onto it above
# which the two are taken to be different shots. Measured with DIS FAST on 200x256 crops of
# horse2zebra photos: consecutive unrelated photos (cuts) give >= 0.13 (1st percentile; median 0.23);
# pans of 4 % / 8 % of the width per frame give <= 0.007 / 0.044 (99th percentile). 0.08 sits
# between them (a 16 % pan, 0.03 median, 0.11 at the 95th, is where DIS starts to lose track and a
# reset costs little). Without motion compensation the two overlap (a fast pan differs by 0.08-0.22).
CUT_THRESHOLD = 0.08

# Ruder et al. (2016), eq. 6-7; the same constants are in Lai et al.'s evaluation code.
_FB_REL, _FB_ABS = 0.01, 0.5  # |w + w^|^2 > 0.01 (|w|^2 + |w^|^2) + 0.5
_MB_REL, _MB_ABS = 0.01, 0.002  # |grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002

# The stabiliser also distrusts a match whose *input* pixels disagree (the flow can be consistent and
# still wrong: lighting changes, a new object with the old one's texture): full trust up to this
# grey difference (0..1, about 13 levels, above sensor noise and interpolation error), none at twice it.
_PHOTO_TRUST = 0.05


def require_opencv(what: str, error: type[CycleGANError] = TranslateError) -> ModuleType:
    """``cv2``, or ``error`` saying that ``what`` needs OpenCV (the ``prep`` extra)."""
    try:
        import cv2  # extra: prep (opencv-python-headless)
    except ImportError:
        raise error(f"{what} needs OpenCV: pip install 'cyclegan[prep]'") from None
    return cv2


def to_gray(frame: np.ndarray) -> np.ndarray:
    """[H, W, 3] (or [H, W, 4]) uint8 RGB -> [H, W] uint8 luma (BT.601, as OpenCV); grey passes through."""
    if frame.ndim == 2:
        return np.ascontiguousarray(frame, dtype=np.uint8)
    cv2 = require_opencv("temporal consistency")
    return cv2.cvtColor(np.ascontiguousarray(frame[..., :3], dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def flow_preset(height: int, width: int) -> str:
    """The DIS preset ``"auto"`` picks for a frame size (see the measurements above)."""
    pixels = height * width
    if pixels <= _MEDIUM_MAX_PIXELS:
        return "medium"
    return "fast" if pixels <= _FAST_MAX_PIXELS else "ultrafast"


def _dis(preset: str, shape: tuple[int, int]):
    cv2 = require_opencv("optical flow")
    if preset not in FLOW_PRESETS:
        raise TranslateError(f"flow preset {preset!r}: choose from {', '.join(FLOW_PRESETS)}")
    if preset == "auto":
        preset = flow_preset(*shape)
    code = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }[preset]
    return cv2.DISOpticalFlow_create(code)


def compute_flow(frame: np.ndarray, other: np.ndarray, *, preset: str = "auto", dis=None) -> np.ndarray:
    """DIS optical flow from ``frame`` to ``other``: ``frame[y, x]`` matches ``other[y + dy, x + dx]``.

    ``frame`` and ``other``: [H, W] grey or [H, W, 3] RGB uint8 of one size. Returns [H, W, 2] float32
    (dx, dy); ``warp(other, flow)`` then lines ``other`` up with ``frame``. ``dis``: a reusable
    ``cv2.DISOpticalFlow`` (the stabiliser keeps one), else one is made for ``preset``.
    """
    a, b = to_gray(frame), to_gray(other)
    if a.shape != b.shape:
        raise ValueError(f"optical flow needs frames of one size, got {a.shape} and {b.shape}")
    if dis is None:
        dis = _dis(preset, a.shape)
    return _calc(dis, a, b)  # [H, W, 2] float32


def _calc(dis, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``dis.calc(a, b)`` for [H, W] uint8 frames of any size -> [H, W, 2] float32. A frame with a side
    under MIN_FLOW_SIDE (which DIS refuses or crashes on) is scaled up by a whole factor for the flow,
    which is then scaled back down."""
    h, w = a.shape
    if min(h, w) >= MIN_FLOW_SIDE:
        return dis.calc(a, b, None)
    cv2 = require_opencv("optical flow")
    k = -(-MIN_FLOW_SIDE // min(h, w))
    big = dis.calc(*(cv2.resize(x, (w * k, h * k), interpolation=cv2.INTER_LINEAR) for x in (a, b)), None)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA) * np.float32(1.0 / k)


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.indices((height, width), dtype=np.float32)
    return xs, ys


def _maps(flow: np.ndarray, grid: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray,
                                                                                        np.ndarray]:
    xs, ys = grid if grid is not None else _grid(*flow.shape[:2])
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray, *, nearest: bool = False, maps=None) -> np.ndarray:
    """Backward warp: ``out[y, x] = image[y + dy, x + dx]`` (bilinear, or nearest for labels/ages).

    ``image``: [H, W] or [H, W, C], any dtype OpenCV remaps (uint8, uint16, float32); ``flow``:
    [H, W, 2] from ``compute_flow(frame, image)``. Positions outside ``image`` take its nearest edge
    pixel (BORDER_REPLICATE): they have no match, and ``occlusion_mask`` marks them, so the value
    only has to be harmless (a constant border would bleed black into bilinear samples at the edge).
    ``maps``: the (map_x, map_y) pair of an earlier call with the same flow, to skip rebuilding it.
    """
    cv2 = require_opencv("warping")
    map_x, map_y = maps if maps is not None else _maps(flow)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out = cv2.remap(np.ascontiguousarray(image), map_x, map_y, interp, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(image.shape)  # remap drops a trailing channel axis of size 1


def occlusion_mask(
    flow: np.ndarray, reverse: np.ndarray, *, motion_boundaries: bool = True, maps=None
) -> np.ndarray:
    """Pixels of frame A with no reliable match in frame B: [H, W] bool, True = occluded.

    ``flow``: A -> B, ``reverse``: B -> A (both ``compute_flow``). A pixel is occluded when

    - the forward-backward check fails (Sundaram et al. 2010; Ruder et al. 2016, eq. 6): with
      ``r = reverse(x + flow(x))``, ``|flow + r|^2 > 0.01 (|flow|^2 + |r|^2) + 0.5`` -- going to B
      and back does not return to the start, as where B covers or uncovers the pixel;
    - its match falls outside B (it entered the frame: a disocclusion at the border);
    - with ``motion_boundaries``, it lies on a motion boundary (Ruder et al., eq. 7, as in Lai et
      al.'s evaluation code): ``|grad u|^2 + |grad v|^2 > 0.01 |flow|^2 + 0.002``, where bilinear
      warping mixes the two sides of a moving edge.
    """
    cv2 = require_opencv("occlusion masks")
    h, w = flow.shape[:2]
    map_x, map_y = maps if maps is not None else _maps(flow)
    u, v = cv2.split(flow)  # contiguous [H, W] planes: elementwise maths on them is ~10x einsum's speed
    bu, bv = cv2.split(warp(reverse, flow, maps=(map_x, map_y)))
    mag_sq = u * u + v * v
    su, sv = u + bu, v + bv
    occluded = su * su + sv * sv > _FB_REL * (mag_sq + bu * bu + bv * bv) + _FB_ABS
    # A match more than half a pixel outside is not in B; bilinear sampling reaches half a pixel.
    occluded |= (map_x < -0.5) | (map_x > w - 0.5) | (map_y < -0.5) | (map_y > h - 0.5)
    if motion_boundaries:
        grad = np.zeros((h, w), np.float32)
        for plane in (u, v):  # forward differences, none past the last column/row (as Lai et al.)
            d = plane[:, 1:] - plane[:, :-1]
            grad[:, :-1] += d * d
            d = plane[1:, :] - plane[:-1, :]
            grad[:-1, :] += d * d
        occluded |= grad > _MB_REL * mag_sq + _MB_ABS
    return occluded


def frame_difference(prev: np.ndarray, cur: np.ndarray, flow: np.ndarray | None = None) -> float:
    """Mean absolute grey difference (0..1) between ``cur`` and ``prev``, warped onto ``cur`` by
    ``flow`` (cur -> prev) when given: the motion-compensated difference, small for any motion the
    flow follows and large only when the content changes."""
    a, b = to_gray(prev), to_gray(cur)
    if flow is not None:
        a = warp(a, flow)
    return float(np.mean(np.abs(a.astype(np.float32) - b.astype(np.float32)))) / 255.0


def scene_cut(
    prev: np.ndarray, cur: np.ndarray, *, threshold: float = CUT_THRESHOLD, flow: np.ndarray | None = None,
    preset: str = "auto",
) -> bool:
    """Whether ``cur`` starts a new shot: its motion-compensated difference from ``prev`` exceeds
    ``threshold`` (0..1 grey levels; see CUT_THRESHOLD). ``flow`` (cur -> prev) is computed when not given."""
    if flow is None:
        flow = compute_flow(cur, prev, preset=preset)
    return frame_difference(prev, cur, flow) > threshold


class TemporalStabilizer:
    """Streaming temporal filter for per-frame translations: ``stab(input_frame, stylised) -> frame``.

    Call it once per frame, in order, with the input frame ([H, W, 3] uint8) and the generator's
    output for it ([h, w, 3] uint8; resized outputs are fine, the input is scaled to match for the
    flow). Returns the stabilised [h, w, 3] uint8 frame. It holds only the previous frame's state, so
    memory does not grow with the video.

    Modes:

    - ``"off"``: the stylised frame unchanged.
    - ``"blend"``: ``y_t = strength * y_(t-1) + (1 - strength) * G(x_t)`` in place, exactly the
      former ``--temporal-smoothing ALPHA`` (float state, rounded on output). Damps flicker but
      ghosts anything that moves; kept for compatibility.
    - ``"flow"``: the previous *output* is warped into the current frame along the input's optical
      flow and blended with weight ``strength`` where the match is reliable (no occlusion, motion
      boundary or input mismatch; a soft edge around unreliable areas hides seams), so the
      average follows the motion. Resets at scene cuts (``cut_threshold``) and when the frame size
      changes; a pixel inherits for at most ``max_age`` consecutive frames (its weight fades over
      the last quarter of them), which bounds drift and smear along imperfect flow.

    ``strength`` in [0, 1): the weight of the past (0 = off). ``flow_preset``: DIS preset or "auto"
    (by frame size). ``last_cut`` / ``cuts`` report resets for tests and progress output.
    """

    def __init__(
        self,
        *,
        mode: str = "flow",
        strength: float = 0.8,
        max_age: int = 48,
        cut_threshold: float = CUT_THRESHOLD,
        flow_preset: str = "auto",
    ) -> None:
        if mode not in TEMPORAL_MODES:
            raise TranslateError(f"--temporal {mode!r}: choose from {', '.join(TEMPORAL_MODES)}")
        if not 0.0 <= strength < 1.0:
            raise TranslateError(f"--temporal-strength must be in [0, 1), got {strength}")
        if max_age < 1:
            raise TranslateError(f"temporal max_age must be >= 1 frame, got {max_age}")
        if not cut_threshold > 0:
            raise TranslateError(f"temporal cut threshold must be > 0, got {cut_threshold}")
        if flow_preset not in FLOW_PRESETS:
            raise TranslateError(f"flow preset {flow_preset!r}: choose from {', '.join(FLOW_PRESETS)}")
        if mode == "flow":
            require_opencv("--temporal flow")
        self.mode = mode
        self.strength = float(strength)
        self.max_age = int(max_age)
        self.cut_threshold = float(cut_threshold)
        self.flow_preset = flow_preset
        # The age weight ramps 1 -> 0 over the last quarter of max_age: a gradual refresh.
        self._ramp = max(1, self.max_age // 4)
        self.frames = 0
        self.cuts = 0
        self.last_cut = False
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next frame is output as the generator made it."""
        self._prev_out: np.ndarray | None = None  # [h, w, 3] float32, the previous output before rounding
        self._prev_gray: np.ndarray | None = None  # [h, w] uint8, the previous input at output size
        self._age: np.ndarray | None = None  # [h, w] uint16, consecutive frames inherited
        self._grid: tuple[np.ndarray, np.ndarray] | None = None
        self._dis = None

    @property
    def active(self) -> bool:
        return self.mode != "off" and self.strength > 0

    def __call__(self, frame: np.ndarray, stylised: np.ndarray) -> np.ndarray:
        """One frame: input ``frame`` [H, W, 3] uint8 and its translation ``stylised`` [h, w, 3] uint8."""
        self.frames += 1
        self.last_cut = False
        if not self.active:
            return stylised
        if self.mode == "blend":
            return self._blend(stylised)
        return self._flow(frame, stylised)

    def _blend(self, stylised: np.ndarray) -> np.ndarray:
        # The expression and dtypes of the former video.translate_video, so outputs are bit-identical.
        cur = stylised.astype(np.float32)
        if self._prev_out is not None:
            cur = self.strength * self._prev_out + (1.0 - self.strength) * cur
        self._prev_out = cur
        return np.clip(np.rint(cur), 0, 255).astype(np.uint8)

    def _input_gray(self, frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        gray = to_gray(frame)
        if gray.shape != size:  # the generator's output was resized (--max-side / --size)
            cv2 = require_opencv("--temporal flow")
            gray = cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        return gray

    def _start(self, gray: np.ndarray, stylised: np.ndarray) -> np.ndarray:
        h, w = gray.shape
        if self._grid is None or self._grid[0].shape != (h, w):
            self._grid = _grid(h, w)
            self._dis = _dis(self.flow_preset, (h, w))
        self._prev_gray = gray
        self._prev_out = stylised.astype(np.float32)
        self._age = np.zeros((h, w), np.uint16)
        return stylised

    def _flow(self, frame: np.ndarray, stylised: np.ndarray) -> np.ndarray:
        cv2 = require_opencv("--temporal flow")
        size = stylised.shape[:2]
        gray = self._input_gray(frame, size)
        if self._prev_gray is None or self._prev_gray.shape != size:
            return self._start(gray, stylised)
        prev_gray = self._prev_gray
        back = _calc(self._dis, gray, prev_gray)  # cur -> prev, [h, w, 2]
        maps = _maps(back, self._grid)
        warped_gray = warp(prev_gray, back, maps=maps)
        diff = cv2.absdiff(warped_gray, gray)  # [h, w] uint8
        if float(diff.mean()) / 255.0 > self.cut_threshold:
            self.cuts += 1
            self.last_cut = True
            return self._start(gray, stylised)
        fwd = _calc(self._dis, prev_gray, gray)  # prev -> cur
        reliable = ~occlusion_mask(back, fwd, maps=maps)
        # Input mismatch: full trust up to _PHOTO_TRUST, none at twice it.
        photo = np.clip(2.0 - diff.astype(np.float32) * (1.0 / (255.0 * _PHOTO_TRUST)), 0.0, 1.0)
        weight = reliable.astype(np.float32)
        # Soft edge: inside the reliable area the weight rises from ~0.5 to 1 over the 3 px next to
        # an unreliable one, so the border between averaged and fresh pixels shows no seam.
        weight = cv2.blur(weight, (7, 7)) * weight * photo
        age = warp(self._age, back, nearest=True, maps=maps)
        age_weight = np.clip((self.max_age - age.astype(np.float32)) / self._ramp, 0.0, 1.0)
        weight *= age_weight * self.strength  # [h, w] in [0, strength]
        warped = warp(self._prev_out, back, maps=maps)  # [h, w, 3] float32
        cur = stylised.astype(np.float32)
        out = cv2.blendLinear(warped, cur, weight, 1.0 - weight)  # weight * warped + (1 - weight) * cur
        self._age = np.where(weight > 0, np.minimum(age, self.max_age) + 1, 0).astype(np.uint16)
        self._prev_gray = gray
        self._prev_out = out
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def stabilize(
    frames: Iterable[np.ndarray], stylised: Iterable[np.ndarray], **options
) -> Iterator[np.ndarray]:
    """Stabilise a stream: pairs each input frame with its translation and yields the stabilised
    frame, one at a time (bounded memory). ``options``: ``TemporalStabilizer``'s keywords. With one
    pass over the frames, ``itertools.tee`` holds at most one frame between the two streams::

        a, b = itertools.tee(frames)
        for out in stabilize(a, map(translator, b), mode="flow"): ...
    """
    stab = TemporalStabilizer(**options)
    missing = object()
    it_in, it_out = iter(frames), iter(stylised)
    while True:
        x, y = next(it_in, missing), next(it_out, missing)
        if x is missing and y is missing:
            return
        if x is missing or y is missing:
            raise TranslateError(
                f"temporal stabilisation: the input and translated streams differ in length "
                f"(one ended after {stab.frames} frames)"
            )
        yield stab(x, y)
