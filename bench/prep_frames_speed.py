"""How long `cyclegan prep frames` takes per minute of video on this machine, against decoding alone.

A synthetic 480p clip (854x480, 24 fps, one minute: textured scenes that pan slowly, hard cuts every
2-4 s, two fades to black) is written with PyAV, or pass a real one with --clip. Three rows, their
timed repeats interleaved so a busy moment hits all of them alike:

- decode: read every frame through PySceneDetect's video stream (the reference: nothing is faster);
- decode + shots: also run the two shot detectors prep frames uses on each downscaled frame;
- prep frames: the whole command (shots, candidates, filters, hashes, writing PNGs, frames.csv and the
  contact sheet) into a fresh folder.

    python bench/prep_frames_speed.py [--clip film.mp4] [--repeats 3] [--markdown]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

from cyclegan.prep import frames as F

NAME = "prep_frames_speed"
PACKAGES = ("scenedetect-headless", "imagehash", "av", "opencv-python-headless")


def make_clip(path: Path, *, seconds: float = 60.0, fps: int = 24,
              size: tuple[int, int] = (854, 480)) -> Path:
    """Textured scenes (shapes over grain) panning 1 px per frame, cuts every 2-4 s, fades at 20 s and 45
    s."""
    import av  # extra: video

    w, h = size
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        n, k, scene, left = round(seconds * fps), 0, None, 0
        for i in range(n):
            if left == 0:  # a new shot
                scene = np.empty((h, w + 200, 3), np.uint8)
                scene[:] = rng.integers(40, 200, 3)
                for _ in range(60):
                    x, y = rng.integers(0, w + 160), rng.integers(0, h - 20)
                    scene[y : y + rng.integers(10, 120), x : x + rng.integers(10, 160)] = rng.integers(20,
                                                                                                       235, 3)
                left, k = int(rng.integers(2 * fps, 4 * fps)), 0
            frame = scene[:, k % 200 : k % 200 + w].astype(np.int16)
            frame += rng.integers(-6, 7, frame.shape, dtype=np.int16)  # film grain
            t = i / fps
            for fade_at in (20.0, 45.0):  # 1 s down to black and back up
                if abs(t - fade_at) < 1.0:
                    frame = frame * abs(t - fade_at)
            frame = np.clip(frame, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            k, left = k + 1, left - 1
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode(clip: Path, *, shots: bool) -> int:
    """Read every frame (and with ``shots``, feed the shot detectors as prep frames does); frame count."""
    import cv2  # extra: prep

    video = F.open_video(clip, "pyav")
    sd = F.scenedetect("bench")
    detectors = [sd.ContentDetector(min_scene_len=12), sd.ThresholdDetector(threshold=F.FADE_THRESHOLD)]
    n = 0
    while (frame := video.read()) is not False:
        n += 1
        if shots:
            small = F.detect_size(frame.shape[:2])
            det = frame if small is None else cv2.resize(frame, small, interpolation=cv2.INTER_LINEAR)
            for d in detectors:
                d.process_frame(video.position, det)
    return n


def main() -> int:
    p = harness.make_parser(NAME, __doc__)
    p.add_argument("--clip", type=Path, help="a real video instead of the synthetic 480p minute")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    harness.check_minimums(p, args, {"repeats": 1})
    log = harness.Progress()
    hw = harness.hardware_info("cpu", packages=PACKAGES)
    work = Path(tempfile.mkdtemp(prefix="prep_frames_bench_"))
    try:
        clip = args.clip or make_clip(work / "clip.mp4")
        log(f"clip {clip}")
        video = F.open_video(clip, "pyav")
        minutes = float(video.duration.seconds) / 60.0
        runs: dict[str, list[dict]] = {"decode": [], "decode + shots": [], "prep frames": []}
        kept = 0
        for r in range(args.repeats):
            for row, repeats in runs.items():
                out = work / f"frames_{r}"
                with harness.Stopwatch() as sw:
                    if row == "prep frames":
                        kept = F.extract_frames([clip], out).total
                    else:
                        decode(clip, shots=row == "decode + shots")
                repeats.append(sw.record())
                shutil.rmtree(out, ignore_errors=True)
                out.with_name(out.name + "_contact.png").unlink(missing_ok=True)
                log(f"repeat {r + 1}: {row} {sw.wall_s:.1f} s")
        stats = {row: harness.timing_stats(reps, threads=hw["cpu_usable"]) for row, reps in runs.items()}
        reference = stats["decode"]["median"]
        rows, results = [], []
        cpu_reference = statistics.median(r["cpu_s"] for r in runs["decode"])
        for row, s in stats.items():
            per_min = s["median"] / minutes
            # CPU seconds (all threads) barely depend on other processes: the steadier comparison on a busy
            # machine.
            cpu = statistics.median(r["cpu_s"] for r in runs[row])
            notes = harness.timing_notes(s, busy_check=True)
            rows.append([row, harness.fmt(per_min, ".1f"), f"{s['median'] / reference:.2f}x",
                         harness.fmt(cpu / minutes, ".1f"), f"{cpu / cpu_reference:.2f}x", "; ".join(notes)])
            results.append({"row": row, "seconds_per_minute": per_min,
                            "cpu_seconds_per_minute": cpu / minutes, "stats": s})
        print(harness.hardware_line(hw))
        print(f"clip: {clip.name}, {minutes:.2f} min; prep frames kept {kept} frames")
        print(harness.format_table(["row", "s per video minute", "vs decode", "CPU s per video minute",
                                    "CPU vs decode", "notes"], rows, right={1, 2, 3, 4},
                                   markdown=args.markdown))
        footer = harness.busy_footer(list(stats.values()), hw)
        if footer:
            print(footer)
        hw["loadavg_end"] = harness.loadavg()
        harness.write_results(args.out, benchmark=NAME, hardware=hw,
                              config={"clip": str(args.clip or "synthetic 854x480 24 fps 60 s"),
                                      "repeats": args.repeats}, results=results, kept=kept)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
