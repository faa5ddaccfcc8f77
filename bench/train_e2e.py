#!/usr/bin/env python
"""End-to-end training speed: the real ``cyclegan train`` with data loading, logging and checkpoints.

``train_speed.py`` times the training step in isolation; this script times what a user gets. Each
setting runs the CLI on real image files (``--dataroot``; default the horse2zebra-128 copy next to
the repository, else a synthetic dataset drawn here) for ``--warmup-steps`` + ``--steps``
iterations, with the paper's networks (preset ``cyclegan``), a log line every ``--log-every``
iterations and ``checkpoints/latest`` every ``--checkpoint-every`` (GPU: 100, seed 000's choice;
CPU: 10, about as many seconds apart). The
rate is read back from ``log.jsonl``: images of each domain per second over the windows after the
warm-up, so it includes waiting for data, logging, sample-free checkpoint writes and any host
syncs, but not start-up, compilation or the final save.

Settings use ``train_speed.py``'s grammar (``compile+bf16+cl@8``) plus one token: ``sync``
writes checkpoints in the training thread (``train.async_checkpoint=false``) instead of the
background writer, to show what the writer saves.

    python bench/train_e2e.py                                   # CPU at 128 px, ~4 min on 2 cores
    python bench/train_e2e.py --device cuda                     # GPU at 256 px
    python bench/train_e2e.py --settings fp32@1,fp32+sync@1 --checkpoint-every 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import hardware_info, hardware_line, parse_setting, resolve_device

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results" / "train_e2e.json"
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "horse2zebra-128"
DEFAULTS = {
    # checkpoint_every: the paper code's 100 iterations are ~5 s on a GPU; on a CPU 10 iterations are
    # already ~10 s, so the CPU run sees the checkpoint cost at a similar share of the time.
    "cuda": {"size": 256, "steps": 400, "warmup": 40, "log_every": 20, "checkpoint_every": 100,
             "settings": "fp32@1,compile+bf16+cl@1,bf16+cl@8,compile+bf16+cl@8,compile+bf16+cl+sync@8"},
    "cpu": {"size": 128, "steps": 40, "warmup": 3, "log_every": 5, "checkpoint_every": 10,
            "settings": "fp32@1,fp32+sync@1,bf16@1,bf16+sync@1"},
}


def parse(item: str) -> tuple[str, dict]:
    """'bf16+cl+sync@8' -> (canonical name, --set overrides)."""
    body, at, batch = item.strip().lower().partition("@")
    tokens = body.split("+")
    sync = "sync" in tokens
    s = parse_setting("+".join(t for t in tokens if t != "sync") + at + batch)
    over = {"train.precision": s.precision, "train.channels_last": s.channels_last, "train.compile": s.compile,
            "train.batch_size": s.batch, "train.async_checkpoint": not sync}
    return f"{s.name}{'+sync' if sync else ''}@{s.batch}", over


def run(name: str, over: dict, args, dataroot: Path, runs: Path) -> dict:
    batch = over["train.batch_size"]
    total = args.warmup_steps + args.steps
    sets = {**over, "data.crop_size": args.size, "data.load_size": round(args.size * 286 / 256),
            "data.num_workers": args.workers, "train.log_every": args.log_every,
            "train.save_latest_every": args.checkpoint_every, "train.tensorboard": False}
    cmd = [sys.executable, "-m", "cyclegan", "train", "--dataroot", str(dataroot), "--out", str(runs / name),
           "--preset", "cyclegan", "--device", args.device, "--max-steps", str(total), "--quiet", "--overwrite"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"setting": name, "failed": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    images = seconds = data_s = 0.0
    previous = 0
    for line in (runs / name / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "img_per_s" not in rec:
            continue
        n = (rec["step"] - previous) * batch  # the window since the last record
        previous = rec["step"]
        if rec["step"] - n // batch >= args.warmup_steps:
            elapsed = n / rec["img_per_s"]
            images, seconds, data_s = images + n, seconds + elapsed, data_s + rec["data_time_share"] * elapsed
    if not seconds:
        return {"setting": name, "failed": "no log windows after the warm-up; raise --steps"}
    return {"setting": name, "batch": batch, "img_per_s": images / seconds, "data_share": data_s / seconds,
            "timed_images": images, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dataroot", type=Path, default=None)
    parser.add_argument("--settings", default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="Timed iterations per setting.")
    parser.add_argument("--warmup-steps", type=int, default=None, help="Untimed first iterations.")
    parser.add_argument("--log-every", type=int, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="train.save_latest_every (GPU 100 as the paper's code, CPU 10).")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.device = resolve_device(args.device)
    d = DEFAULTS[args.device]
    args.size = args.size or d["size"]
    args.steps = args.steps or d["steps"]
    args.warmup_steps = d["warmup"] if args.warmup_steps is None else args.warmup_steps
    args.log_every = args.log_every or d["log_every"]
    args.checkpoint_every = args.checkpoint_every or d["checkpoint_every"]
    try:
        settings = [parse(item) for item in (args.settings or d["settings"]).split(",") if item.strip()]
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if not any(n == "fp32@1" for n, _ in settings):
        settings.insert(0, parse("fp32@1"))

    hw = hardware_info(args.device)
    print(f"# {hardware_line(hw)}", flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        dataroot = args.dataroot or (DEFAULT_DATA if (DEFAULT_DATA / "trainA").is_dir() else None)
        if dataroot is None:
            from cyclegan.synthetic import make_unpaired_dataset

            dataroot = make_unpaired_dataset(Path(tmp) / "data", n_train=64, n_test=4, size=args.size, seed=0)
        rows = []
        for name, over in settings:
            rows.append(run(name, over, args, Path(dataroot), Path(tmp) / "runs"))
            print(f"  {name}: {rows[-1].get('failed') or 'done'} ({rows[-1].get('wall_s', 0):.0f} s)", flush=True)

    ref = next((r for r in rows if r["setting"] == "fp32@1" and "img_per_s" in r), None)
    print(f"\n{'setting':<26} {'batch':>5} {'img/s':>8} {'x ref':>7} {'data %':>7} {'wall s':>7}")
    for r in rows:
        if "failed" in r:
            print(f"{r['setting']:<26} failed: {r['failed']}")
            continue
        r["x_ref"] = r["img_per_s"] / ref["img_per_s"] if ref else None
        ratio = f"{r['x_ref']:.2f}x" if r["x_ref"] else "-"
        print(f"{r['setting']:<26} {r['batch']:>5} {r['img_per_s']:>8.2f} {ratio:>7} "
              f"{100 * r['data_share']:>6.1f}% {r['wall_s']:>7.0f}")
    print(f"\n{args.steps} timed iterations after {args.warmup_steps} warm-up at {args.size}x{args.size}, "
          f"log every {args.log_every}, checkpoints/latest every {args.checkpoint_every}, "
          f"{args.workers} DataLoader workers, data {dataroot}; total {time.perf_counter() - start:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "train_e2e", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "hardware": hw,
           "size": args.size, "steps": args.steps, "warmup_steps": args.warmup_steps,
           "log_every": args.log_every, "checkpoint_every": args.checkpoint_every, "workers": args.workers,
           "dataroot": str(dataroot), "cpu_count": os.cpu_count(), "rows": rows}
    args.out.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
