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

This module streams videos and manages the folder; ``cyclegan.prep.shots`` picks frames from each shot.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from cyclegan.errors import CycleGANError, PrepError, first_line
from cyclegan.fileio import write_json_atomic, write_text_atomic
from cyclegan.image import make_grid, save_image_atomic
from cyclegan.jsonfile import check_fields, read_json_object
from cyclegan.prep.deps import imagehash, opencv, scenedetect
from cyclegan.prep.shots import (
    BarTracker,
    FramePicker,
    FramesSettings,
    HashSet,
    KeptFrame,
    ShotSampler,
    frame_name,
    parse_per_shot,
    timecode,
)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts",
                              ".m2ts", ".wmv", ".flv", ".ogv"})
MANIFEST = "frames.json"
CSV_NAME = "frames.csv"
CSV_COLUMNS = ("file", "source", "timecode", "shot", "shot_start", "shot_end", "phash", "edges", "why")
_PHASH = re.compile(r"[0-9a-fA-F]{1,16}")  # imagehash.phash as hex: 64 bits

DETECT_WIDTH = 256  # shots are detected on frames scaled to about this width (PySceneDetect's own default)
FADE_THRESHOLD = 12  # ThresholdDetector's default: mean intensity of a faded-out frame
PREVIEW_MAX = 240  # frames shown on the contact sheet, spread over the set
PREVIEW_TILE = (160, 90)
PREVIEW_COLUMNS = 12


def find_videos(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given (any extension: an unsupported one fails later, in its own line); folders
    searched recursively for video extensions, sorted."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file()
                            and p.suffix.lower() in VIDEO_EXTENSIONS)
        else:
            found.append(path)
    return list(dict.fromkeys(found))


# ----------------------------------------------------------------------------------------------
# One video


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
        try:
            total = int(video.duration.frame_num)
        except (AttributeError, TypeError, ValueError):
            total = None
        bar = tqdm(total=total, unit="frame", desc=path.name, dynamic_ncols=True, file=sys.stderr,
                   leave=False)
    index, seconds, capped, shape = -1, 0.0, False, None
    try:
        while True:
            frame = video.read()
            if frame is False or frame is None:
                break
            index += 1
            shape = shape or frame.shape
            if frame.shape != shape:  # joined streams: shot detection compares frames of one size
                raise PrepError(f"{path}: the frame size changes from {shape[1]}x{shape[0]} to "
                                f"{frame.shape[1]}x{frame.shape[0]} at frame {index}; split the video where "
                                "it changes and give the parts")
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
                    picker.finish_shot(*sampler.close(cut, index + 1), sampler.bars, sampler.det_shape,
                                       budget)
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
        raise PrepError(
            f"{path}: unreadable ({first_line(e)}); move it away or choose another --out") from None
    if rows and set(CSV_COLUMNS) - set(rows[0]):
        raise PrepError(f"{path}: not a frames.csv of `cyclegan prep frames` (columns {', '.join(rows[0])})")
    for line, row in enumerate(rows, start=2):
        if not all(isinstance(row.get(c), str) for c in CSV_COLUMNS) or not _PHASH.fullmatch(row["phash"]):
            raise PrepError(f"{path}: line {line} is not a row of `cyclegan prep frames` (a missing column, "
                            f"or phash {row.get('phash')!r} is not 1 to 16 hex digits); move it away or "
                            "choose another --out")
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
    doc = read_json_object(manifest, {"settings": dict, "videos": dict}, error=PrepError)
    previous, videos = doc["settings"], doc["videos"]
    for key, record in videos.items():
        check_fields(record, manifest, {"file": dict}, optional={"kept": int, "shots": int, "dropped": dict},
                     what=f"video {key}", error=PrepError)
    current = _settings_record(settings)
    changed = [k for k in current if previous.get(k) != current[k]]
    if changed:
        was = ", ".join(f"{k} {previous.get(k)!r}" for k in changed)
        raise PrepError(f"{out_dir}: was made with {was}; use the same settings to add to it, or another "
                        "--out")
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
    settings: FramesSettings | None = None,
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
    settings = settings or FramesSettings()
    settings.check()
    if max_frames < 0:
        raise PrepError(f"--max-frames must be >= 0, got {max_frames}")
    out_dir = Path(out_dir)
    paths = find_videos(videos)
    if not paths:
        raise PrepError("no videos given (folders are searched for " + ", ".join(sorted(VIDEO_EXTENSIONS))
                        + ")")
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
            results.append(VideoResult(source=path, status="skipped",
                                       reason=f"--max-frames {max_frames} reached"))
            echo(results[-1].line())
            continue
        other = stems.get(path.stem)
        if other is not None and other != key:
            results.append(VideoResult(source=path, status="failed",
                                       reason=f"another video named {path.stem}.* is in {out_dir} ({other}); "
                                              "rename one"))
            echo(results[-1].line())
            continue
        budget = math.ceil((max_frames - len(rows)) / (len(paths) - i)) if max_frames else sys.maxsize
        try:
            result, kept = process_video(path, out_dir=out_dir, stem=path.stem, settings=settings,
                                         hashes=hashes,
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


__all__ = ["BarTracker", "FramePicker", "FramesResult", "FramesSettings", "HashSet", "KeptFrame",
           "ShotSampler",
           "VideoResult", "extract_frames", "find_videos", "frame_name", "parse_per_shot", "process_video",
           "timecode"]
