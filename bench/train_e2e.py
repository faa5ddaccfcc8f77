#!/usr/bin/env python
"""End-to-end training speed: the real ``cyclegan train`` with data loading, logging and checkpoints.

``train_speed.py`` times the training step in isolation; this script times what a user gets. Each
setting runs the CLI on real image files (``--dataroot``; default the horse2zebra-128 copy next to
the repository, else a synthetic dataset drawn here) for ``--warmup-steps`` + ``--steps``
iterations, with the paper's networks (preset ``cyclegan``), a log line every ``--log-every``
iterations and ``checkpoints/latest`` every ``--checkpoint-every`` (GPU: 100, as the `ghibli` preset;
CPU: 10, about as many seconds apart). The rate is read back from ``log.jsonl``: images of each
domain per second over the windows after the warm-up, so it includes waiting for data, logging,
sample-free checkpoint writes and any host syncs, but not start-up, compilation or the final save.

Settings use ``train_speed.py``'s grammar (``compile+bf16+cl@8``) plus one token: ``sync``
writes checkpoints in the training thread (``train.async_checkpoint=false``) instead of the
background writer, to show what the writer saves.

    python bench/train_e2e.py                                   # CPU at 128 px, ~4 min on 2 cores
    python bench/train_e2e.py --device cuda                     # GPU at 256 px
    python bench/train_e2e.py --settings fp32@1,fp32+sync@1 --checkpoint-every 5
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import harness
from harness import LOAD_RATIO, Setting, fmt, fmt_ratio

from cyclegan.synthetic import make_unpaired_dataset

DEFAULTS = {
    # checkpoint_every: the paper code's 100 iterations are ~5 s on a GPU; on a CPU 10 iterations are
    # already ~10 s, so the CPU run sees the checkpoint cost at a similar share of the time.
    "cuda": {"size": 256, "steps": 400, "warmup_steps": 40, "log_every": 20, "checkpoint_every": 100,
             "settings": "fp32@1,compile+bf16+cl@1,bf16+cl@8,compile+bf16+cl@8,compile+bf16+cl+sync@8"},
    "cpu": {"size": 128, "steps": 40, "warmup_steps": 3, "log_every": 5, "checkpoint_every": 10,
            "settings": "fp32@1,fp32+sync@1,bf16@1,bf16+sync@1"},
}


def run(s: Setting, cfg: dict, dataroot: Path, runs: Path) -> dict:
    """Train one setting with the CLI; img/s and data share over the log windows after the warm-up."""
    out = runs / s.key
    sets = {**s.overrides(), "train.async_checkpoint": not s.has("sync"), "data.crop_size": cfg["size"],
            "data.load_size": round(cfg["size"] * LOAD_RATIO), "data.num_workers": cfg["workers"],
            "train.log_every": cfg["log_every"], "train.save_latest_every": cfg["checkpoint_every"],
            "train.tensorboard": False}
    proc = harness.run_cli(["train", "--dataroot", str(dataroot), "--out", str(out), "--preset", "cyclegan",
                            "--device", cfg["device"], "--max-steps", str(cfg["warmup_steps"] + cfg["steps"]),
                            "--quiet", "--overwrite", *harness.set_args(sets)])
    row = {"setting": s.key, "batch": s.batch, "wall_s": proc["wall_s"], "status": "ok", "reason": None}
    if not proc["ok"]:
        return {**row, "status": "skipped", "reason": f"failed: {proc['reason']}"}
    images = seconds = data_s = 0.0
    previous = 0
    for line in (out / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "img_per_s" not in rec:
            continue
        n = (rec["step"] - previous) * s.batch  # the window since the last record
        previous = rec["step"]
        if rec["step"] - n // s.batch >= cfg["warmup_steps"]:
            elapsed = n / rec["img_per_s"]
            images, seconds, data_s = images + n, seconds + elapsed, data_s + rec["data_time_share"] * elapsed
    if not seconds:
        return {**row, "status": "skipped", "reason": "no log windows after the warm-up; raise --steps"}
    return {**row, "img_per_s": images / seconds, "data_share": data_s / seconds, "timed_images": images}


def main(argv=None) -> int:
    p = harness.make_parser("train_e2e", __doc__)
    p.add_argument("--dataroot", type=Path, help="image folders (default horse2zebra-128 next to the "
                   "repository, else a synthetic set)")
    p.add_argument("--settings", help="comma separated (default: per device)")
    p.add_argument("--size", type=int, help="crop size (default 256 GPU, 128 CPU)")
    p.add_argument("--steps", type=int, help="timed iterations per setting (default 400 GPU, 40 CPU)")
    p.add_argument("--warmup-steps", type=int, help="untimed first iterations (default 40 GPU, 3 CPU)")
    p.add_argument("--log-every", type=int, help="train.log_every (default 20 GPU, 5 CPU)")
    p.add_argument("--checkpoint-every", type=int,
                   help="train.save_latest_every (default 100 GPU as the paper's code, 10 CPU)")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    args = p.parse_args(argv)
    harness.check_minimums(p, args, {"size": 1, "steps": 1, "warmup_steps": 0, "log_every": 1,
                                     "checkpoint_every": 1, "workers": 0})
    device = harness.resolve_device(args.device)
    cfg = {k: default if getattr(args, k) is None else getattr(args, k)
           for k, default in DEFAULTS[device].items()}
    try:
        settings = harness.parse_settings(cfg["settings"], flags=("sync",))
    except ValueError as e:
        p.error(str(e))
    cfg.update(device=device, workers=args.workers, settings=[s.key for s in settings])
    hw = harness.hardware_info(device)
    log = harness.Progress()
    log(harness.hardware_line(hw))
    with tempfile.TemporaryDirectory() as tmp:
        dataroot = args.dataroot or harness.DEFAULT_DATA
        if args.dataroot is None and not (dataroot / "trainA").is_dir():
            dataroot = make_unpaired_dataset(Path(tmp) / "data", n_train=64, n_test=4, size=cfg["size"],
                                             seed=0)
        cfg["dataroot"] = str(dataroot)
        results = []
        for i, s in enumerate(settings):
            results.append(run(s, cfg, Path(dataroot), Path(tmp) / "runs"))
            r = results[-1]
            log(f"[{i + 1}/{len(settings)}] {s.key}: " + (f"{r['img_per_s']:.2f} img/s" if r["status"] == "ok"
                                                           else r["reason"]) + f" ({r['wall_s']:.0f} s)")

    ref = results[0] if results[0]["status"] == "ok" else None  # settings[0] is the reference
    rows = []
    for r in results:
        r["ratio"] = harness.ratio(r.get("img_per_s"), ref and ref["img_per_s"])
        label = r["setting"] + (" (reference)" if r is ref else "")
        if r["status"] != "ok":
            rows.append([label, str(r["batch"]), "skipped", "", "", "", r["reason"]])
            continue
        rows.append([label, str(r["batch"]), fmt(r["img_per_s"], ".2f"), fmt_ratio(r["ratio"]),
                     fmt(100 * r["data_share"], ".1f"), fmt(r["wall_s"], ".0f"), ""])
    print(f"cyclegan train end to end, preset cyclegan, {cfg['size']}x{cfg['size']}, device {device}\n"
          f"{harness.hardware_line(hw)}\n"
          f"{cfg['steps']} timed iterations after {cfg['warmup_steps']} warm-up, log every "
          f"{cfg['log_every']}, checkpoints/latest every {cfg['checkpoint_every']}, {cfg['workers']} "
          f"DataLoader workers, data {dataroot}; one run per setting; x ref = img/s / reference img/s")
    print(harness.format_table(["setting", "batch", "img/s", "x ref", "data %", "wall s", "notes"], rows,
                               right={1, 2, 3, 4, 5}, markdown=args.markdown), flush=True)
    hw["loadavg_end"] = harness.loadavg()
    harness.write_results(args.out, benchmark="train_e2e", hardware=hw, config=cfg, results=results,
                          total_wall_s=log.elapsed)
    log(f"wrote {args.out}")
    return 0 if ref else 1


if __name__ == "__main__":
    sys.exit(main())
