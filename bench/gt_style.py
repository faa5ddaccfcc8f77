#!/usr/bin/env python
"""A style task with a ground truth: recipes race to learn a known cartoon filter, scored per photo.

The style is ``cartoon()`` below, a deterministic filter (edge-preserving smoothing, a fixed colour
palette, dark outlines). The data (``build_dataset``): the photos of ``--photos`` are shuffled with
``--data-seed`` and split in two disjoint halves; domain A = the raw photos of one half, domain B =
the filter applied to the *other* half (unpaired), of which ``--style-images N`` keeps N (a film's
worth: 300). The ``--test-images`` photos of ``--test-photos`` are held out with their true targets,
their filtered selves (testA = photos, testB = targets). Training images are stored at the recipe's
load size (``--size`` x 286/256), test images at ``--size``, all as PNG.

Every arm (a recipe, as in bench/quality_race.py, whose budget and round-robin CPU-time slices this
reuses) is trained by the real ``cyclegan train`` for the same budget with each of ``--seeds``; its
A->B generator then translates every test photo, scored against the photo's target
(``score_pair``): PSNR and SSIM (``cyclegan.metrics``), outline F1 and luminance correlation, plus
``cyclegan evaluate --classifier``'s share of translations judged domain B (``--no-classifier`` skips
it). Rows give the mean +- sd over seeds and the ratio to the reference arm (the paper recipe, the
``cyclegan`` preset). The "no translation" floor row scores the raw photos against their targets.

    python bench/gt_style.py --floor-only --size 256              # the floor: no training
    python bench/gt_style.py --arms paper,fast --size 64 --minutes 8 --seeds 0
    python bench/gt_style.py --size 256 --style-images 300 --minutes 60 --seeds 0,1,2 --runs runs/gt256
    python bench/gt_style.py --tiny                                # seconds, synthetic photos (the CI test)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import harness
import numpy as np
import quality_race
import torch
from harness import fmt, fmt_ratio
from PIL import Image

from cyclegan import Translator
from cyclegan.fileio import write_json_atomic
from cyclegan.metrics.reconstruction import psnr, ssim

# ------------------------------------------------------------------------------------------ filter
# The style, step by step (constants in pixels; chosen by eye for 64-256 px images):
#  1. edge-preserving smoothing: SMOOTH_PASSES passes of a bilateral filter (OpenCV bilateralFilter,
#     diameter SMOOTH_D, colour sigma SMOOTH_SIGMA_COLOR, space sigma SMOOTH_SIGMA_SPACE): flattens
#     textures (grass, hair, zebra stripes stay since they are strong edges) into areas of one tone;
#  2. colour quantisation to a fixed palette: each RGB channel is rounded to the nearest of LEVELS
#     evenly spaced values 0, 255/(LEVELS-1), ..., 255 (so at most LEVELS**3 colours, the same palette
#     for every image, as a film's palette is);
#  3. dark outlines: Canny edges (OpenCV Canny, thresholds CANNY_LOW/CANNY_HIGH, L2 gradient) of the
#     grey (ITU-R BT.601 luma) of the smoothed image, painted OUTLINE (black, a palette colour), 1 px.
# Every step is deterministic (no random state), so a photo has exactly one target.
SMOOTH_PASSES = 2
SMOOTH_D = 9
SMOOTH_SIGMA_COLOR = 50.0
SMOOTH_SIGMA_SPACE = 7.0
LEVELS = 5
CANNY_LOW, CANNY_HIGH = 80, 160
OUTLINE = (0, 0, 0)

# Outline score: an image's outlines are its thin dark lines: pixels where the black-hat transform
# (morphological closing minus the image, 3x3 square) of the luma reaches OUTLINE_CONTRAST.
OUTLINE_CONTRAST = 50
OUTLINE_TOLERANCE = 1  # px (Chebyshev distance) within which an outline pixel counts as matched


def cartoon(rgb: np.ndarray) -> np.ndarray:
    """The style: uint8 [H, W, 3] RGB -> uint8 [H, W, 3] RGB (steps and constants above)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"cartoon() takes uint8 [H, W, 3] RGB, got {rgb.dtype} {list(rgb.shape)}")
    smooth = np.ascontiguousarray(rgb)
    for _ in range(SMOOTH_PASSES):
        smooth = cv2.bilateralFilter(smooth, SMOOTH_D, SMOOTH_SIGMA_COLOR, SMOOTH_SIGMA_SPACE)
    out = quantize(smooth)
    edges = cv2.Canny(cv2.cvtColor(smooth, cv2.COLOR_RGB2GRAY), CANNY_LOW, CANNY_HIGH, L2gradient=True)
    out[edges > 0] = OUTLINE
    return out


def quantize(rgb: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """Each channel to the nearest of ``levels`` evenly spaced values in [0, 255] (uint8 in and out)."""
    step = 255.0 / (levels - 1)
    return (np.floor(rgb.astype(np.float64) / step + 0.5) * step + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------------------------ scores


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] RGB -> uint8 [H, W], ITU-R BT.601 (OpenCV's RGB2GRAY)."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def outlines(rgb: np.ndarray) -> np.ndarray:
    """Thin dark lines of an image, bool [H, W]: black-hat of the luma >= OUTLINE_CONTRAST."""
    kernel = np.ones((3, 3), np.uint8)
    return cv2.morphologyEx(luma(rgb), cv2.MORPH_BLACKHAT, kernel) >= OUTLINE_CONTRAST


def outline_f1(output: np.ndarray, target: np.ndarray, tolerance: int = OUTLINE_TOLERANCE) -> float:
    """F1 of the output's outlines against the target's: precision = share of output outline pixels
    within ``tolerance`` px (Chebyshev) of a target outline pixel, recall = the same the other way;
    1.0 when neither has outlines, 0.0 when only one has."""
    out, tgt = outlines(output), outlines(target)
    if not out.any() and not tgt.any():
        return 1.0
    if not out.any() or not tgt.any():
        return 0.0
    kernel = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    near_tgt = cv2.dilate(tgt.astype(np.uint8), kernel) > 0
    near_out = cv2.dilate(out.astype(np.uint8), kernel) > 0
    precision = float((out & near_tgt).sum()) / float(out.sum())
    recall = float((tgt & near_out).sum()) / float(tgt.sum())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def luma_correlation(output: np.ndarray, target: np.ndarray) -> float:
    """Pearson correlation of the two images' per-pixel luma: 1 same tones, -1 inverted brightness;
    NaN when either image is flat (no tones to compare)."""
    x, y = luma(output).astype(np.float64).ravel(), luma(target).astype(np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / den if den > 0 else float("nan")


def score_pair(output: np.ndarray, target: np.ndarray) -> dict:
    """All per-image scores of one translation (uint8 [H, W, 3] each, same shape)."""
    if output.shape != target.shape:
        raise ValueError(f"output {list(output.shape)} and target {list(target.shape)} differ in shape")
    o = torch.from_numpy(np.array(output, copy=True)).permute(2, 0, 1)[None]  # [1, 3, H, W] uint8
    t = torch.from_numpy(np.array(target, copy=True)).permute(2, 0, 1)[None]
    return {"psnr": float(psnr(t, o)[0]), "ssim": float(ssim(t, o)[0]),
            "outline_f1": outline_f1(output, target), "luma_r": luma_correlation(output, target),
            "mean_luma_out": float(luma(output).mean()), "mean_luma_target": float(luma(target).mean())}


def summarise(per_image: list[dict]) -> dict:
    """Means over the test photos; PSNR capped at 100 dB so an exact match stays a number; the
    correlation of per-image mean luma (output vs target) is a second, image-level inversion check."""
    def mean(key: str, cap: float | None = None) -> float:
        vals = [min(s[key], cap) if cap else s[key] for s in per_image if not math.isnan(s[key])]
        return float(np.mean(vals)) if vals else float("nan")

    mo = np.array([s["mean_luma_out"] for s in per_image])
    mt = np.array([s["mean_luma_target"] for s in per_image])
    r = float(np.corrcoef(mo, mt)[0,
                                  1]) if len(per_image) > 1 and mo.std() > 0 and mt.std() > 0 else float(
                                      "nan")
    return {"n": len(per_image), "psnr": mean("psnr", 100.0), "ssim": mean("ssim"),
            "outline_f1": mean("outline_f1"), "luma_r": mean("luma_r"), "mean_luma_r": r}


SCORES = ("psnr", "ssim", "outline_f1", "luma_r", "mean_luma_r", "target_share_a2b")


# ------------------------------------------------------------------------------------------ data


def square(path: Path, size: int) -> np.ndarray:
    """A photo as uint8 [size, size, 3] RGB: shorter side resized to ``size`` (Lanczos), centre crop."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.LANCZOS)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        return np.asarray(im.crop((left, top, left + size, top + size)))


def image_files(folders: list[Path]) -> list[Path]:
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    files = []
    for folder in folders:
        if not folder.is_dir():
            raise SystemExit(f"error: {folder}: not a folder of photos")
        files += sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)
    return files


def split_photos(files: list[Path], *, seed: int, style_images: int | None) -> tuple[list[Path], list[Path]]:
    """Shuffle with ``seed``; domain A = the first half, style sources = the second half (disjoint),
    of which ``style_images`` are kept."""
    files = list(files)
    random.Random(seed).shuffle(files)
    half = len(files) // 2
    photos, style = files[:half], files[half:]
    if style_images is not None:
        if style_images > len(style):
            raise SystemExit(f"error: --style-images {style_images}: only {len(style)} photos in the style "
                             "half")
        style = style[:style_images]
    return photos, style


def build_dataset(out: Path, *, photos: list[Path], test_photos: list[Path], size: int, train_size: int,
                  seed: int, style_images: int | None, test_images: int, test_only: bool = False) -> dict:
    """Write trainA/ trainB/ testA/ testB/ and manifest.json under ``out`` (reused when the manifest
    matches); returns the manifest."""
    if test_images > len(test_photos):
        raise SystemExit(f"error: --test-images {test_images}: only {len(test_photos)} test photos")
    test = test_photos[:test_images]
    if set(map(str, test)) & set(map(str, photos)):
        raise SystemExit("error: the test photos overlap the training photos; pass disjoint folders")
    a, b = ([], []) if test_only else split_photos(photos, seed=seed, style_images=style_images)
    manifest = {"filter": filter_constants(), "opencv": cv2.__version__, "size": size,
                "train_size": train_size, "seed": seed, "style_images": style_images, "test_only": test_only,
                "trainA": [str(p) for p in a], "trainB": [str(p) for p in b], "test": [str(p) for p in test]}
    path = out / "manifest.json"
    if path.is_file() and json.loads(path.read_text()) == manifest:
        return manifest
    for sub in ("trainA", "trainB", "testA", "testB"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for old in (out / sub).iterdir():
            old.unlink()
    for i, p in enumerate(a):
        Image.fromarray(square(p, train_size)).save(out / "trainA" / f"{i:05d}.png")
    for i, p in enumerate(b):
        Image.fromarray(cartoon(square(p, train_size))).save(out / "trainB" / f"{i:05d}.png")
    for i, p in enumerate(test):
        img = square(p, size)
        Image.fromarray(img).save(out / "testA" / f"{i:05d}.png")
        Image.fromarray(cartoon(img)).save(out / "testB" / f"{i:05d}.png")
    write_json_atomic(path, manifest)  # last: a build cut short is rebuilt next time
    return manifest


def filter_constants() -> dict:
    return {"smooth_passes": SMOOTH_PASSES, "smooth_d": SMOOTH_D, "smooth_sigma_color": SMOOTH_SIGMA_COLOR,
            "smooth_sigma_space": SMOOTH_SIGMA_SPACE, "levels": LEVELS, "canny": [CANNY_LOW, CANNY_HIGH],
            "outline_contrast": OUTLINE_CONTRAST, "outline_tolerance": OUTLINE_TOLERANCE}


def load_test(data: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    names = sorted(p.name for p in (data / "testA").iterdir())
    def read(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    return [read(data / "testA" / n) for n in names], [read(data / "testB" / n) for n in names]


# ------------------------------------------------------------------------------------------ scoring


def translate_all(run: Path, photos: list[np.ndarray], *, device: str, threads: int) -> list[np.ndarray]:
    """The run's A->B generator (fp32, whole images) on every test photo."""
    tr = Translator.from_checkpoint(run, direction="a2b", device=device, precision="fp32", tile="off",
                                    threads=threads)
    return [np.asarray(out) for out in tr(photos)]


def grid(rows: list[list[np.ndarray]], path: Path, cell: int) -> None:
    """A small PNG: one row per list (photos, targets, outputs), each image resized to ``cell`` px."""
    ims = [[np.asarray(Image.fromarray(im).resize((cell, cell),
                                                  Image.LANCZOS)) for im in row] for row in rows]
    Image.fromarray(np.concatenate([np.concatenate(r, axis=1) for r in ims], axis=0)).save(path,
                                                                                           optimize=True)


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None
    return float(np.mean(vals)), (statistics.stdev(vals) if len(vals) > 1 else None)


def pm(mean: float | None, sd: float | None, spec: str) -> str:
    return fmt(mean, spec) + ("" if sd is None else f" ± {sd:{spec}}")


# ------------------------------------------------------------------------------------------ main


def add_flags(p: argparse.ArgumentParser) -> None:
    """The race flags (those of bench/quality_race.py, which ``Race`` reads) and the data flags."""
    h2z = harness.REPO.parent / "shared" / "datasets" / "horse2zebra"
    p.add_argument("--photos", type=Path, nargs="+", default=[h2z / "trainA", h2z / "trainB"],
                   help="folders of training photos, split into domain A and the style half")
    p.add_argument("--test-photos", type=Path, nargs="+", default=[h2z / "testA"])
    p.add_argument("--test-images", type=int, default=None,
                   help="held-out test photos (default 120; --tiny 4)")
    p.add_argument("--style-images", type=int, default=None, help="keep only N style images (default: all)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the A / style split")
    p.add_argument("--data", type=Path, default=None,
                   help="the built data set (default: DIR of --runs / data)")
    p.add_argument("--floor-only", action="store_true", help="score 'no translation' only; no training")
    p.add_argument("--seeds", default="0", help="training seeds, comma-separated (rows: mean ± sd)")
    p.add_argument("--arms", default=None, help="arms of bench/quality_race.py (--list-arms there); the "
                   "reference 'paper' (the cyclegan preset) always runs first (default: paper,fast)")
    p.add_argument("--arm", action="append", default=[], metavar="NAME[@PRESET]:KEY=VALUE;...")
    p.add_argument("--no-classifier", action="store_true", help="skip cyclegan evaluate --classifier")
    p.add_argument("--grid-images", type=int, default=6, help="test photos in each arm's sample grid")
    p.add_argument("--grid-dir", type=Path, default=None, help="sample grids here (default: beside --out)")
    p.add_argument("--minutes", type=float, default=None,
                   help="budget per arm and seed (default 8; --tiny 0.05)")
    p.add_argument("--slices", type=int, default=None, help="slices per run, taken round-robin (default 4)")
    p.add_argument("--clock", choices=("cpu", "wall"), default=None)
    p.add_argument("--size", type=int, default=None, help="crop and test size (default 64; --tiny 32)")
    p.add_argument("--ngf", type=int, default=32)
    p.add_argument("--n-blocks", type=int, default=6)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--classifier-min-accuracy", type=float, default=0.8)
    p.add_argument("--runs", type=Path, default=None,
                   help="keep data and runs here (default: a temporary folder)")
    p.add_argument("--poll", type=float, default=0.5)
    p.add_argument("--slice-timeout", type=float, default=None)
    p.add_argument("--rescore", action="store_true")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run on synthetic photos (tests)")


def tiny_photos(root: Path) -> tuple[list[Path], list[Path]]:
    """Synthetic 'photos' (gradients, discs, bars) for --tiny: 16 training, 4 test."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(20):
        yy, xx = np.mgrid[0:48, 0:48]
        img = np.stack([xx * 4, yy * 4, np.full_like(xx, 40 * (i % 6))], -1).astype(np.float64)
        cy, cx, r = rng.integers(12, 36, 2).tolist() + [int(rng.integers(5, 12))]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
        img += rng.normal(0, 6, img.shape)
        folder = root / ("train" if i < 16 else "test")
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"{i:02d}.png")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(paths[-1])
    return paths[:16], paths[16:]


def main(argv=None) -> int:
    p = harness.make_parser("gt_style", __doc__)
    add_flags(p)
    args = p.parse_args(argv)
    harness.check_minimums(p, args, {"size": 8, "slices": 1, "threads": 1, "jobs": 1, "num_workers": 0,
                                     "ngf": 1, "n_blocks": 0, "ndf": 1, "n_layers": 1, "log_every": 1,
                                     "style_images": 1, "test_images": 2, "grid_images": 1})
    tiny = args.tiny
    quality_race.resolve_race_defaults(args, minutes=0.05 if tiny else 8.0)
    if args.size % 4:
        p.error(f"--size {args.size}: must be a multiple of 4 (the generator's input multiple)")
    args.test_images = args.test_images or (4 if tiny else 120)
    args.eval_size = args.size
    args.seed = None  # each run's seed is its arm's train.seed (quality_race.base_sets reads this name)
    if tiny:
        args.ngf, args.n_blocks, args.ndf, args.n_layers, args.log_every = 8, 1, 8, 2, 5
        args.classifier_min_accuracy = 0.0
        args.eval_size = 16  # the classifier's images: its training dominates a tiny run's time
    seeds = [int(s) for s in harness.split_list(args.seeds)]
    torch.set_num_threads(args.threads)  # scoring (SSIM in float64) runs beside the training slices
    names = harness.split_list(args.arms) if args.arms else ["paper", "fast"]
    arms = dict(quality_race.parse_arm(t) for t in ["paper", *names, *args.arm])
    hw = harness.hardware_info(args.device, threads=args.threads, packages=("opencv-python-headless",))
    log = harness.Progress()
    log(harness.hardware_line(hw))
    out = args.out
    grid_dir = args.grid_dir or out.parent / f"{out.stem}_grids"
    with tempfile.TemporaryDirectory(prefix="gt_style_") as tmp:
        runs = args.runs or Path(tmp) / "runs"
        if tiny:
            photos, test_photos = tiny_photos(Path(tmp) / "photos")
        else:
            photos, test_photos = image_files(args.photos), image_files(args.test_photos)
        data = args.data or runs / f"data-{args.size}"
        train_size = round(args.size * harness.LOAD_RATIO)
        log(f"building {data} ({args.size} px test, {train_size} px train)")
        manifest = build_dataset(data, photos=photos, test_photos=test_photos, size=args.size,
                                 train_size=train_size, seed=args.data_seed, style_images=args.style_images,
                                 test_images=args.test_images, test_only=args.floor_only)
        args.dataroot = data
        test_a, test_b = load_test(data)
        floor_images = [score_pair(a, b) for a, b in zip(test_a, test_b)]
        floor = {"arm": "no translation", "what": "the raw photo scored against its target",
                 **summarise(floor_images)}
        log(f"floor: PSNR {floor['psnr']:.2f} dB, SSIM {floor['ssim']:.3f}, outline F1 "
            f"{floor['outline_f1']:.3f}")
        runs_out: list[dict] = []
        if not args.floor_only:
            seeded = {f"{n}.s{s}": quality_race.Arm(a.what, {**a.sets, "train.seed": s}, a.preset)
                      for s in seeds for n, a in arms.items()}
            race = quality_race.Race(args, seeded, runs, log)
            log(f"{len(arms)} arms x {len(seeds)} seed(s) x {args.minutes:g} min ({args.clock} clock), "
                f"{args.slices} slices; runs in {runs}")
            race.train_all()
            grid_dir.mkdir(parents=True, exist_ok=True)
            for key, arm in seeded.items():
                name, seed = key.rsplit(".s", 1)
                runs_out.append(score_run(race, key, name, int(seed), arm, test_a, test_b, args, grid_dir,
                                          log))
    rows = [] if args.floor_only else aggregate(arms, seeds, runs_out)
    print_report(args, hw, floor, rows, seeds)
    config = {k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, list) else v)
              for k, v in vars(args).items() if not k.startswith("_")}
    hw["loadavg_end"] = harness.loadavg()
    harness.write_results(out, benchmark="gt_style", hardware=hw, config=config, results=rows, floor=floor,
                          runs=runs_out,
                          data={k: manifest[k] for k in ("filter", "opencv", "size", "train_size",
                                                                          "seed", "style_images")}
                          | {"n_trainA": len(manifest["trainA"]), "n_trainB": len(manifest["trainB"]),
                             "n_test": len(manifest["test"])},
                          total_wall_s=log.elapsed)
    log(f"wrote {out}")
    return 0 if args.floor_only or (rows and rows[0]["status"] == "ok") else 1


def score_run(race, key: str, name: str, seed: int, arm, test_a, test_b, args, grid_dir: Path, log) -> dict:
    state = race.state[key]
    slices = state["slices"]
    row = {"arm": name, "seed": seed, "run": key, "preset": arm.preset, "sets": arm.sets,
           "budget_used_s": round(sum(s["used_s"] for s in slices), 1),
           "iterations": slices[-1]["step"] if slices else None, "status": "ok", "reason": None}
    if state.get("failed"):
        return {**row, "status": "skipped", "reason": state["failed"]}
    outs = translate_all(race.run_dir(key), test_a, device=args.device, threads=args.threads)
    row.update(summarise([score_pair(o, b) for o, b in zip(outs, test_b)]))
    if not args.no_classifier:
        ev = race.evaluate(key)
        row["target_share_a2b"] = ev.get("a2b", {}).get("target_share") if "error" not in ev else None
        row["classifier_error"] = ev.get("error")
    k = min(args.grid_images, len(test_a))
    grid([test_a[:k], test_b[:k], outs[:k]], grid_dir / f"{name}_seed{seed}.png", cell=min(args.size, 128))
    log(f"{key}: {row['iterations']} iterations, PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, "
        f"F1 {row['outline_f1']:.3f}, luma r {row['luma_r']:.2f}")
    return row


def aggregate(arms: dict, seeds: list[int], runs: list[dict]) -> list[dict]:
    rows = []
    for name, arm in arms.items():
        mine = [r for r in runs if r["arm"] == name]
        ok = [r for r in mine if r["status"] == "ok"]
        row = {"arm": name, "what": arm.what, "preset": arm.preset, "sets": arm.sets, "seeds": seeds,
               "status": "ok" if ok and len(ok) == len(mine) else "skipped",
               "reason": next((r["reason"] for r in mine if r["status"] != "ok"), None),
               "iterations": mean_sd([r["iterations"] for r in ok])[0]}
        for key in SCORES:
            row[key], row[f"{key}_sd"] = mean_sd([r.get(key) for r in ok])
        rows.append(row)
    if rows:
        ref = rows[0]
        for r in rows:
            r["ratio_psnr"] = harness.ratio(r["psnr"], ref["psnr"])
            r["ratio_ssim"] = harness.ratio(r["ssim"], ref["ssim"])
    return rows


def print_report(args, hw: dict, floor: dict, rows: list[dict], seeds: list[int]) -> None:
    clock = "CPU time of the training process / threads" if args.clock == "cpu" else "wall time"
    style = args.style_images if args.style_images else "all"
    style = "" if args.floor_only else f"{style} style images, "
    print(f"Ground-truth style task: {args.size}x{args.size}, {style}{floor['n']} test photos; "
          + ("no training" if args.floor_only else
             f"{args.minutes:g} min of training per arm and seed ({clock}), seeds {seeds}, "
             f"ResNet-{args.n_blocks} ngf {args.ngf}, PatchGAN ndf {args.ndf}, {args.threads} thread(s)")
          + f"\n{harness.hardware_line(hw)}")
    head = ["arm", "iterations", "PSNR dB", "x ref", "SSIM", "x ref", "outline F1", "luma r", "mean-luma r",
            "B share %", "changes"]
    body = [["no translation (floor)", "-", fmt(floor["psnr"], ".2f"), "", fmt(floor["ssim"], ".3f"), "",
             fmt(floor["outline_f1"], ".3f"), fmt(floor["luma_r"], ".2f"), fmt(floor["mean_luma_r"], ".2f"),
             "-", floor["what"]]]
    for i, r in enumerate(rows):
        share = r.get("target_share_a2b")
        body.append([r["arm"] + (" (reference)" if i == 0 else ""), fmt(r["iterations"], ".0f"),
                     pm(r["psnr"], r["psnr_sd"], ".2f"), fmt_ratio(r["ratio_psnr"]),
                     pm(r["ssim"], r["ssim_sd"], ".3f"),
                     fmt_ratio(r["ratio_ssim"]), pm(r["outline_f1"], r["outline_f1_sd"], ".3f"),
                     pm(r["luma_r"], r["luma_r_sd"], ".2f"), pm(r["mean_luma_r"], r["mean_luma_r_sd"], ".2f"),
                     fmt(None if share is None else 100 * share, ".1f"),
                     r["what"] if r["status"] == "ok" else f"skipped: {r['reason']}"])
    print(harness.format_table(head, body, right={1, 2, 3, 4, 5, 6, 7, 8, 9}, markdown=args.markdown))
    print("PSNR/SSIM/outline F1/luma r: each translated test photo against its true target (its filtered "
          "self), mean over photos, then mean ± sd over seeds; luma r < 0 = inverted brightness; "
          "B share % = translations cyclegan evaluate's domain classifier judges styled")


if __name__ == "__main__":
    sys.exit(main())
