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
    bf16, bf16+cl    bf16 autocast (and channels_last); any setting of train_speed.py's grammar
    compile+bf16+cl  (harness.parse_setting) works, and ``-seedN`` trains it with seed N
    fp16             fp16 autocast with the grad scaler (GPU)
    b4-none, b4-sqrt, b4-linear, b8-...   batch 4/8 with ``optim.lr_scaling`` none | sqrt | linear:
                     the LR rule for batch > 1, compared at equal images seen

    python bench/loss_curves.py                                  # default: 64 px, 1200 images
    python bench/loss_curves.py --device cuda --size 128 --images 3000 --settings \\
        fp32,fp32-seed1,bf16+cl,compile+bf16+cl,b8-none,b8-sqrt,b8-linear
    python bench/loss_curves.py --dataroot my_data --jobs 2

Runs go to ``--runs`` (default a temporary folder); the table goes to stdout and JSON to ``--out``.
On CPU, ``--jobs 2`` runs two settings at once with one thread each: losses do not depend on timing.
"""

from __future__ import annotations

import concurrent.futures
import json
import statistics
import sys
import tempfile
from pathlib import Path

import harness
from harness import LOAD_RATIO

GROUPS = {  # column -> log.jsonl keys averaged into it
    "gan": ("G_A_gan", "G_B_gan"),
    "cycle": ("cycle_A", "cycle_B"),
    "idt": ("idt_A", "idt_B"),
    "D": ("D_A", "D_B"),
}
LR_RULES = ("none", "sqrt", "linear")


def setting_overrides(name: str) -> dict[str, object]:
    """--set overrides of one named setting (on top of preset cyclegan and the common flags).

    ``bN-RULE``: batch N with ``optim.lr_scaling`` RULE; otherwise a harness setting, optionally
    ``-seedN``. Raises ValueError for anything else.
    """
    base, _, suffix = name.partition("-")
    if base.startswith("b") and base[1:].isdigit() and suffix in LR_RULES:
        return {"train.batch_size": int(base[1:]), "optim.lr_scaling": suffix}
    over = harness.parse_setting(base).overrides()
    if suffix:
        if not (suffix.startswith("seed") and suffix[4:].isdigit()):
            raise ValueError(f"setting {name!r}: after '-' use seedN, or bN-{'|'.join(LR_RULES)}")
        over["train.seed"] = int(suffix[4:])
    return over


def run_setting(name: str, args, runs: Path) -> dict:
    """Train one setting to ``args.images`` images per domain, then evaluate it; returns its record."""
    over = setting_overrides(name)
    batch = int(over.get("train.batch_size", 1))
    steps = max(1, args.images // batch)
    run = runs / name
    common = {
        "data.load_size": round(args.size * LOAD_RATIO), "data.crop_size": args.size,
        # one record per `bin` images, whatever the batch
        "train.log_every": max(1, args.bin // batch), "train.num_threads": args.threads,
        "train.save_latest_every": steps, "train.tensorboard": False,
    }
    row = {"setting": name, "batch": batch, "steps": steps, "status": "ok", "reason": None}
    if args.reuse and _finished(run, steps):
        row["train_s"] = None  # trained by an earlier invocation
    else:
        proc = harness.run_cli(["train", "--dataroot", str(args.dataroot), "--out", str(run), "--preset",
                                "cyclegan", "--device", args.device, "--max-steps", str(steps), "--quiet",
                                "--overwrite", *harness.set_args({**common, **over})])
        if not proc["ok"]:
            return {**row, "status": "skipped", "reason": f"failed: {proc['reason']}"}
        row["train_s"] = proc["wall_s"]
    curve = []
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "G_total" in rec:
            curve.append({"images": rec["step"] * batch,
                          **{g: sum(rec[k] for k in keys) / len(keys) for g, keys in GROUPS.items()}})
    ev_json = run / "eval.json"
    if not (args.reuse and ev_json.is_file()):
        harness.run_cli(["evaluate", "--checkpoint", str(run), "--dataroot", str(args.dataroot),
                         "--no-inception", "--image-size", str(args.size), "--device", args.device,
                         "--out", str(ev_json)])
    cycle = None
    if ev_json.is_file():
        doc = json.loads(ev_json.read_text())
        cycle = {d: doc[d]["cycle_l1"] for d in ("a2b", "b2a") if d in doc}
    return {**row, "curve": curve, "test_cycle_l1": cycle}


def _finished(run: Path, steps: int) -> bool:
    """A run left by an earlier invocation that reached ``steps`` (for --reuse)."""
    try:
        records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    except (OSError, ValueError):
        return False
    return any(r.get("event") == "stop" and r.get("step") == steps for r in records)


def binned(curve: list[dict], bin_images: int) -> dict[int, dict[str, float]]:
    """{bin index: {group: mean}} over the records whose images-seen fall in that bin."""
    bins: dict[int, dict[str, list[float]]] = {}
    for rec in curve:
        b = (rec["images"] - 1) // bin_images
        for g in GROUPS:
            bins.setdefault(b, {}).setdefault(g, []).append(rec[g])
    return {b: {g: statistics.fmean(v) for g, v in groups.items()} for b, groups in bins.items()}


def deviation(curve: list[dict], reference: list[dict], bin_images: int, *,
              late: bool = False) -> dict[str, float]:
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


def main(argv=None) -> int:
    p = harness.make_parser("loss_curves", __doc__)
    p.add_argument("--dataroot", type=Path, default=harness.DEFAULT_DATA)
    p.add_argument("--size", type=int, default=64, help="crop size (loaded at 286/256 of it)")
    p.add_argument("--images", type=int, default=1200, help="images per domain each setting trains on")
    p.add_argument("--bin", type=int, default=100, help="images per comparison bin (and per log record)")
    p.add_argument("--settings", default="fp32,fp32-seed1,bf16,bf16+cl,b4-none,b4-sqrt,b4-linear")
    p.add_argument("--jobs", type=int, default=1, help="settings trained at once")
    p.add_argument("--threads", type=int, default=0, help="train.num_threads per run (0: default, capped)")
    p.add_argument("--runs", type=Path, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--reuse", action="store_true",
                   help="with --runs: keep settings already trained there to the same length")
    args = p.parse_args(argv)
    harness.check_minimums(p, args, {"size": 1, "images": 1, "bin": 1, "jobs": 1, "threads": 0})
    if args.reuse and args.runs is None:
        p.error("--reuse needs --runs")
    if not (args.dataroot / "trainA").is_dir():
        p.error(f"{args.dataroot}: no trainA/ folder; pass --dataroot")
    args.device = harness.resolve_device(args.device)
    # the reference and the noise yardstick first, always
    names = list(dict.fromkeys(["fp32", "fp32-seed1", *harness.split_list(args.settings)]))
    try:
        for n in names:
            setting_overrides(n)  # unknown names fail before any training
    except ValueError as e:
        p.error(str(e))

    hw = harness.hardware_info(args.device)
    log = harness.Progress()
    log(harness.hardware_line(hw))
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or Path(tmp)
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {n: pool.submit(run_setting, n, args, runs) for n in names}
            results = []
            for i, n in enumerate(names):
                results.append(futures[n].result())
                r = results[-1]
                took = harness.fmt(r.get("train_s"), ".0f", "reused")
                log(f"[{i + 1}/{len(names)}] {n}: {r['reason'] or 'done'} ({took} s)")

    by_name = {r["setting"]: r for r in results}
    if by_name["fp32"]["status"] != "ok":
        print(f"error: the reference fp32 run failed: {by_name['fp32']['reason']}", file=sys.stderr)
        return 1
    ref = by_name["fp32"]["curve"]
    seed1 = by_name["fp32-seed1"].get("curve")
    noise = deviation(seed1, ref, args.bin) if seed1 else {}
    late_noise = deviation(seed1, ref, args.bin, late=True) if seed1 else {}
    groups = list(GROUPS)
    rows = []
    for r in results:
        if r["status"] != "ok":
            rows.append([r["setting"], str(r["batch"]), *[""] * (len(groups) + 4), r["reason"]])
            continue
        dev = deviation(r["curve"], ref, args.bin)
        late = deviation(r["curve"], ref, args.bin, late=True)
        r.update(dev=dev, late_dev=late,
                 dev_over_noise={g: harness.ratio(dev[g], noise.get(g)) for g in groups},
                 late_dev_over_noise={g: harness.ratio(late[g], late_noise.get(g)) for g in groups})
        cells = []
        for values, over, keys in ((dev, r["dev_over_noise"], groups),
                                   (late, r["late_dev_over_noise"], ("cycle", "D"))):
            cells += ["-" if r["setting"] == "fp32" else
                      f"{values[g]:.3f} ({harness.fmt(over[g], '.1f', 'nan')}x)" for g in keys]
        cyc = r["test_cycle_l1"]
        rows.append([r["setting"], str(r["batch"]), *cells,
                     f"{cyc['a2b']:.3f}/{cyc['b2a']:.3f}" if cyc else "n/a",
                     harness.fmt(r["train_s"], ".0f", "reused"), ""])
    final = binned(ref, args.bin)
    print(f"Loss curves against fp32 batch 1, {args.images} images per domain at {args.size}x{args.size} on "
          f"{args.device}, bins of {args.bin} images\n{harness.hardware_line(hw)}\n"
          "dev = mean |bin mean - fp32 bin mean| / mean |fp32|, (Nx) = dev / dev of fp32-seed1; "
          "late = second half of the bins only")
    head = ["setting", "batch", *(f"{g} dev" for g in groups), "late cycle dev", "late D dev",
            "cycle L1 a2b/b2a", "train s", "notes"]
    print(harness.format_table(head, rows, right=set(range(1, len(head) - 1)), markdown=args.markdown))
    print("final-bin means (fp32): " + ", ".join(f"{g} {v:.3f}" for g, v in final[max(final)].items()),
          flush=True)
    config = {k: getattr(args, k) for k in ("device", "size", "images", "bin", "jobs", "threads", "reuse")}
    config.update(dataroot=str(args.dataroot), settings=names, runs=str(args.runs) if args.runs else None)
    hw["loadavg_end"] = harness.loadavg()
    harness.write_results(args.out, benchmark="loss_curves", hardware=hw, config=config, results=results,
                          total_wall_s=log.elapsed)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
