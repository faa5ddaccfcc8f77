"""Files and streams: inputs named as files, folders, globs or ``-``, planned into outputs and translated.

``translate_paths`` is what ``cyclegan translate`` runs. Planning maps every input to its output
under ``--out`` (mirroring folder structure, with ``--suffix`` and ``--format``) and refuses, per
input, what would overwrite an input or collide with another output; globs skip this command's own
earlier outputs. Still images are translated in windows of ``2 x batch_size`` so same-size images
share a batch without a whole folder in memory; ``-`` reads stdin and ``--out -`` writes stdout;
videos go to ``cyclegan.translate.video``. A bad input is reported and counted; the others are
still written, each atomically. Under torchrun the work is split across processes
(``cyclegan.translate.shard``).
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cyclegan.distributed import DistInfo
from cyclegan.errors import ImageLoadError, TranslateError
from cyclegan.image import IMAGE_EXTENSIONS, load_image_rgba, save_image_atomic
from cyclegan.temporal import TemporalStabilizer
from cyclegan.translate.api import PreparedImage, Translator
from cyclegan.translate.shard import all_looked, check_group, merge_summaries, share
from cyclegan.translate.video import VIDEO_EXTENSIONS, translate_video

__all__ = ["OUTPUT_FORMATS", "OutputOptions", "TranslateSummary", "check_output_target", "translate_paths"]

# --format name -> (Pillow format, file extension)
OUTPUT_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}
_KEEP_EXTENSIONS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}


# ------------------------------------------------------------------------------------------- files


@dataclass(frozen=True)
class OutputOptions:
    suffix: str = ""
    format: str | None = None  # png | jpg | webp; None keeps png/jpg/webp inputs' format, else png
    quality: int = 95
    overwrite: bool = False


@dataclass
class TranslateSummary:
    """What a ``translate_paths`` call did. ``translated`` counts outputs (an image or a whole video);
    images and video frames are counted, and timed, apart: a video is one output but many frames, so
    one rate over both would be neither an image rate nor a frame rate."""

    translated: int = 0
    skipped: int = 0
    failed: int = 0
    images: int = 0  # still images translated
    videos: int = 0
    frames: int = 0  # frames of the translated videos
    seconds: float = 0.0
    image_seconds: float = 0.0  # time spent on still images (loading, translating, saving)
    video_seconds: float = 0.0  # time spent on videos (decoding, translating, encoding)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def line(self) -> str:
        tail = f"skipped {self.skipped}, failed {self.failed} in {self.seconds:.1f} s"
        if not self.videos:
            rate = self.images / self.seconds if self.seconds > 0 else 0.0
            return f"translated {self.translated}, {tail} ({rate:.2f} img/s)"
        fps = self.frames / self.video_seconds if self.video_seconds > 0 else 0.0
        done = f"{_count(self.videos, 'video')} ({_count(self.frames, 'frame')}, {fps:.1f} frames/s)"
        if self.images:
            rate = self.images / self.image_seconds if self.image_seconds > 0 else 0.0
            done = f"{_count(self.images, 'image')} ({rate:.2f} img/s) and {done}"
        return f"translated {done}, {tail}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class _Job:
    source: Path | None  # None: stdin
    target: Path | None  # None: stdout
    video: bool = False

    @property
    def name(self) -> str:
        return str(self.source) if self.source is not None else "<stdin>"


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    base = []
    for p in parts:
        if glob.has_magic(p):
            break
        base.append(p)
    return Path(*base) if base else Path(".")


def _scannable(rel: Path, path: Path, out: Path | None) -> bool:
    """Whether a file found in a folder input is an input: not hidden (our own temp files are), and not
    inside --out, which may sit within the input folder and would otherwise be translated again."""
    if any(part.startswith(".") for part in rel.parts):
        return False
    if out is not None and out.is_dir():
        with contextlib.suppress(OSError):
            return out.resolve() not in path.resolve().parents
    return True


def _below_out(path: Path, out: Path | None, base: Path) -> bool:
    """Whether a glob match lies in --out while --out sits below the pattern's fixed folder ``base``:
    then it is an earlier output (as ``_scannable`` decides for folder inputs). A pattern that names
    --out itself (``out/*.png``) keeps its matches."""
    if out is None or not out.is_dir():
        return False
    with contextlib.suppress(OSError):
        out_r = out.resolve()
        return base.resolve() in out_r.parents and out_r in path.resolve().parents
    return False


def check_output_target(inputs: Sequence[str], out: str | os.PathLike | None) -> None:
    """Refuse, before any model is loaded or image read, an ``out`` that cannot take the outputs: a
    file where a folder is needed, a folder where a file is needed (one input, ``out`` named like an
    image or video), or a place that cannot be created or written. Touches nothing on disk."""
    if out is None or str(out) == "-":
        return
    out = Path(out)
    single = len(inputs) == 1 and (inputs[0] == "-" or Path(inputs[0]).is_file())
    names_file = single and out.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    if names_file and out.is_dir():
        raise TranslateError(f"--out {out}: is a folder, but for one input --out names the output file; "
                             "give a file name, or a folder name without an image extension")
    if not names_file and out.exists() and not out.is_dir():
        what = ("one input needs" if single else f"{len(inputs)} inputs need" if len(inputs) > 1
                else "a folder or pattern needs")
        raise TranslateError(f"--out {out}: is a file, but {what} an output folder; choose a folder name"
                             + (" (or name the output file with an image extension)" if single else ""))
    folder = out.parent if names_file else out
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise TranslateError(f"--out {out}: {existing} is a file, not a folder")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise TranslateError(f"--out {out}: cannot write in {existing} (permission denied)")


def _image_suffix(source_suffix: str, fmt: str | None) -> str:
    if fmt is not None:
        return OUTPUT_FORMATS[fmt][1]
    return source_suffix.lower() if source_suffix.lower() in _KEEP_EXTENSIONS else ".png"


def _plan(
    inputs: Sequence[str], out: Path | None, *, recursive: bool, options: OutputOptions,
          to_stdout: bool = False
) -> tuple[list[_Job], list[tuple[str, str]]]:
    """Inputs -> jobs with their output paths, plus (input, reason) for inputs that cannot be used.

    ``out`` None means stdout: allowed for ``-`` (stdin) without --out, or one image with ``--out -``.
    """
    videos = VIDEO_EXTENSIONS
    wanted = IMAGE_EXTENSIONS | videos
    found: list[tuple[Path | None, Path]] = []  # (source, name relative to --out)
    globbed: set[Path] = set()  # sources found by a pattern rather than named
    failures: list[tuple[str, str]] = []
    single_file = len(inputs) == 1 and (inputs[0] == "-" or Path(inputs[0]).is_file())
    for item in inputs:
        if item == "-":
            found.append((None, Path("stdin.png")))
            continue
        p = Path(item)
        if p.is_dir() and out is not None and out.exists() and out.resolve() == p.resolve():
            reason = "--out is this input folder; outputs would mix with (and on a rerun be read as) inputs"
            failures.append((item, reason + ": choose another --out"))
        elif p.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(
                f for f in p.glob(pattern)
                if f.is_file() and f.suffix.lower() in wanted and _scannable(f.relative_to(p), f, out)
            )
            if not files:
                failures.append((item, "no images or videos in this folder" + ("" if recursive else
                                 " (use --recursive for subfolders)")))
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            found.append((p, Path(p.name)))
        elif glob.has_magic(item):
            base = _glob_base(item)
            matches = sorted(Path(m) for m in glob.glob(item, recursive=recursive) if Path(m).is_file())
            if not matches:
                failures.append((item, "no files match this pattern"))
            for m in matches:
                if _below_out(m, out, base):
                    continue
                try:
                    rel = m.relative_to(base)
                except ValueError:
                    rel = Path(m.name)
                found.append((m, rel))
                globbed.add(m)
        else:
            failures.append((item, "no such file or folder"))

    file_target = (
        out is not None
        and single_file
        and len(found) == 1
        and not out.is_dir()
        and out.suffix.lower() in wanted
    )
    if file_target and options.format is not None:
        own = _KEEP_EXTENSIONS.get(out.suffix.lower())
        if own != options.format:
            raise TranslateError(f"--out {out} does not match --format {options.format}")

    def target_of(src: Path | None, rel: Path, is_video: bool) -> Path | None:
        if file_target:
            return out
        if out is None:
            if src is not None and not (to_stdout and single_file and len(found) == 1 and not is_video):
                raise TranslateError(
                    "--out is required (a folder, a file name for a single input, or - for one image to "
                    "stdout)"
                )
            return None
        suffix = src.suffix if src is not None and is_video else _image_suffix(rel.suffix, options.format)
        return out / rel.parent / f"{rel.stem}{options.suffix}{suffix}"

    # A pattern matching this command's own outputs (``shots/*.png --out shots --suffix _x`` run twice
    # finds b_x.png beside b.png) would translate them again on every rerun: a match that is the output
    # of another match is left out. Only where the output's name differs from its source's by folder or
    # suffix; a mere change of format (a.jpg -> a.png next to a user's a.png) stays a refused collision.
    if out is not None and globbed:
        earlier_outputs = set()
        for src, rel in found:
            if src is None:
                continue
            target = target_of(src, rel, src.suffix.lower() in videos)
            if target is not None and (target.parent.resolve() != src.parent.resolve()
                                       or target.stem != src.stem):
                earlier_outputs.add(target.resolve())
        found = [(src,
                  rel) for src, rel in found if src not in globbed or src.resolve() not in earlier_outputs]

    inputs_resolved = {src.resolve() for src, _ in found if src is not None}
    jobs: list[_Job] = []
    taken: dict[Path, str] = {}
    for src, rel in found:
        is_video = src is not None and src.suffix.lower() in videos
        target = target_of(src, rel, is_video)
        name = str(src) if src is not None else "<stdin>"
        if target is not None:
            key = target.resolve()
            if key in inputs_resolved:
                reason = f"output {target} would overwrite an input file; use another --out or --suffix"
                failures.append((name, reason))
                continue
            if key in taken:
                failures.append((name, f"output {target} is also the output of {taken[key]}; rename one"))
                continue
            taken[key] = name
        jobs.append(_Job(source=src, target=target, video=is_video))
    return jobs, failures


def _save_kwargs(target: Path, fmt: str | None, quality: int) -> tuple[str, dict]:
    name = fmt or _KEEP_EXTENSIONS.get(target.suffix.lower())
    if name is None:
        raise TranslateError(f"{target}: cannot write images with extension {target.suffix or '(none)'}; "
                             "use .png, .jpg or .webp")
    pil_format = OUTPUT_FORMATS[name][0]
    return pil_format, ({"quality": quality} if name in ("jpg", "webp") else {})


def _encode(img: Image.Image, pil_format: str) -> Image.Image:
    # JPEG has no alpha channel: the translation was made from the image composited on white, so
    # dropping alpha gives exactly that.
    return img.convert("RGB") if pil_format == "JPEG" and img.mode != "RGB" else img


def translate_paths(
    translator: Translator,
    inputs: Sequence[str],
    *,
    out: str | os.PathLike | None = None,
    recursive: bool = False,
    options: OutputOptions = OutputOptions(),
    temporal: str = "off",
    temporal_strength: float = 0.8,
    temporal_smoothing: float = 0.0,
    progress: bool = False,
    echo: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    shard: DistInfo | None = None,
) -> TranslateSummary:
    """Translate files, folders, globs, videos and ``-`` (stdin to stdout) into ``out``.

    Outputs mirror the input names under ``out`` (``out`` may be a file name for a single input).
    Existing outputs are skipped unless ``options.overwrite``; an input file is never overwritten.
    A bad input is reported through ``echo`` and counted as failed; every good one is still written.
    ``shard`` (inside ``shard.shard_group()``): this process's place in a torchrun job; it
    translates its share and the returned counts are the whole job's.
    """
    shard = shard if shard is not None else DistInfo()
    check_group(shard)
    if options.format is not None and options.format not in OUTPUT_FORMATS:
        raise TranslateError(f"--format {options.format!r}: choose from {', '.join(OUTPUT_FORMATS)}")
    if not 1 <= options.quality <= 100:
        raise TranslateError(f"--quality must be in 1..100, got {options.quality}")
    if not 0.0 <= temporal_smoothing < 1.0:
        raise TranslateError(f"--temporal-smoothing must be in [0, 1), got {temporal_smoothing}")
    if temporal_smoothing > 0:  # the former flag: in-place blending
        temporal, temporal_strength = "blend", temporal_smoothing
    TemporalStabilizer(mode=temporal, strength=temporal_strength)  # bad values fail before any work
    video_options = {"temporal": temporal, "temporal_strength": temporal_strength}
    start = time.perf_counter()
    check_output_target(inputs, out)
    to_stdout = out is not None and str(out) == "-"
    out_path = Path(out) if out is not None and not to_stdout else None
    jobs, failures = _plan(inputs, out_path, recursive=recursive, options=options, to_stdout=to_stdout)
    if shard.enabled and any(j.source is None or j.target is None for j in jobs):
        raise TranslateError("- (stdin or stdout) cannot be split across processes; run a single process")
    summary = TranslateSummary()

    def fail(name: str, reason: str) -> None:
        summary.failed += 1
        summary.failures.append((name, reason))
        echo(f"error: {name}: {reason}")

    # Every process plans the whole job; what planning finds is reported (and counted) once.
    for name, reason in failures if shard.is_main else ():
        fail(name, reason)

    pending, skipped = [], 0
    for job in jobs:
        if job.target is not None and job.target.exists() and not options.overwrite:
            skipped += 1
        elif job.target is not None and job.target.is_dir():
            if shard.is_main:
                fail(job.name, f"output {job.target} is a folder")
        else:
            pending.append(job)
    all_looked(shard)  # no process writes an output before every process has seen which exist
    if shard.is_main:
        summary.skipped = skipped
        if skipped:
            echo(f"note: {skipped} output(s) already exist and were left as they are; --overwrite replaces "
                 "them")

    images = [j for j in pending if not j.video and j.source is not None and j.target is not None]
    # Load a window of files at a time so same-size images can share a batch without holding a
    # whole folder of photos in memory. Processes share out whole windows, the ones a single
    # process would make, so every image meets the same batch as it would there.
    window = translator.batch_size * 2
    windows = share([images[k : k + window] for k in range(0, len(images), window)], shard)
    images_start = time.perf_counter()
    bar = None
    if progress and windows and shard.is_main:
        bar = tqdm(total=sum(map(len, windows)), unit="img", dynamic_ncols=True, file=sys.stderr)
    try:
        for chunk in windows:
            _translate_image_window(translator, chunk, options, summary, fail)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    summary.image_seconds = time.perf_counter() - images_start

    videos = set(share([j for j in pending if j.video and j.source is not None and j.target is not None],
                       shard))
    for job in pending:
        if job.video and job not in videos:
            continue
        if job.source is None or job.target is None:
            t0 = time.perf_counter()
            _translate_stream(translator, job, options, summary, fail, stdin, stdout)
            summary.image_seconds += time.perf_counter() - t0
        elif job.video:
            t0 = time.perf_counter()
            _translate_video_job(translator, job, video_options, progress, summary, fail)
            summary.video_seconds += time.perf_counter() - t0
    summary.seconds = time.perf_counter() - start
    return merge_summaries(summary, shard)


def _translate_image_window(translator, jobs, options, summary, fail) -> None:
    loaded: list[tuple[_Job, PreparedImage]] = []
    for job in jobs:
        try:
            rgb, alpha = load_image_rgba(job.source)
        except ImageLoadError as e:
            fail(job.name, e.reason)
            continue
        # Resized as it is loaded: only the window's translated sizes are held, not its originals.
        item = translator.prepare_rgba(np.asarray(rgb), np.asarray(alpha) if alpha is not None else None)
        loaded.append((job, item))
    if not loaded:
        return
    try:
        outputs = translator.translate_prepared([it for _, it in loaded])
    except (RuntimeError, MemoryError) as e:
        # A whole batch failing (out of memory, backend error) fails its files, not the command.
        reason = (f"translation failed ({type(e).__name__}: "
                  f"{str(e).strip().splitlines()[0] if str(e) else ''})")
        for job, _ in loaded:
            fail(job.name, reason)
        return
    for (job, item), rgb in zip(loaded, outputs):
        try:
            pil_format, kwargs = _save_kwargs(job.target, options.format, options.quality)
            img = _encode(item.hand_back(rgb), pil_format)
            save_image_atomic(img, job.target, format=pil_format, **kwargs)
        except (OSError, ValueError, TranslateError) as e:
            fail(job.name, f"cannot write {job.target} ({e})")
            continue
        summary.translated += 1
        summary.images += 1


def _load_stdin(stdin: BinaryIO | None) -> tuple[Image.Image, Image.Image | None]:
    data = (stdin or sys.stdin.buffer).read()
    # The file loader's checks (empty, truncated, decompression bombs) need a path; a private temp
    # file keeps one implementation of them.
    fd, tmp = tempfile.mkstemp(prefix="cyclegan-stdin-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return load_image_rgba(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _discard_stdout() -> None:
    """Point the process's stdout at the null device. Bytes still buffered for a stream that failed
    would fail again when Python flushes at exit and print "Exception ignored ..." after our error."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _write_stdout(data: bytes, stdout: BinaryIO | None) -> None:
    """Write the encoded image to ``stdout`` (None: the process's own).

    A closed pipe (``| head``) raises BrokenPipeError, which the command line ends quietly, as other
    tools do; any other failure (a full disk behind ``> file``) ends the command with one line: the
    stream is unusable, so there is nothing left to do for later inputs.
    """
    sink = stdout if stdout is not None else sys.stdout.buffer
    try:
        sink.write(data)
        sink.flush()
    except BrokenPipeError:
        if stdout is None:
            _discard_stdout()
        raise
    except OSError as e:
        if stdout is None:
            _discard_stdout()
        raise TranslateError(f"<stdout>: cannot write the translated image ({e.strerror or e})") from None


def _translate_stream(translator, job, options, summary, fail, stdin, stdout) -> None:
    """A job reading stdin or writing stdout (or both): one image, no batching."""
    try:
        rgb, alpha = _load_stdin(stdin) if job.source is None else load_image_rgba(job.source)
    except ImageLoadError as e:
        fail(job.name, e.reason)
        return
    item = translator.prepare_rgba(np.asarray(rgb), np.asarray(alpha) if alpha is not None else None)
    img = item.hand_back(translator.translate_prepared([item])[0])
    if job.target is None:
        pil_format, kwargs = OUTPUT_FORMATS[options.format or "png"][0], {}
        if options.format in ("jpg", "webp"):
            kwargs = {"quality": options.quality}
        buf = io.BytesIO()
        _encode(img, pil_format).save(buf, format=pil_format, **kwargs)
        _write_stdout(buf.getvalue(), stdout)
    else:
        try:
            pil_format, kwargs = _save_kwargs(job.target, options.format, options.quality)
            save_image_atomic(_encode(img, pil_format), job.target, format=pil_format, **kwargs)
        except (OSError, ValueError, TranslateError) as e:
            fail(job.name, f"cannot write {job.target} ({e})")
            return
    summary.translated += 1
    summary.images += 1


def _translate_video_job(translator, job, video_options, progress, summary, fail) -> None:
    # Without PyAV (the video extra) translate_video raises a TranslateError naming the extra.
    try:
        result = translate_video(translator, job.source, job.target, progress=progress, **video_options)
    except TranslateError as e:
        reason = str(e)
        prefix = f"{job.source}: "  # video errors name the file themselves
        fail(job.name, reason.removeprefix(prefix))
        return
    except (RuntimeError, MemoryError) as e:
        fail(job.name, f"translation failed ({type(e).__name__}: {e})")
        return
    summary.translated += 1
    summary.videos += 1
    summary.frames += result.frames
