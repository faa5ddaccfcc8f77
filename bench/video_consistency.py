#!/usr/bin/env python
"""Video temporal consistency: per-frame translation vs ``--temporal blend`` vs ``--temporal flow``.

Clips with real camera and object motion are made from real horse2zebra photos, so the true motion
of every pixel is known:

    pan      a handheld-looking pan (sub-pixel, uneven speed, slight vertical drift) over a mosaic
    zoom     a zoom-in (scale 1.4 -> 0.75 of the mosaic per output pixel) with a drifting centre
    object   a photo cut-out (ellipse) moving fast over a slowly panning background: occlusions

Every frame gets camera-like sensor noise (``--noise``, std in 8-bit levels; a per-frame generator
turns exactly such invisible input changes into flicker). ``--clip PATH`` adds any video file (its
first ``--frames`` frames, scaled to ``--size``); it has no known motion, so its ground-truth columns
are empty.

Each frame is translated once (the per-frame result, ``off``); the blend and flow stabilisers of
``cyclegan.temporal`` then post-process the same outputs, so the modes differ only in the
stabiliser. Columns:

    WE         warping error (Lai et al. 2018; cyclegan.metrics.warping: flow of the input by DIS
               MEDIUM, occlusion mask), mean |O_t - warp(O_t-1)| in 8-bit levels / 255
    WE-gt      the same along the clip's true motion and true occlusions (independent of DIS: the
               stabiliser cannot have fitted the metric's own flow)
    x off      WE of the mode / WE of per-frame translation (the goal: flow <= 0.5)
    PSNR       fidelity to the per-frame result outside occlusions (true ones where known), pooled
               over frames 1.. (frame 0 is identical in every mode); ``worst``: the worst frame
    ms/frame   generator + stabiliser per 512 px frame on CPU (median over frames, batch 1;
               decoding and encoding, the same in every mode, excluded); ``stab ms`` the
               stabiliser alone; ``x time`` against off

``--sweep 0.5,0.9`` adds flow rows at other strengths (the same per-frame outputs stabilised again).

The input row is the floor: the warping error of the input clip itself.

    python bench/video_consistency.py --checkpoint RUN          # 3 clips x 40 frames at 512 px
    python bench/video_consistency.py --checkpoint RUN --clip my.mp4 --frames 60
    python bench/video_consistency.py --checkpoint RUN --size 256 --frames 12   # a quick look

A trained model is needed for meaningful numbers (an untrained generator's output is noise-like and
flickers in ways no trained one does): e.g. ``cyclegan train --dataroot
../shared/datasets/horse2zebra-128 --preset tiny --crop-size 128 --load-size 128 --max-minutes 10``.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import harness
import numpy as np
import torch
from harness import Stopwatch, fmt, fmt_ratio

from cyclegan.analyze.video import read_video_frames
from cyclegan.image import IMAGE_EXTENSIONS
from cyclegan.metrics.warping import masked_warping_error
from cyclegan.temporal import TemporalStabilizer, compute_flow, occlusion_mask, to_gray
from cyclegan.translate import Translator

CLIPS = ("pan", "zoom", "object")
DEFAULT_DATA = harness.REPO.parent / "shared" / "datasets" / "horse2zebra"


# ------------------------------------------------------------------------------------------ clips


@dataclass
class Frame:
    image: np.ndarray  # [H, W, 3] uint8
    flow: np.ndarray | None  # true flow to the previous frame, [H, W, 2] (cur -> prev); None: unknown
    occluded: np.ndarray | None  # true occlusion w.r.t. the previous frame, [H, W] bool


def _photos(data: Path, domain: str, n: int, skip: int = 0) -> list[np.ndarray]:
    folder = data / f"train{domain}"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[skip: skip + n]
    if len(files) < n:
        raise SystemExit(f"error: {folder}: need {n} photos, found {len(files)}")
    out = []
    for p in files:
        img = cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        out.append(cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA))
    return out


def mosaic(data: Path, rows: int, cols: int, skip: int = 0) -> np.ndarray:
    """rows x cols real photos (256 px each) side by side: a scene larger than the frame."""
    tiles = _photos(data, "A", rows * cols, skip)
    return np.vstack([np.hstack(tiles[r * cols:(r + 1) * cols]) for r in range(rows)])


def _affine_frames(canvas: np.ndarray, params: list[tuple[float, float, float]], size: int):
    """Frames ``out[y, x] = canvas[s*y + ty, s*x + tx]`` for each (s, tx, ty), with the true flow."""
    ys, xs = np.indices((size, size), dtype=np.float32)
    prev = None
    for s, tx, ty in params:
        m = np.float32([[s, 0, tx], [0, s, ty]])
        img = cv2.warpAffine(canvas, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
        flow = occ = None
        if prev is not None:
            ps, ptx, pty = prev
            # canvas point of (x, y) now, and where that point was in the previous frame
            fx = (s * xs + tx - ptx) / ps - xs
            fy = (s * ys + ty - pty) / ps - ys
            flow = np.dstack([fx, fy]).astype(np.float32)
            occ = _outside(flow)
        prev = (s, tx, ty)
        yield img, flow, occ


def _outside(flow: np.ndarray) -> np.ndarray:
    h, w = flow.shape[:2]
    ys, xs = np.indices((h, w), dtype=np.float32)
    mx, my = xs + flow[..., 0], ys + flow[..., 1]
    return (mx < 0) | (mx > w - 1) | (my < 0) | (my > h - 1)


def pan_clip(data: Path, n: int, size: int) -> Iterator[tuple]:
    canvas = mosaic(data, 3, 6)  # 768 x 1536
    # 2 % of the frame width per frame (10 px at 512: a frame width in ~2 s at 24 fps), slower
    # when a long clip would run off the mosaic; the wobble varies the speed by +-1.4 px a frame.
    speed = min(0.02 * size, (1536 - size - 50) / max(n - 1, 1))
    params = [(1.0, 40 + speed * t + 4 * math.sin(0.35 * t), 60 + 1.3 * t + 3 * math.sin(0.27 * t + 1))
              for t in range(n)]
    return _affine_frames(canvas, params, size)


def zoom_clip(data: Path, n: int, size: int) -> Iterator[tuple]:
    canvas = mosaic(data, 3, 6, skip=18)
    params = []
    for t in range(n):
        s = 1.4 * (0.75 / 1.4) ** (t / max(n - 1, 1))  # canvas pixels per frame pixel
        cx, cy = 760 + 1.5 * t, 384 - 0.8 * t
        params.append((s, cx - s * size / 2, cy - s * size / 2))
    return _affine_frames(canvas, params, size)


def object_clip(data: Path, n: int, size: int) -> Iterator[tuple]:
    canvas = mosaic(data, 3, 6, skip=36)
    background = _affine_frames(canvas, [(1.0, 200 + 1.2 * t, 100 + 0.4 * t) for t in range(n)], size)
    # The object: an ellipse cut from a zebra photo, 0.55 of the frame wide, moving ~9 px a frame.
    photo = cv2.resize(_photos(data, "B", 1)[0], (int(size * 0.55), int(size * 0.45)))
    oh, ow = photo.shape[:2]
    shape = np.zeros((oh, ow), np.float32)
    cv2.ellipse(shape, (ow // 2, oh // 2), (ow // 2 - 2, oh // 2 - 2), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    travel = size - ow - 20
    pos = [(10 + travel * t / max(n - 1, 1) + 3 * math.sin(0.5 * t),
            size * 0.45 - 0.25 * size * t / max(n - 1, 1))
           for t in range(n)]
    ys, xs = np.indices((size, size), dtype=np.float32)
    prev_mask = None
    for t, (bg, bg_flow, bg_occ) in enumerate(background):
        m = np.float32([[1, 0, pos[t][0]], [0, 1, pos[t][1]]])
        obj = cv2.warpAffine(photo, m, (size, size), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(shape, m, (size, size), flags=cv2.INTER_LINEAR)[..., None]
        img = np.clip(bg * (1 - mask) + obj * mask + 0.5, 0, 255).astype(np.uint8)
        flow = occ = None
        if bg_flow is not None:
            inside = mask[..., 0] > 0.5
            flow = bg_flow.copy()
            flow[inside] = (pos[t - 1][0] - pos[t][0], pos[t - 1][1] - pos[t][1])
            # Background now that the object covered before (disoccluded), and the soft edge band.
            was = cv2.remap(prev_mask, xs + bg_flow[..., 0], ys + bg_flow[..., 1], cv2.INTER_LINEAR)
            edge = (mask[..., 0] > 0.01) & (mask[..., 0] < 0.99)
            edge = cv2.dilate(edge.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            occ = bg_occ | (~inside & (was > 0.01)) | edge | _outside(flow)
        prev_mask = mask[..., 0]
        yield img, flow, occ


def file_clip(path: Path, n: int, size: int) -> Iterator[tuple]:
    for t, img in enumerate(read_video_frames(path)):
        if t >= n:
            return
        h, w = img.shape[:2]
        if max(h, w) > size:
            scale = size / max(h, w)
            img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        yield img, None, None


def with_noise(clip: Iterator[tuple], sigma: float, seed: int) -> Iterator[Frame]:
    rng = np.random.default_rng(seed)
    for img, flow, occ in clip:
        if sigma > 0:
            img = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).round().astype(np.uint8)
        yield Frame(img, flow, occ)


# -------------------------------------------------------------------------------------- measuring


def psnr_from_mse(mse: float) -> float:
    return float("inf") if mse <= 0 else 10 * math.log10(255.0 ** 2 / mse)


def measure_clip(name: str, frames: Iterator[Frame], translator: Translator, args, log) -> dict:
    stabs = {"blend": TemporalStabilizer(mode="blend", strength=args.blend_strength),
             "flow": TemporalStabilizer(mode="flow", strength=args.strength, max_age=args.max_age)}
    for s in args.sweep:  # more flow strengths on the same per-frame outputs
        stabs[f"flow {s:g}"] = TemporalStabilizer(mode="flow", strength=s, max_age=args.max_age)
    modes = ("off", *stabs)
    we = {m: [] for m in (*modes, "input")}
    we_gt = {m: [] for m in (*modes, "input")}
    we_sq = {m: [] for m in (*modes, "input")}  # squared, along the true motion where known
    sse = {m: 0.0 for m in modes}
    count = 0
    worst = {m: float("inf") for m in modes}
    t_gen: list[dict] = []
    t_stab = {m: [] for m in stabs}
    prev = None
    n = 0
    for n, fr in enumerate(frames, 1):
        with Stopwatch() as sw:
            y = translator(fr.image)  # [H, W, 3] uint8, the per-frame result
        t_gen.append(sw.record())
        outs = {"off": y, "input": fr.image}
        for m, stab in stabs.items():
            with Stopwatch() as sw:
                outs[m] = stab(fr.image, y)
            t_stab[m].append(sw.record())
        if prev is not None:
            gray, prev_gray = to_gray(fr.image), to_gray(prev["input"])
            back = compute_flow(gray, prev_gray, preset="medium")
            fwd = compute_flow(prev_gray, gray, preset="medium")
            keep = ~occlusion_mask(back, fwd)
            keep_gt = ~fr.occluded if fr.occluded is not None else None
            for m, values in we.items():
                e = masked_warping_error(outs[m], prev[m], back, keep)
                values.append(None if e is None else e[0])
                if keep_gt is not None:
                    e = masked_warping_error(outs[m], prev[m], fr.flow, keep_gt)
                    we_gt[m].append(None if e is None else e[0])
                we_sq[m].append(None if e is None else e[1])
            fid = keep_gt if keep_gt is not None else keep
            k = int(fid.sum())
            count += k
            for m in modes:
                d = (outs[m].astype(np.float32) - y.astype(np.float32))[fid]
                s = float(np.square(d).sum())
                sse[m] += s
                worst[m] = min(worst[m], psnr_from_mse(s / max(k * 3, 1)))
        prev = outs
        if n % 10 == 0:
            log(f"{name}: {n} frames")
    if n < 2:
        raise SystemExit(f"error: clip {name}: need at least 2 frames, got {n}")

    def mean(v):
        v = [x for x in v if x is not None]
        return float(np.mean(v)) if v else None

    skip = min(2, n - 1)  # the first frames pay for allocation and oneDNN/OpenCV warm-up
    gen = harness.timing_stats(t_gen[skip:], threads=torch.get_num_threads())
    rows = {}
    for m in ("input", *modes):
        sq = mean(we_sq[m])
        row = {"warping_error": mean(we[m]), "warping_error_gt": mean(we_gt[m]),
               # frame-to-frame change along the motion as a PSNR: how far flicker moves a frame
               "temporal_psnr": None if sq is None else psnr_from_mse(sq * 255.0 ** 2)}
        if m in modes:
            row["psnr_vs_per_frame"] = psnr_from_mse(sse[m] / max(count * 3, 1))
            row["psnr_worst_frame"] = worst[m]
            stab_ms = 0.0 if m == "off" else 1000 * statistics.median(r["wall_s"] for r in t_stab[m][skip:])
            row["generator_ms"] = 1000 * gen["median"]
            row["stabiliser_ms"] = stab_ms
            row["ms_per_frame"] = 1000 * gen["median"] + stab_ms
            row["frames_per_s"] = 1000 / row["ms_per_frame"]
        rows[m] = row
    return {"clip": name, "frames": n, "size": list(prev["off"].shape[:2]), "modes": rows,
            "generator_cpu_util": gen["cpu_util_used"]}


# --------------------------------------------------------------------------------------- reporting


def _table(results: list[dict], markdown: bool) -> str:
    head = ["clip", "mode", "WE", "x off", "WE-gt", "x off", "PSNR dB", "worst", "ms/frame", "stab ms", "fps",
            "x time"]
    rows = []
    for r in results:
        modes = r["modes"]
        ref = modes["off"]
        for m, v in modes.items():
            label = {"input": "input (floor)", "off": "per-frame"}.get(m, m)
            rel = harness.ratio(ref["warping_error"], v["warping_error"], higher_is_better=True)
            rel_gt = harness.ratio(ref["warping_error_gt"], v["warping_error_gt"], higher_is_better=True)
            rows.append([
                r["clip"], label,
                fmt(v["warping_error"], ".4f"), "-" if rel is None else f"{1 / rel:.2f}",
                fmt(v["warping_error_gt"], ".4f"), "-" if rel_gt is None else f"{1 / rel_gt:.2f}",
                "-" if m in ("input", "off") else f"{v['psnr_vs_per_frame']:.1f}",
                "-" if m in ("input", "off") else f"{v['psnr_worst_frame']:.1f}",
                "-" if m == "input" else f"{v['ms_per_frame']:.0f}",
                "-" if m in ("input", "off") else f"{v['stabiliser_ms']:.0f}",
                "-" if m == "input" else f"{v['frames_per_s']:.2f}",
                "-" if m == "input" else fmt_ratio(v["ms_per_frame"] / ref["ms_per_frame"]),
            ])
    return harness.format_table(head, rows, right=set(range(2, 12)), markdown=markdown)


def goals(results: list[dict]) -> dict:
    """The issue's goals for flow mode, per clip and over all clips."""
    out = {}
    for r in results:
        off, flow = r["modes"]["off"], r["modes"]["flow"]
        we_ratio = flow["warping_error"] / off["warping_error"] if off["warping_error"] else None
        gt_ratio = (flow["warping_error_gt"] / off["warping_error_gt"]
                    if off["warping_error_gt"] else None)
        time_ratio = flow["ms_per_frame"] / off["ms_per_frame"]
        # Fidelity (the "within 2 dB of the per-frame output", which names no reference): the
        # flow output may differ from the per-frame output by at most what the per-frame output differs
        # from its own previous frame along the motion (its flicker), with 2 dB of slack. A ghost or a
        # frozen frame differs by far more than flicker does.
        flicker = off["temporal_psnr"]
        out[r["clip"]] = {
            "we_ratio": we_ratio, "we_ratio_gt": gt_ratio, "time_ratio": time_ratio,
            "psnr_vs_per_frame": flow["psnr_vs_per_frame"], "psnr_worst_frame": flow["psnr_worst_frame"],
            "per_frame_temporal_psnr": flicker,
            "we_half": we_ratio is not None and we_ratio <= 0.5 and (gt_ratio is None or gt_ratio <= 0.5),
            "fidelity_ok": flicker is not None and flow["psnr_vs_per_frame"] >= flicker - 2.0,
            "time_within_30pct": time_ratio <= 1.3,
        }
    return out


def main() -> int:
    p = harness.make_parser("video_consistency", __doc__)
    p.add_argument("--checkpoint", required=True, help="a trained run folder, checkpoint or exported model")
    p.add_argument("--direction", default="a2b")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="horse2zebra folder with trainA/ trainB/")
    p.add_argument("--clips", default=",".join(CLIPS), help=f"comma-separated subset of {', '.join(CLIPS)} "
                   "(empty: only --clip files)")
    p.add_argument("--clip", type=Path, action="append", default=[], help="a video file to add (repeatable)")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--size", type=int, default=512, help="frame side in pixels (user clips: the long side)")
    p.add_argument("--noise", type=float, default=2.0, help="sensor noise std in 8-bit levels (0: none)")
    p.add_argument("--strength", type=float, default=0.8, help="flow mode --temporal-strength")
    p.add_argument("--blend-strength", type=float, default=None,
                   help="blend mode alpha (default: --strength)")
    p.add_argument("--max-age", type=int, default=48)
    p.add_argument("--sweep", default="", help="more flow strengths to report, e.g. 0.5,0.7,0.9 (cheap: "
                   "the same per-frame outputs are stabilised again)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    harness.check_minimums(p, args, {"frames": 2, "size": 32, "max_age": 1})
    try:
        args.sweep = [float(x) for x in harness.split_list(args.sweep)]
    except ValueError:
        p.error(f"--sweep: comma-separated numbers, got {args.sweep!r}")
    if args.blend_strength is None:
        args.blend_strength = args.strength
    device = harness.resolve_device(args.device)
    if device != "cpu":
        print("note: the goal is about CPU time; timing on", device, file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    log = harness.Progress()
    translator = Translator.from_checkpoint(args.checkpoint, direction=args.direction, device=device,
                                            precision="fp32", batch_size=1)
    log(f"model: {translator.source}")
    makers = {"pan": pan_clip, "zoom": zoom_clip, "object": object_clip}
    results = []
    for i, name in enumerate(harness.split_list(args.clips)):
        if name not in makers:
            p.error(f"--clips: unknown clip {name!r}; choose from {', '.join(CLIPS)}")
        frames = with_noise(makers[name](args.data, args.frames, args.size), args.noise, seed=i)
        results.append(measure_clip(name, frames, translator, args, log))
        log(f"{name}: done")
    for path in args.clip:
        frames = with_noise(file_clip(path, args.frames, args.size), 0.0, seed=0)
        results.append(measure_clip(path.name, frames, translator, args, log))
    if not results:
        p.error("nothing to measure: --clips is empty and no --clip was given")
    hw = harness.hardware_info(device, packages=("opencv-python-headless",))
    summary = goals(results)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "_worker"}
    config["model"] = translator.source
    out = harness.write_results(args.out, benchmark="video_consistency", hardware=hw, config=config,
                                results=results, goals=summary)
    print(harness.hardware_line(hw))
    print(f"model {translator.source}; {args.frames} frames of {args.size} px, noise {args.noise}; "
          f"flow strength {args.strength}, blend alpha {args.blend_strength}")
    print(_table(results, args.markdown))
    for clip, g in summary.items():
        print(f"{clip}: flow WE x{g['we_ratio']:.2f} (gt x{fmt(g['we_ratio_gt'], '.2f')}), "
              f"time x{g['time_ratio']:.2f}, PSNR vs per-frame {g['psnr_vs_per_frame']:.1f} dB "
              f"(worst frame {g['psnr_worst_frame']:.1f}); per-frame output vs its previous frame "
              f"{fmt(g['per_frame_temporal_psnr'], '.1f')} dB")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
