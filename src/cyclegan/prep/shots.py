"""Picking frames from shots, for ``cyclegan prep frames``: the settings, what is measured on each
frame (bars, detail, brightness), the candidates an open shot holds, and which of them are kept.

``frames`` streams the video and finds the cuts; this module decides, shot by shot, what a style set
gets from it (see ``cyclegan.prep.frames`` for the whole procedure).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cyclegan.errors import PrepError
from cyclegan.image import save_image_atomic
from cyclegan.prep.deps import imagehash, opencv

FORMATS = ("png", "jpg")
MAX_CANDIDATES = 16  # candidate frames held per open shot
CANDIDATES_PER_SECOND = 4  # initial sampling rate of candidates within a shot
TRIM = 0.2  # share of each shot's start and end never used (transitions, motion into and out of cuts)
SECONDS_PER_FRAME = 4.0  # with a range of frames per shot, one more frame per this many seconds
STABILITY_WINDOW = 0.25  # seconds looked back to judge a candidate's stability and fades
THUMB = (32, 18)  # thumbnails for stability: enough to see motion, too small to see grain
BAR_LIMIT = 24  # luma below which a row or column counts as bar (ffmpeg cropdetect's default limit)
BLACK, WHITE, FLAT = 16.0, 239.0, 10.0  # luma mean below / above, luma spread below: not a picture
FADE_MIN_LEVELS = 4.0  # a fade changes the mean luma by at least this much over the window ...
FADE_SHARE = 0.7  # ... and that uniform change is most of the frame's change
CONTENT_THRESHOLD = 27.0  # ContentDetector's default


@dataclass(frozen=True)
class FramesSettings:
    """What decides which frames are kept and how they are written; a folder holds one setting."""

    per_shot: tuple[int, int] = (1, 2)  # (fewest, most) frames per shot; more for longer shots
    size: int = 288  # shorter side of the written frames
    fmt: str = "png"
    crop_bottom: float = 0.0  # share of the picture's height dropped at the bottom (subtitles)
    dedupe_distance: int = 6  # Hamming distance (of 64 bits) at or below which frames are duplicates
    min_edges: float = 0.015  # least share of Canny edge pixels
    shot_threshold: float = CONTENT_THRESHOLD
    min_shot: float = 0.5  # seconds: shorter "shots" are flashes, merged by PySceneDetect

    def check(self) -> None:
        lo, hi = self.per_shot
        if not 1 <= lo <= hi:
            raise PrepError(f"--per-shot must be N or MIN-MAX with 1 <= MIN <= MAX, got {lo}-{hi}")
        if self.size < 8:
            raise PrepError(f"--size must be >= 8, got {self.size}")
        if self.fmt not in FORMATS:
            raise PrepError(f"--format {self.fmt!r}: choose from {', '.join(FORMATS)}")
        if not 0.0 <= self.crop_bottom < 0.5:
            raise PrepError(f"--crop-bottom must be in [0, 0.5), got {self.crop_bottom}")
        if not 0 <= self.dedupe_distance < 64:
            raise PrepError(f"--dedupe-distance must be in [0, 63], got {self.dedupe_distance}")
        if not 0.0 <= self.min_edges < 1.0:
            raise PrepError(f"--min-edges must be in [0, 1), got {self.min_edges}")
        if self.shot_threshold <= 0 or self.min_shot < 0:
            raise PrepError("--shot-threshold must be > 0 and --min-shot >= 0")


def parse_per_shot(text: str) -> tuple[int, int]:
    """``"2"`` -> (2, 2); ``"1-2"`` -> (1, 2)."""
    try:
        lo, _, hi = str(text).partition("-")
        pair = (int(lo), int(hi or lo))
    except ValueError:
        raise PrepError(f"--per-shot must be N or MIN-MAX, got {text!r}") from None
    return pair


def timecode(seconds: float) -> str:
    """``HH:MM:SS.mmm``."""
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    return f"{h:02d}:{m:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def frame_name(stem: str, seconds: float, fmt: str) -> str:
    """``<stem>_<HH-MM-SS-mmm>.<fmt>``: sortable, and free of the colons some file systems refuse."""
    return f"{stem}_{timecode(seconds).replace(':', '-').replace('.', '-')}.{fmt}"


# ----------------------------------------------------------------------------------------------
# Measurements on single frames


def luma(bgr: np.ndarray) -> np.ndarray:
    cv2 = opencv("prep frames")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def bar_sizes(grey: np.ndarray, limit: int = BAR_LIMIT) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right): rows / columns at each edge whose brightest pixel is below
    ``limit``; None for a frame that is dark all over (it says nothing about bars)."""
    rows = grey.max(axis=1) >= limit  # [H] True where the row has picture
    cols = grey.max(axis=0) >= limit
    if not rows.any():
        return None
    top, bottom = int(np.argmax(rows)), int(np.argmax(rows[::-1]))
    left, right = int(np.argmax(cols)), int(np.argmax(cols[::-1]))
    return top, bottom, left, right


class BarTracker:
    """The most common bar sizes of the frames seen so far, in detection pixels."""

    def __init__(self) -> None:
        self.counts = [collections.Counter() for _ in range(4)]

    def add(self, grey: np.ndarray) -> None:
        sizes = bar_sizes(grey)
        if sizes is not None:
            for counter, size in zip(self.counts, sizes):
                counter[size] += 1

    def crop_box(self, det_shape: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the picture inside bars, in pixels of a frame of ``shape`` (H, W).
        A bar's edge pixel in the detection frame mixes bar and picture, so one more detection pixel
        is dropped at each side with a bar."""
        dh, dw = det_shape
        h, w = shape
        sy, sx = h / dh, w / dw
        top, bottom, left, right = (c.most_common(1)[0][0] if c else 0 for c in self.counts)
        if top + bottom >= dh - 2 or left + right >= dw - 2:
            return 0, 0, w, h
        y0 = math.ceil((top + 1) * sy) if top else 0
        y1 = h - (math.ceil((bottom + 1) * sy) if bottom else 0)
        x0 = math.ceil((left + 1) * sx) if left else 0
        x1 = w - (math.ceil((right + 1) * sx) if right else 0)
        return x0, y0, x1, y1


def edge_density(grey: np.ndarray) -> float:
    """Share of Canny edge pixels (thresholds 100 / 200 on 8-bit luma)."""
    return float(np.count_nonzero(opencv("prep frames").Canny(grey, 100, 200))) / grey.size


# ----------------------------------------------------------------------------------------------
# Picking frames from shots


@dataclass
class Candidate:
    index: int  # frame number in the video
    seconds: float
    frame: np.ndarray  # BGR, at most 2x the output size on its shorter side
    change: float  # mean |thumbnail(t) - thumbnail(t - window)|: lower is steadier
    fade: bool


@dataclass
class KeptFrame:
    file: str
    source: str
    seconds: float
    shot: int
    shot_start: float
    shot_end: float
    phash: str
    edges: float
    why: str

    def row(self) -> dict[str, str]:
        return {"file": self.file, "source": self.source, "timecode": timecode(self.seconds),
                "shot": str(self.shot), "shot_start": timecode(self.shot_start),
                "shot_end": timecode(self.shot_end), "phash": self.phash, "edges": f"{self.edges:.4f}",
                "why": self.why}


class HashSet:
    """Perceptual hashes of every kept frame, searched by Hamming distance."""

    def __init__(self, hashes: Iterable[str] = ()) -> None:
        self.values = [int(h, 16) for h in hashes]
        self._array = np.array(self.values, dtype=np.uint64)

    def nearest(self, value: int) -> int:
        """Hamming distance to the nearest stored hash (64 when there is none)."""
        if not self.values:
            return 64
        if len(self._array) != len(self.values):
            self._array = np.array(self.values, dtype=np.uint64)
        return int(np.bitwise_count(self._array ^ np.uint64(value)).min())

    def add(self, value: int) -> None:
        self.values.append(value)


class ShotSampler:
    """Streams one video's frames: candidate frames of the open shot, closed at every cut."""

    def __init__(self, *, fps: float, settings: FramesSettings) -> None:
        self.fps, self.settings = fps, settings
        self.base_stride = max(1, round(fps / CANDIDATES_PER_SECOND))
        self.window = max(1, math.ceil(STABILITY_WINDOW * fps))
        self.thumbs: collections.deque = collections.deque(maxlen=self.window + 1)  # (thumb, mean)
        self.bars = BarTracker()
        self.det_shape: tuple[int, int] | None = None
        self.shot_start = 0.0
        self.shot_first_index = 0
        self.stride = self.base_stride
        self.candidates: list[Candidate] = []

    def add(self, index: int, seconds: float, bgr: np.ndarray, det_bgr: np.ndarray) -> None:
        cv2 = opencv("prep frames")
        grey = luma(det_bgr)
        self.det_shape = grey.shape
        self.bars.add(grey)
        thumb = cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)
        self.thumbs.append((thumb, float(thumb.mean())))
        if (index - self.shot_first_index) % self.stride:
            return
        past, past_mean = self.thumbs[0]
        change = float(np.abs(thumb - past).mean())
        shift = abs(self.thumbs[-1][1] - past_mean)
        fade = shift >= FADE_MIN_LEVELS and shift >= FADE_SHARE * change
        self.candidates.append(Candidate(index, seconds, _shrink(bgr, 2 * self.settings.size), change, fade))
        if len(self.candidates) > MAX_CANDIDATES:  # a long shot: keep every other, sample half as often
            self.candidates = self.candidates[::2]
            self.stride *= 2

    def close(self, end: float, next_index: int) -> tuple[float, float, list[Candidate]]:
        """End the open shot at ``end`` seconds; (start, end, its candidates). Candidates at or after
        ``end`` (a cut reported a few frames late) move to the next shot."""
        mine = [c for c in self.candidates if c.seconds < end]
        self.candidates = [c for c in self.candidates if c.seconds >= end]
        start = self.shot_start
        self.shot_start, self.shot_first_index, self.stride = end, next_index, self.base_stride
        return start, end, mine


def _shrink(bgr: np.ndarray, shorter: int) -> np.ndarray:
    h, w = bgr.shape[:2]
    if min(h, w) <= shorter:
        return bgr
    cv2 = opencv("prep frames")
    scale = shorter / min(h, w)
    return cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def frames_per_shot(duration: float, per_shot: tuple[int, int]) -> int:
    lo, hi = per_shot
    return max(lo, min(hi, math.ceil(duration / SECONDS_PER_FRAME)))


class FramePicker:
    """Turns closed shots into kept frames: picks, crops, filters, dedupes, writes."""

    def __init__(self, *, out_dir: Path, stem: str, source: str, settings: FramesSettings, hashes: HashSet,
                 existing: set[str]) -> None:
        self.out_dir, self.stem, self.source, self.settings = out_dir, stem, source, settings
        self.hashes, self.existing = hashes, existing
        self.kept: list[KeptFrame] = []
        self.written: list[Path] = []  # files this run wrote, removed again if the video fails
        self.dropped: collections.Counter = collections.Counter()
        self.shots = 0
        self.imagehash = imagehash("prep frames")

    def finish_shot(self, start: float, end: float, candidates: Sequence[Candidate], bars: BarTracker,
                    det_shape: tuple[int, int] | None, budget: int) -> None:
        self.shots += 1
        duration = end - start
        lo, hi = start + TRIM * duration, end - TRIM * duration
        middle = [c for c in candidates if lo <= c.seconds <= hi]
        if not middle:
            if candidates:
                self.dropped["no stable middle"] += 1
            return
        n = frames_per_shot(duration, self.settings.per_shot)
        span = (hi - lo) / n
        for part in range(n):
            if len(self.kept) >= budget:
                return
            a, b = lo + part * span, lo + (part + 1) * span
            pool = [c for c in middle if a <= c.seconds < b or (part == n - 1 and c.seconds == b)]
            reasons = []
            for c in sorted(pool, key=lambda c: (c.change, c.index)):
                why = self._try(c, start, end, part, n, len(pool), bars, det_shape)
                if why is None:
                    break
                reasons.append(why)
            else:
                if reasons:
                    self.dropped[reasons[0]] += 1

    def _try(self, c: Candidate, start: float, end: float, part: int, n: int, pool: int, bars: BarTracker,
             det_shape: tuple[int, int] | None) -> str | None:
        """Keep ``c`` and return None, or return why not."""
        cv2 = opencv("prep frames")
        frame = c.frame
        if det_shape is not None:
            x0, y0, x1, y1 = bars.crop_box(det_shape, frame.shape[:2])
            frame = frame[y0:y1, x0:x1]
        if self.settings.crop_bottom:
            frame = frame[: max(1, round(frame.shape[0] * (1.0 - self.settings.crop_bottom)))]
        h, w = frame.shape[:2]
        scale = self.settings.size / min(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        rgb = cv2.cvtColor(cv2.resize(np.ascontiguousarray(frame), size, interpolation=interp),
                           cv2.COLOR_BGR2RGB)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        mean, spread = float(grey.mean()), float(grey.std())
        if mean < BLACK:
            return "black"
        if mean > WHITE:
            return "white"
        if spread < FLAT:
            return "flat"
        if c.fade:
            return "fade"
        edges = edge_density(grey)
        if edges < self.settings.min_edges:
            return "low detail"
        img = Image.fromarray(rgb)
        value = int(str(self.imagehash.phash(img)), 16)
        nearest = self.hashes.nearest(value)
        if nearest <= self.settings.dedupe_distance:
            return "duplicate"
        name = frame_name(self.stem, c.seconds, self.settings.fmt)
        if name not in self.existing:  # a frame written by an interrupted run is the same frame: keep it
            options = {} if self.settings.fmt == "png" else {"quality": 95, "subsampling": 0}  # 4:4:4 chroma
            self.written.append(save_image_atomic(img, self.out_dir / name, **options))
        self.hashes.add(value)
        place = f"frame {part + 1} of {n} from" if n > 1 else "frame from"
        nearest_text = "no earlier frame" if nearest == 64 else f"nearest kept frame {nearest} bits away"
        why = (f"steadiest passing {place} the middle of shot {self.shots} ({pool} candidates); "
               f"edges {edges:.1%}, {nearest_text}")
        self.kept.append(KeptFrame(name, self.source, c.seconds, self.shots, start, end, f"{value:016x}",
                                   edges, why))
        return None


