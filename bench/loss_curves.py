#!/usr/bin/env python
"""Do the fast paths train the same model? Loss curves of each setting against the fp32 reference.

Speed (``train_speed.py``) is only half of the claim for a fast path; the other half is that it
learns the same thing. This script trains the paper's networks (preset ``cyclegan``) with the real
``cyclegan train`` command once per setting, from the same seed on the same data, and compares the
logged losses, binned by images seen, against the fp32 eager batch-1 reference:

    dev     mean over bins of |bin mean - reference bin mean|, divided by the mean |reference|,
            for the GAN, cycle, identity and discriminator losses (each the mean of both domains);
            "late" columns over the second half of the bins only, past the first descent (which
            takes more images at batch > 1, having fewer optimiser steps per image)
    noise   the same deviation for the reference run with another seed (``fp32-seed1``): how far two
            equally valid runs drift apart. GAN training is chaotic, so a fast path is "within
            noise" when its deviation is not much larger than this (ratio = dev / noise)
    cycle   cycle-consistency L1 of the final generators on the test split (``cyclegan evaluate
            --no-inception``; lower is better), a quality measure that needs no Inception weights

Settings (``--settings``, comma separated):

    fp32             reference: fp32 eager, batch 1 (what the official code computes)
    fp32-seed1       the reference with seed 1: the run-to-run noise yardstick
    bf16, bf16+cl    bf16 autocast (and channels_last)
    compile+bf16+cl  torch.compile as well
    fp16             fp16 autocast with the grad scaler (GPU)
    b4-none, b4-sqrt, b4-linear, b8-...   batch 4/8 with ``optim.lr_scaling`` none | sqrt | linear:
                     the LR rule for batch > 1, compared at equal images seen

    python bench/loss_curves.py                                  # CPU default: 64 px, 1200 images
    python bench/loss_curves.py --device cuda --size 128 --images 3000 --settings \\
        fp32,fp32-seed1,bf16+cl,compile+bf16+cl,b8-none,b8-sqrt,b8-linear
    python bench/loss_curves.py --dataroot my_data --jobs 2

Runs go to ``--runs`` (default a temporary folder); the table goes to stdout and JSON to ``--out``.
On CPU, ``--jobs 2`` runs two settings at once with one thread each: losses do not depend on timing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results" / "loss_curves.json"
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "horse2zebra-128"

GROUPS = {  # column -> log.jsonl keys averaged into it
    "gan": ("G_A_gan", "G_B_gan"),
    "cycle": ("cycle_A", "cycle_B"),
    "idt": ("idt_A", "idt_B"),
    "D": ("D_A", "D_B"),
}


def setting_overrides(name: str) -> dict[str, object]:
    """--set overrides of one named setting (on top of preset cyclegan and the common flags)."""
    fixed = {
        "fp32": {},
        "fp32-seed1": {"train.seed": 1},
        "bf16": {"train.precision": "bf16"},
        "bf16+cl": {"train.precision": "bf16", "train.channels_last": True},
        "compile+bf16+cl": {"train.precision": "bf16", "train.channels_last": True, "train.compile": True},
        "fp16": {"train.precision": "fp16"},
    }
    if name in fixed:
        return fixed[name]
    batch, _, rule = name.partition("-")
    if batch.startswith("b") and batch[1:].isdigit() and rule in ("none", "sqrt", "linear"):
        return {"train.batch_size": int(batch[1:]), "optim.lr_scaling": rule}
    raise SystemExit(f"unknown setting {name!r}: choose from {', '.join(fixed)}, bN-none|sqrt|linear")


def run_setting(name: str, args, runs: Path) -> dict:
    """Train one setting to ``args.images`` images per domain, then evaluate it; returns its record."""
    over = setting_overrides(name)
    batch = int(over.get("train.batch_size", 1))
    steps = max(1, args.images // batch)
    run = runs / name
    cmd = [sys.executable, "-m", "cyclegan", "train", "--dataroot", str(args.dataroot), "--out", str(run),
           "--preset", "cyclegan", "--device", args.device, "--max-steps", str(steps), "--quiet", "--overwrite"]
    common = {
        "data.load_size": round(args.size * 286 / 256), "data.crop_size": args.size,
        # one record per `bin` images, whatever the batch
        "train.log_every": max(1, args.bin // batch), "train.num_threads": args.threads,
        "train.save_latest_every": steps, "train.tensorboard": False,
    }
    for key, value in {**common, **over}.items():
        cmd += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    t0 = time.perf_counter()
    if args.reuse and _finished(run, steps):
        train_s = float("nan")  # trained by an earlier invocation
    else:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return {"setting": name, "failed": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
        train_s = time.perf_counter() - t0
    curve = []
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "G_total" in rec:
            curve.append({"images": rec["step"] * batch,
                          **{g: sum(rec[k] for k in keys) / len(keys) for g, keys in GROUPS.items()}})
    ev_json = run / "eval.json"
    ev = subprocess.CompletedProcess([], 0) if args.reuse and ev_json.is_file() else subprocess.run([sys.executable, "-m", "cyclegan", "evaluate", "--checkpoint", str(run), "--dataroot",
                         str(args.dataroot), "--no-inception", "--image-size", str(args.size), "--device",
                         args.device, "--out", str(ev_json)], capture_output=True, text=True, check=False)
    cycle = None
    if ev.returncode == 0:
        doc = json.loads(ev_json.read_text())
        cycle = {d: doc[d]["cycle_l1"] for d in ("a2b", "b2a") if d in doc}
    return {"setting": name, "batch": batch, "steps": steps, "train_s": train_s, "curve": curve,
            "test_cycle_l1": cycle}


def _finished(run: Path, steps: int) -> bool:
    """A run left by an earlier invocation that reached ``steps`` (for --reuse)."""
    try:
        lines = (run / "log.jsonl").read_text().splitlines()
        return any(json.loads(x).get("event") == "stop" and json.loads(x).get("step") == steps for x in lines)
    except (OSError, ValueError):
        return False


def binned(curve: list[dict], bin_images: int) -> dict[int, dict[str, float]]:
    """{bin index: {group: mean}} over the records whose images-seen fall in that bin."""
    bins: dict[int, dict[str, list[float]]] = {}
    for rec in curve:
        b = (rec["images"] - 1) // bin_images
        for g in GROUPS:
            bins.setdefault(b, {}).setdefault(g, []).append(rec[g])
    return {b: {g: statistics.fmean(v) for g, v in groups.items()} for b, groups in bins.items()}


def deviation(curve: list[dict], reference: list[dict], bin_images: int, *, late: bool = False) -> dict[str, float]:
    """Per group: mean |bin mean - reference bin mean| over shared bins / mean |reference bin mean|;
    ``late``: over the second half of the bins only (past the first descent, which takes more
    images at batch > 1 because there are fewer optimiser steps per image)."""
    a, r = binned(curve, bin_images), binned(reference, bin_images)
    shared = sorted(set(a) & set(r))
    if late:
        shared = shared[len(shared) // 2 :]
    out = {}
    for g in GROUPS:
        diff = statistics.fmean(abs(a[b][g] - r[b][g]) for b in shared) if shared else float("nan")
        scale = statistics.fmean(abs(r[b][g]) for b in shared) if shared else float("nan")
        out[g] = diff / scale if scale else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataroot", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", type=int, default=64, help="Crop size (loaded at 286/256 of it).")
    parser.add_argument("--images", type=int, default=1200, help="Images per domain each setting trains on.")
    parser.add_argument("--bin", type=int, default=100, help="Images per comparison bin (and per log record).")
    parser.add_argument("--settings", default="fp32,fp32-seed1,bf16,bf16+cl,b4-none,b4-sqrt,b4-linear")
    parser.add_argument("--jobs", type=int, default=1, help="Settings trained at once.")
    parser.add_argument("--threads", type=int, default=0, help="train.num_threads per run (0: default, capped).")
    parser.add_argument("--runs", type=Path, default=None, help="Keep the runs here (default: a temp folder).")
    parser.add_argument("--reuse", action="store_true",
                        help="With --runs: keep settings already trained there to the same length.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.reuse and args.runs is None:
        parser.error("--reuse needs --runs")
    if not (args.dataroot / "trainA").is_dir():
        raise SystemExit(f"{args.dataroot}: no trainA/ folder; pass --dataroot")
    names = [s for s in args.settings.split(",") if s]
    for n in names:
        setting_overrides(n)  # unknown names fail before any training
    for needed in ("fp32", "fp32-seed1"):
        if needed not in names:
            names.insert(0 if needed == "fp32" else 1, needed)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or Path(tmp)
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {n: pool.submit(run_setting, n, args, runs) for n in names}
            results = {}
            for n in names:
                results[n] = futures[n].result()
                print(f"  {n}: {results[n].get('failed') or 'done'} ({results[n].get('train_s', 0):.0f} s)",
                      flush=True)

    ref = results["fp32"]["curve"]
    seed1 = results["fp32-seed1"].get("curve")
    noise = deviation(seed1, ref, args.bin) if seed1 else {}
    late_noise = deviation(seed1, ref, args.bin, late=True) if seed1 else {}
    groups = list(GROUPS)
    print(f"\n# {args.images} images per domain at {args.size}x{args.size} on {args.device}, bins of "
          f"{args.bin} images; dev = mean |bin mean - fp32 bin mean| / mean |fp32|, (x noise) = dev / "
          f"dev of fp32-seed1\n")
    header = f"{'setting':<16} {'batch':>5} " + " ".join(f"{g + ' dev':>17}" for g in groups) + \
        f" {'late cycle dev':>17} {'late D dev':>17} {'cycle L1 a2b/b2a':>17} {'train s':>8}"
    print(header)
    rows = []
    for n in names:
        r = results[n]
        if "curve" not in r:
            print(f"{n:<16} failed: {r['failed']}")
            rows.append(r)
            continue
        dev = deviation(r["curve"], ref, args.bin)
        late = deviation(r["curve"], ref, args.bin, late=True)
        cells = []
        for values, yardstick, keys in ((dev, noise, groups), (late, late_noise, ("cycle", "D"))):
            for g in keys:
                ratio = values[g] / yardstick[g] if yardstick.get(g) else float("nan")
                cells.append("-" if n == "fp32" else f"{values[g]:.3f} ({ratio:.1f}x)")
        cyc = r["test_cycle_l1"]
        cyc_s = f"{cyc['a2b']:.3f}/{cyc['b2a']:.3f}" if cyc else "n/a"
        print(f"{n:<16} {r['batch']:>5} " + " ".join(f"{c:>17}" for c in cells) + f" {cyc_s:>17} "
              f"{r['train_s']:>8.0f}")  # nan: reused
        rows.append({**r, "dev": dev, "dev_over_noise": {g: dev[g] / noise[g] if noise.get(g) else None
                                                         for g in groups},
                     "late_dev": late, "late_dev_over_noise": {g: late[g] / late_noise[g] if late_noise.get(g)
                                                               else None for g in groups}})
    print("\nfinal-bin means (fp32): " + ", ".join(
        f"{g} {v:.3f}" for g, v in binned(ref, args.bin)[max(binned(ref, args.bin))].items()))
    print(f"total {time.perf_counter() - start:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "loss_curves", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": args.device,
           "size": args.size, "images": args.images, "bin": args.bin, "dataroot": str(args.dataroot),
           "cpu_count": os.cpu_count(), "rows": rows}
    args.out.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
