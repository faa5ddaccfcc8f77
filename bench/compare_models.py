"""CycleGAN vs CUT vs FastCUT under the same wall-clock budget on the same machine.

Each model trains from scratch on the same data for ``--minutes`` (the paper networks of each
preset, at the data's size), then is scored by ``cyclegan evaluate``'s code on the test split:
FID / KID when the Inception weights are installed, and cycle reconstruction for the two-sided
model. Printed as a table with img/s and the ratio to CycleGAN, and written as JSON.

    python bench/compare_models.py --dataroot ../shared/datasets/horse2zebra-128 --minutes 5

Everything runs in one process, one model after the other, so the three see the same machine state.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from cyclegan.config import build_config
from cyclegan.evaluate import evaluate_checkpoint
from cyclegan.training import train

MODELS = ("cyclegan", "cut", "fastcut")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(args) -> dict:
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    if device == "auto":
        device = "cpu"
    hardware = torch.cuda.get_device_name() if device == "cuda" else f"{_cpu_name()}, {torch.get_num_threads()} threads"
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            cfg = build_config(preset=name, overrides={
                "data.dataroot": str(Path(args.dataroot).resolve()),
                "data.load_size": args.size + args.size // 8, "data.crop_size": args.size,
                "data.num_workers": args.num_workers,
                "train.device": device, "train.max_minutes": args.minutes, "train.log_every": 10,
                "train.tensorboard": False, "train.save_latest_every": 10**9, "train.seed": 0,
                "optim.decay_epochs": 1, "train.epochs": 1000,
            })
            run_dir = Path(tmp) / name
            start = time.perf_counter()
            result = train(cfg, run_dir, progress=False)
            elapsed = time.perf_counter() - start
            log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
            speeds = [r["img_per_s"] for r in log if "img_per_s" in r]
            speeds = speeds[1:] if len(speeds) > 1 else speeds  # the first window includes warm-up
            # Equal-size windows: the overall rate is the harmonic mean of the window rates.
            img_per_s = len(speeds) / sum(1.0 / v for v in speeds) if speeds else None
            scores = evaluate_checkpoint(run_dir, device=device, out=Path(tmp) / f"{name}.eval.json",
                                         max_images=args.eval_images,
                                         inception_weights=args.inception_weights)
            a2b = scores["a2b"]
            rows[name] = {
                "iterations": result.step,
                "train_seconds": round(elapsed, 1),
                "img_per_s": round(img_per_s, 3) if img_per_s else None,
                "fid_a2b": a2b.get("fid"),
                "kid_a2b": a2b.get("kid_mean"),
                "cycle_l1_a2b": a2b.get("cycle_l1"),
                "inception_error": scores.get("inception_error"),
            }
            print(f"{name}: {rows[name]}", flush=True)
    ref = rows.get("cyclegan", {}).get("img_per_s")
    print(f"\nSame budget: {args.minutes} min of training each, {args.size}x{args.size}, batch 1, {device} "
          f"({hardware}), torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"{'model':<10}{'iterations':>11}{'img/s':>9}{'vs CycleGAN':>13}{'FID A->B':>10}{'cycle L1 A':>12}")
    for name, r in rows.items():
        ratio = f"{r['img_per_s'] / ref:.2f}x" if ref and r["img_per_s"] else "-"
        fid = f"{r['fid_a2b']:.1f}" if r["fid_a2b"] is not None else "n/a"
        cyc = f"{r['cycle_l1_a2b']:.3f}" if r["cycle_l1_a2b"] is not None else "-"
        print(f"{name:<10}{r['iterations']:>11}{r['img_per_s'] or 0:>9.2f}{ratio:>13}{fid:>10}{cyc:>12}")
    if any(r["inception_error"] for r in rows.values()):
        print("FID n/a: the Inception weights are not installed (see README, Evaluate).")
    out = {"hardware": hardware, "device": device, "minutes": args.minutes, "size": args.size,
           "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataroot", default="../shared/datasets/horse2zebra-128")
    p.add_argument("--minutes", type=float, default=3.0, help="training budget per model")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--eval-images", type=int, default=None, help="cap test images per domain")
    p.add_argument("--inception-weights", default=None)
    p.add_argument("--out", default="bench/results/compare_models.json")
    run(p.parse_args())


if __name__ == "__main__":
    main()
