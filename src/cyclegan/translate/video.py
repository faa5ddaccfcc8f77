"""Video: decode with PyAV, translate frames in batches through a Translator, encode at the same fps and size.

The audio stream is copied packet for packet when the output container can hold its codec, and
re-encoded otherwise (GIF holds none). ``temporal_smoothing`` alpha blends every output frame with
the previous output, y_t = alpha * y_(t-1) + (1 - alpha) * G(x_t): an exponential moving average
that damps the frame-to-frame flicker of a per-frame generator at the cost of some ghosting on fast
motion. The output is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from cyclegan.errors import TranslateError
from cyclegan.temporal import TemporalStabilizer

if TYPE_CHECKING:
    from cyclegan.translate.api import Translator

__all__ = ["VIDEO_EXTENSIONS", "VideoResult", "translate_video"]

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".gif"})

# Output container (by extension) -> video encoders to try, best first.
_VIDEO_CODECS = {
    ".mp4": ("libx264", "h264", "libopenh264", "mpeg4"),
    ".m4v": ("libx264", "h264", "libopenh264", "mpeg4"),
    ".mov": ("libx264", "h264", "libopenh264", "mpeg4"),
    ".mkv": ("libx264", "h264", "libopenh264", "libvpx-vp9", "mpeg4"),
    ".webm": ("libvpx-vp9", "libvpx"),
    ".avi": ("mpeg4", "libx264"),
    ".gif": ("gif",),
}
# Audio codecs each container takes as they are; anything else is re-encoded to the first fallback.
_AUDIO_COPY = {
    ".mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    ".m4v": {"aac", "mp3", "alac", "ac3", "eac3"},
    ".mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le"},
    ".mkv": None,  # Matroska holds any codec
    ".webm": {"opus", "vorbis"},
    ".avi": {"mp3", "ac3", "pcm_s16le"},
    ".gif": set(),
}
_AUDIO_ENCODE = {".webm": ("libopus", "opus", "libvorbis"), ".avi": ("libmp3lame", "mp3")}
_DEFAULT_AUDIO_ENCODE = ("aac", "libmp3lame")


@dataclass(frozen=True)
class VideoResult:
    path: Path
    frames: int
    fps: Fraction
    size: tuple[int, int]  # (width, height)
    codec: str
    audio: str  # "copied" | "re-encoded (codec)" | "none" | "dropped (reason)"


def _encoder(names: tuple[str, ...]) -> str | None:
    import av  # the video extra; translate_video checks it is installed before calling here

    def available(name: str) -> bool:
        try:
            av.codec.Codec(name, "w")  # raises when this FFmpeg build has no such encoder
        except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError or ValueError by version
            return False
        return True

    return next((name for name in names if available(name)), None)


def _video_stream(container, codec: str, fps: Fraction, size: tuple[int, int]):
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = size
    if codec == "gif":
        stream.pix_fmt = "rgb8"
    elif codec in ("libx264", "h264", "libopenh264"):
        # 4:2:0 chroma needs even sides; 4:4:4 keeps odd-sized videos at their exact size.
        stream.pix_fmt = "yuv420p" if size[0] % 2 == 0 and size[1] % 2 == 0 else "yuv444p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "medium"}
    else:
        stream.pix_fmt = "yuv420p"
        # mpeg4 / vpx defaults are tuned for small files; a stylised video deserves more bits.
        stream.bit_rate = int(max(2_000_000, size[0] * size[1] * float(fps) * 0.3))
    return stream


def translate_video(
    translator: Translator,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    batch_size: int | None = None,
    temporal: str = "off",
    temporal_strength: float = 0.8,
    temporal_smoothing: float = 0.0,
    progress: bool = False,
) -> VideoResult:
    """Translate every frame of ``src`` into ``dst`` (container and codec chosen by its extension).

    ``temporal`` (off | blend | flow) and ``temporal_strength`` stabilise the frames against
    flicker (``cyclegan.temporal.TemporalStabilizer``); ``temporal_smoothing`` ALPHA > 0 is the
    former flag, the same as ``temporal="blend", temporal_strength=ALPHA``.
    """
    try:
        import av  # the video extra
    except ImportError:
        raise TranslateError(f"{src}: video needs PyAV (pip install 'cyclegan[video]')") from None
    src, dst = Path(src), Path(dst)
    if not 0.0 <= temporal_smoothing < 1.0:
        raise TranslateError(f"--temporal-smoothing must be in [0, 1), got {temporal_smoothing}")
    if temporal_smoothing > 0:
        temporal, temporal_strength = "blend", temporal_smoothing
    stabilizer = TemporalStabilizer(mode=temporal, strength=temporal_strength)  # validates both
    ext = dst.suffix.lower()
    if ext not in _VIDEO_CODECS:
        raise TranslateError(f"{dst}: unsupported video extension; use one of "
                             f"{', '.join(sorted(_VIDEO_CODECS))}")
    codec = _encoder(_VIDEO_CODECS[ext])
    if codec is None:
        raise TranslateError(f"{dst}: this PyAV build has no encoder for {ext} "
                             f"({', '.join(_VIDEO_CODECS[ext])})")
    batch_size = batch_size or max(1, translator.batch_size)

    try:
        inp = av.open(str(src))
    except (av.error.FFmpegError, OSError) as e:
        raise TranslateError(f"{src}: cannot open video ({e})") from None
    tmp = dst.with_name(f".{dst.stem}.tmp-{uuid.uuid4().hex[:8]}{dst.suffix}")
    out = None
    bar = None
    try:
        if not inp.streams.video:
            raise TranslateError(f"{src}: no video stream")
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        fps = vin.average_rate or vin.guessed_rate or Fraction(25)
        size = translator.output_size(vin.codec_context.width, vin.codec_context.height)
        ain = inp.streams.audio[0] if inp.streams.audio else None

        dst.parent.mkdir(parents=True, exist_ok=True)
        out = av.open(str(tmp), "w", format=None if ext != ".m4v" else "mp4")
        vout = _video_stream(out, codec, fps, size)
        aout, audio, copy_audio = None, "none", False
        if ain is not None:
            allowed = _AUDIO_COPY.get(ext, set())
            if allowed is None or ain.codec_context.name in allowed:
                aout, copy_audio = out.add_stream_from_template(ain), True
                audio = "copied"
            else:
                enc = _encoder(_AUDIO_ENCODE.get(ext, _DEFAULT_AUDIO_ENCODE)) if ext != ".gif" else None
                if enc is None:
                    audio = ("dropped (the container holds no audio)" if ext == ".gif"
                             else "dropped (no encoder)")
                else:
                    aout = out.add_stream(enc, rate=ain.codec_context.sample_rate)
                    with contextlib.suppress(AttributeError, ValueError):
                        aout.layout = ain.codec_context.layout.name
                    audio = f"re-encoded ({enc})"

        if progress:
            bar = tqdm(total=vin.frames or None, unit="frame", dynamic_ncols=True, file=sys.stderr,
                       desc=src.name)
        state = {"index": 0}
        time_base = Fraction(1) / fps

        def flush(frames: list[np.ndarray]) -> None:
            outs = translator(frames)  # list of [H, W, 3] uint8
            for x, y in zip(frames, outs):
                y = stabilizer(x, y)  # off: y itself
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(y), format="rgb24")
                # Constant frame rate: frame i is shown at i / fps.
                frame.pts = state["index"]
                frame.time_base = time_base
                state["index"] += 1
                for packet in vout.encode(frame):
                    out.mux(packet)
            if bar is not None:
                bar.update(len(outs))

        batch: list[np.ndarray] = []
        streams = [s for s in (vin, ain) if s is not None]
        try:
            for packet in inp.demux(*streams):
                if packet.stream.type == "video":
                    for frame in packet.decode():
                        batch.append(frame.to_ndarray(format="rgb24"))  # [H, W, 3] uint8
                        if len(batch) >= batch_size:
                            flush(batch)
                            batch = []
                elif aout is not None:
                    if copy_audio:
                        if packet.dts is None:  # the demuxer's end-of-stream marker
                            continue
                        packet.stream = aout
                        out.mux(packet)
                    else:
                        for aframe in packet.decode():
                            for p in aout.encode(aframe):
                                out.mux(p)
        except av.error.FFmpegError as e:
            if state["index"] == 0 and not batch:
                raise TranslateError(f"{src}: cannot decode video ({e})") from None
            raise TranslateError(
                f"{src}: corrupt video data after frame {state['index'] + len(batch)} ({e})") from None
        if batch:
            flush(batch)
        if state["index"] == 0:
            raise TranslateError(f"{src}: no decodable video frames")
        for packet in vout.encode(None):
            out.mux(packet)
        if aout is not None and not copy_audio:
            for packet in aout.encode(None):
                out.mux(packet)
        out.close()
        out = None
        os.replace(tmp, dst)
        return VideoResult(path=dst, frames=state["index"], fps=Fraction(fps), size=size, codec=codec,
                           audio=audio)
    finally:
        if bar is not None:
            bar.close()
        if out is not None:
            with contextlib.suppress(Exception):
                out.close()
        inp.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
