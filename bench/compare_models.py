#!/usr/bin/env python
"""CycleGAN vs CUT vs FastCUT under the same wall-clock budget on the same machine.

Each model trains from scratch on the same data for ``--minutes`` (the paper networks of each
preset, at ``--size``), then is scored by ``cyclegan evaluate``'s code on the test split: FID / KID
when the Inception weights are installed, and cycle reconstruction for the two-sided model. Printed
as a table with img/s and the ratio to CycleGAN (the reference, always trained), and written as JSON.

    python bench/compare_models.py --minutes 5          # default data: horse2zebra-128 beside the repo
    python bench/compare_models.py --dataroot my_data --models cyclegan fastcut

Everything runs in one process, one model after the other, so the three see the same machine state.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import harness
from harness import fmt, fmt_ratio

from cyclegan.config import build_config
from cyclegan.evaluate import evaluate_checkpoint
from cyclegan.training import train

MODELS = ("cyclegan", "cut", "fastcut")


def train_and_score(name: str, args, device: str, tmp: Path) -> dict:
    cfg = build_config(preset=name, overrides={
        "data.dataroot": str(args.dataroot.resolve()),
        "data.load_size": args.size + args.size // 8, "data.crop_size": args.size,
        "data.num_workers": args.num_workers,
        "train.device": device, "train.max_minutes": args.minutes, "train.log_every": 10,
        "train.tensorboard": False, "train.save_latest_every": 10**9, "train.seed": 0,
        "optim.decay_epochs": 1, "train.epochs": 1000,
    })
    run_dir = tmp / name
    with harness.Stopwatch(device) as sw:
        result = train(cfg, run_dir, progress=False)
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    speeds = [r["img_per_s"] for r in log if "img_per_s" in r]
    speeds = speeds[1:] if len(speeds) > 1 else speeds  # the first window includes warm-up
    # Equal-size windows: the overall rate is the harmonic mean of the window rates.
    img_per_s = len(speeds) / sum(1.0 / v for v in speeds) if speeds else None
    scores = evaluate_checkpoint(run_dir, device=device, out=tmp / f"{name}.eval.json",
                                 max_images=args.eval_images, inception_weights=args.inception_weights)
    a2b = scores["a2b"]
    return {"model": name, "iterations": result.step, "train_s": sw.wall_s, "img_per_s": img_per_s,
            "fid_a2b": a2b.get("fid"), "kid_a2b": a2b.get("kid_mean"), "cycle_l1_a2b": a2b.get("cycle_l1"),
            "inception_error": scores.get("inception_error")}


def main(argv=None) -> int:
    p = harness.make_parser("compare_models", __doc__)
    p.add_argument("--dataroot", type=Path, default=harness.DEFAULT_DATA)
    p.add_argument("--minutes", type=float, default=3.0, help="training budget per model")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--eval-images", type=int, default=None, help="cap test images per domain")
    p.add_argument("--inception-weights", default=None)
    args = p.parse_args(argv)
    harness.check_minimums(p, args, {"size": 1, "num_workers": 0, "eval_images": 1})
    if not (args.dataroot / "trainA").is_dir():
        p.error(f"{args.dataroot}: no trainA/ folder; pass --dataroot")
    device = harness.resolve_device(args.device)
    models = list(dict.fromkeys(["cyclegan", *args.models]))  # the reference first
    hw = harness.hardware_info(device)
    log = harness.Progress()
    log(harness.hardware_line(hw))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            results.append(train_and_score(name, args, device, Path(tmp)))
            r = results[-1]
            log(f"{name}: {r['iterations']} iterations, {fmt(r['img_per_s'], '.2f')} img/s")
    rows = []
    for r in results:
        r["ratio"] = harness.ratio(r["img_per_s"], results[0]["img_per_s"])
        rows.append([r["model"] + (" (reference)" if r is results[0] else ""), str(r["iterations"]),
                     fmt(r["img_per_s"], ".2f"), fmt_ratio(r["ratio"]), fmt(r["fid_a2b"], ".1f", "n/a"),
                     fmt(r["cycle_l1_a2b"], ".3f")])
    print(f"Same budget: {args.minutes:g} min of training each, {args.size}x{args.size}, batch 1, device "
          f"{device}\n{harness.hardware_line(hw)}\n"
          "x ref = img/s / CycleGAN img/s; FID and cycle L1 on the test split (A->B)")
    print(harness.format_table(["model", "iterations", "img/s", "x ref", "FID A->B", "cycle L1 A"], rows,
                               right={1, 2, 3, 4, 5}, markdown=args.markdown))
    errors = {r["inception_error"] for r in results if r["inception_error"]}
    for error in errors:
        print(f"FID n/a: {error}")
    config = {"device": device, "dataroot": str(args.dataroot), "minutes": args.minutes, "size": args.size,
              "models": models, "num_workers": args.num_workers, "eval_images": args.eval_images}
    hw["loadavg_end"] = harness.loadavg()
    harness.write_results(args.out, benchmark="compare_models", hardware=hw, config=config, results=results,
                          total_wall_s=log.elapsed)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
