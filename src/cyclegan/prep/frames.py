"""``cyclegan prep frames``: films or episodes -> a folder of style training frames.

A film has ~1500 shots and 170,000 frames; a style set wants one or two good frames per shot. Shots
are found by PySceneDetect (content cuts with ``ContentDetector``, fades to and from black with
``ThresholdDetector``); from each shot's stable middle (its first and last fifth are left out, and
among the rest the frames that changed least over the previous quarter second are tried first) the
first frame that passes every filter is kept:

- black / white / flat frames (luma mean and spread): title cards, fades, blank screens;
- fades: frames whose last quarter second is mostly a uniform change of brightness;
- too little detail: fewer Canny edge pixels than ``min_edges`` (sky, walls, out-of-focus shots);
- near-duplicates of any frame already kept, across the whole set and earlier runs (a 64-bit
  perceptual hash, ``imagehash.phash``, within ``dedupe_distance`` bits): repeated shots, recaps,
  openings and endings of every episode.

Letterbox and pillarbox bars are cropped: the bars of each frame are measured and the most common
size so far wins, so dark scenes (which look like wider bars) and subtitles inside the bars (which
look like narrower ones) do not move the crop. ``crop_bottom`` also drops the band where burned-in
subtitles sit. Frames are scaled to ``size`` on the shorter side and written as
``<video-stem>_<HH-MM-SS-mmm>.png`` (or a 4:4:4 JPEG at quality 95), with ``frames.csv`` (why each
frame was kept) and a contact sheet beside the folder.

Memory stays bounded: frames are streamed, each open shot keeps at most MAX_CANDIDATES candidate
frames (the sampling stride doubles when a long shot fills them) plus a quarter second of thumbnails.
A second run over the same folder skips the videos it finished (``frames.json`` records them and the
settings, which must match), and keeps frames already written.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from cyclegan.errors import CycleGANError, PrepError, first_line
from cyclegan.fileio import write_json_atomic, write_text_atomic
from cyclegan.image import make_grid, save_image_atomic
from cyclegan.prep.deps import imagehash, opencv, scenedetect

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts",
                              ".wmv", ".flv", ".ogv"})
FORMATS = ("png", "jpg")
MANIFEST = "frames.json"
CSV_NAME = "frames.csv"
CSV_COLUMNS = ("file", "source", "timecode", "shot", "shot_start", "shot_end", "phash", "edges", "why")

DETECT_WIDTH = 256  # shots are detected on frames scaled to about this width (PySceneDetect's own default)
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
FADE_THRESHOLD = 12  # ThresholdDetector's default: mean intensity of a faded-out frame
PREVIEW_MAX = 240  # frames shown on the contact sheet, spread over the set
PREVIEW_TILE = (160, 90)
PREVIEW_COLUMNS = 12


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


def find_videos(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given (any extension: an unsupported one fails later, in its own line); folders
    searched recursively for video extensions, sorted."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        else:
            found.append(path)
    return list(dict.fromkeys(found))


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
# One video


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


@dataclass
class VideoResult:
    source: Path
    status: str  # done | skipped | failed | capped
    kept: int = 0
    shots: int = 0
    dropped: collections.Counter = field(default_factory=collections.Counter)
    reason: str = ""

    def line(self) -> str:
        if self.status == "skipped":
            return f"{self.source}: skipped ({self.reason})"
        if self.status == "failed":
            return f"{self.source}: cannot read ({self.reason})"
        drops = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items())) or "none"
        cap = " (stopped at the --max-frames share)" if self.status == "capped" else ""
        return f"{self.source}: {self.shots} shots, kept {self.kept} frames{cap}; dropped: {drops}"


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
        rgb = cv2.cvtColor(cv2.resize(np.ascontiguousarray(frame), size, interpolation=interp), cv2.COLOR_BGR2RGB)
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
        self.kept.append(KeptFrame(name, self.source, c.seconds, self.shots, start, end, f"{value:016x}", edges, why))
        return None


def detect_size(shape: tuple[int, int]) -> tuple[int, int] | None:
    """(W, H) shots are detected at, or None to use the frame as it is."""
    h, w = shape
    if w <= DETECT_WIDTH * 1.5:
        return None
    scale = DETECT_WIDTH / w
    return DETECT_WIDTH, max(1, round(h * scale))


def _video_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, ValueError, RuntimeError, EOFError, CycleGANError,
                                         scenedetect("prep frames").VideoOpenFailure]
    try:
        import av  # extra: video (PyAV, the decoder behind PySceneDetect's pyav backend)

        errors.append(av.FFmpegError)
    except (ImportError, AttributeError):
        pass
    return tuple(errors)


def open_video(path: Path, backend: str):
    """A PySceneDetect VideoStream. ``pyav`` (PyAV, extra ``video``) reports decoding errors and exact
    timestamps; without PyAV, OpenCV's own FFmpeg build decodes."""
    sd = scenedetect("prep frames")
    if backend == "pyav" and "pyav" in sd.AVAILABLE_BACKENDS:
        return sd.open_video(str(path), backend="pyav", threading_mode="AUTO")
    return sd.open_video(str(path), backend="opencv" if backend == "pyav" else backend)


def process_video(
    path: Path, *, out_dir: Path, stem: str, settings: FramesSettings, hashes: HashSet, existing: set[str],
    budget: int, backend: str = "pyav", progress: bool = False,
) -> tuple[VideoResult, list[KeptFrame]]:
    """Stream ``path`` once: detect shots, pick and write frames (at most ``budget``)."""
    sd = scenedetect("prep frames")
    cv2 = opencv("prep frames")
    video = open_video(path, backend)
    fps = float(video.frame_rate)
    if not fps > 0:
        raise PrepError(f"{path}: no frame rate")
    min_len = max(1, round(settings.min_shot * fps))
    detectors = [sd.ContentDetector(threshold=settings.shot_threshold, min_scene_len=min_len),
                 sd.ThresholdDetector(threshold=FADE_THRESHOLD, min_scene_len=min_len)]
    sampler = ShotSampler(fps=fps, settings=settings)
    picker = FramePicker(out_dir=out_dir, stem=stem, source=str(path), settings=settings, hashes=hashes,
                         existing=existing)
    pending: list[float] = []  # cut times (seconds) not yet applied
    bar = None
    if progress:
        from tqdm.auto import tqdm

        try:
            total = int(video.duration.frame_num)
        except (AttributeError, TypeError, ValueError):
            total = None
        bar = tqdm(total=total, unit="frame", desc=path.name, dynamic_ncols=True, file=sys.stderr, leave=False)
    index, seconds, capped = -1, 0.0, False
    try:
        while True:
            frame = video.read()
            if frame is False or frame is None:
                break
            index += 1
            position = video.position
            seconds = float(position.seconds)
            small = detect_size(frame.shape[:2])
            det = frame if small is None else cv2.resize(frame, small, interpolation=cv2.INTER_LINEAR)
            for detector in detectors:
                pending += [float(cut.seconds) for cut in detector.process_frame(position, det)]
            # Apply cuts up to now; a cut reported late moves the few candidates after it along.
            for cut in sorted(set(pending)):
                if cut > sampler.shot_start + 0.5 / fps:
                    picker.finish_shot(*sampler.close(cut, index), sampler.bars, sampler.det_shape, budget)
            pending.clear()
            sampler.add(index, seconds, frame, det)
            if bar is not None:
                bar.update(1)
            if len(picker.kept) >= budget:
                capped = True
                break
        if not capped and index >= 0:
            for detector in detectors:
                pending += [float(cut.seconds) for cut in detector.post_process(video.position)]
            for cut in sorted(set(pending)):
                if cut > sampler.shot_start + 0.5 / fps:
                    picker.finish_shot(*sampler.close(cut, index + 1), sampler.bars, sampler.det_shape, budget)
            end = seconds + 1.0 / fps
            picker.finish_shot(*sampler.close(end, index + 1), sampler.bars, sampler.det_shape, budget)
    except BaseException:
        # Frames without a frames.csv row would still be training images: take back what this run wrote.
        for written in picker.written:
            written.unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    if index < 0:
        raise PrepError(f"{path}: no frames could be decoded")
    result = VideoResult(source=path, status="capped" if capped else "done", kept=len(picker.kept),
                         shots=picker.shots, dropped=picker.dropped)
    return result, picker.kept


# ----------------------------------------------------------------------------------------------
# A folder of frames


@dataclass
class FramesResult:
    out_dir: Path
    videos: list[VideoResult]
    total: int  # frames in the folder, earlier runs included
    csv: Path
    preview: Path | None


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PrepError(f"{path}: unreadable ({first_line(e)}); move it away or choose another --out") from None
    if rows and set(CSV_COLUMNS) - set(rows[0]):
        raise PrepError(f"{path}: not a frames.csv of `cyclegan prep frames` (columns {', '.join(rows[0])})")
    return rows


def _write_rows(path: Path, rows: Sequence[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def _settings_record(settings: FramesSettings) -> dict:
    record = dataclasses.asdict(settings)
    record["per_shot"] = list(settings.per_shot)
    return record


def _load_manifest(out_dir: Path, settings: FramesSettings) -> dict:
    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        if out_dir.exists() and any(out_dir.iterdir()):
            raise PrepError(f"{out_dir}: exists and was not made by `cyclegan prep frames` (no {MANIFEST}); "
                            "choose another --out")
        return {"settings": _settings_record(settings), "videos": {}}
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        previous, videos = doc["settings"], dict(doc["videos"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PrepError(f"{manifest}: unreadable ({first_line(e)}); move it away or choose another --out") from None
    current = _settings_record(settings)
    changed = [k for k in current if previous.get(k) != current[k]]
    if changed:
        was = ", ".join(f"{k} {previous.get(k)!r}" for k in changed)
        raise PrepError(f"{out_dir}: was made with {was}; use the same settings to add to it, or another --out")
    return {"settings": current, "videos": videos}


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def contact_sheet(out_dir: Path, files: Sequence[str], dest: Path) -> Path | None:
    """A grid of (up to PREVIEW_MAX) kept frames, spread evenly over ``files``."""
    if not files:
        return None
    step = max(1, math.ceil(len(files) / PREVIEW_MAX))
    tiles = []
    for name in list(files)[::step]:
        try:
            with Image.open(out_dir / name) as img:
                tile = ImageOps.pad(img.convert("RGB"), PREVIEW_TILE, color=(128, 128, 128))
        except (OSError, ValueError):
            continue
        tiles.append(torch.from_numpy(np.asarray(tile).copy()).permute(2, 0, 1))  # [3, h, w] uint8
    if not tiles:
        return None
    rows = [torch.stack(tiles[i : i + PREVIEW_COLUMNS]) for i in range(0, len(tiles), PREVIEW_COLUMNS)]
    return save_image_atomic(make_grid(rows), dest)


def preview_path(out_dir: Path) -> Path:
    """Beside the folder, not in it: a preview inside would become a training image."""
    out_dir = out_dir.resolve()  # "." has no name to extend
    return out_dir.with_name(out_dir.name + "_contact.png")


def extract_frames(
    videos: Iterable[str | Path],
    out_dir: str | Path,
    *,
    settings: FramesSettings = FramesSettings(),
    max_frames: int = 0,
    preview: str | Path | None = None,
    backend: str = "pyav",
    progress: bool = False,
    echo: Callable[[str], None] = lambda line: None,
) -> FramesResult:
    """Frames from every video in ``videos`` (files, or folders searched recursively) into ``out_dir``.

    ``max_frames`` > 0 caps the folder's total; what is left is shared evenly among the videos still
    to do, so a cap does not fill up from the first episode alone. A video that cannot be read is
    reported through ``echo`` (one line) and the others go on; videos finished by an earlier run are
    skipped. ``preview`` (default: ``<out_dir>_contact.png``) is a contact sheet of the whole folder.
    """
    settings.check()
    if max_frames < 0:
        raise PrepError(f"--max-frames must be >= 0, got {max_frames}")
    out_dir = Path(out_dir)
    paths = find_videos(videos)
    if not paths:
        raise PrepError("no videos given (folders are searched for " + ", ".join(sorted(VIDEO_EXTENSIONS)) + ")")
    # Fail before any work when a library is missing.
    opencv("prep frames"), scenedetect("prep frames"), imagehash("prep frames")
    errors = _video_errors()
    manifest = _load_manifest(out_dir, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / MANIFEST, manifest)  # first: a folder whose videos all fail is still ours
    csv_path = out_dir / CSV_NAME
    rows = _read_rows(csv_path)
    hashes = HashSet(r["phash"] for r in rows)
    existing = {p.name for p in out_dir.iterdir()}
    stems = {Path(src).stem: src for src in manifest["videos"]}
    results: list[VideoResult] = []
    for i, path in enumerate(paths):
        key = str(path.resolve()) if path.exists() else str(path)
        record = manifest["videos"].get(key)
        if record is not None and path.exists() and record.get("file") == _fingerprint(path):
            results.append(VideoResult(source=path, status="skipped", kept=record.get("kept", 0),
                                       reason="done by an earlier run"))
            echo(results[-1].line())
            continue
        if max_frames and len(rows) >= max_frames:
            results.append(VideoResult(source=path, status="skipped", reason=f"--max-frames {max_frames} reached"))
            echo(results[-1].line())
            continue
        other = stems.get(path.stem)
        if other is not None and other != key:
            results.append(VideoResult(source=path, status="failed",
                                       reason=f"another video named {path.stem}.* is in {out_dir} ({other}); rename one"))
            echo(results[-1].line())
            continue
        budget = math.ceil((max_frames - len(rows)) / (len(paths) - i)) if max_frames else sys.maxsize
        try:
            result, kept = process_video(path, out_dir=out_dir, stem=path.stem, settings=settings, hashes=hashes,
                                         existing=existing, budget=budget, backend=backend, progress=progress)
        except errors as e:
            results.append(VideoResult(source=path, status="failed", reason=first_line(e, "unreadable")))
            echo(results[-1].line())
            hashes = HashSet(r["phash"] for r in rows)  # forget hashes of the failed video's frames
            continue
        rows += [k.row() for k in kept]
        stems[path.stem] = key
        _write_rows(csv_path, rows)
        if result.status == "done":
            manifest["videos"][key] = {"file": _fingerprint(path), "kept": result.kept, "shots": result.shots,
                                       "dropped": dict(result.dropped)}
        write_json_atomic(out_dir / MANIFEST, manifest)
        results.append(result)
        echo(result.line())
    if not csv_path.is_file():
        _write_rows(csv_path, rows)
    if all(r.status == "failed" for r in results):
        raise PrepError(f"none of the {len(results)} video(s) could be read")
    dest = Path(preview) if preview is not None else preview_path(out_dir)
    sheet = contact_sheet(out_dir, [r["file"] for r in rows], dest)
    return FramesResult(out_dir=out_dir, videos=results, total=len(rows), csv=csv_path, preview=sheet)
