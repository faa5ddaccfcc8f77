#!/usr/bin/env python
"""The GPU suite: every GPU number the README reports, in steps of at most 10 minutes each.

Steps (``--step``), each one device command; the ``bench/`` script it runs and what it measures:

    train-table      train_speed.py at 256 px: fp32 batch 1 (the reference) vs every eager fast path
                     (channels_last, bf16, batch 4/8, +data), img/s and peak GPU memory
    train-compile    train_speed.py: the torch.compile rows (compiling takes minutes), same reference
    train-e2e        train_e2e.py: the real ``cyclegan train`` at 256 px with data and checkpoints
    bs1              train_e2e.py at batch 1, fp32 only (eager, channels_last, compile): the paper's
                     exact recipe at its fastest
    translate        translate_speed.py at 512/1024/2048: eager fp32, bf16+cl, fp16, compile, ONNX
                     Runtime (CUDA provider) and TensorRT (when onnxruntime has its provider)
    quality-cyclegan 6 minutes of ``cyclegan train --preset cyclegan`` on horse2zebra-128, then
    quality-fastcut  ``cyclegan evaluate --no-inception`` (cycle scores); samples saved
    report           merge the steps' parts into one dated JSON and Markdown table (no device needed)

Each step writes ``RESULTS/parts/STEP.json`` (its script's JSON, the printed table, the hardware,
status and wall time) and then rewrites the report from the parts present:
``RESULTS/<date>-<gpu>.json`` and ``.md``. Data: ``bench/data/gpu`` from ``bench/pack_gpu_data.py``
(git-ignored; carried to the device machine). ``--dry-run`` runs every step on the CPU with tiny
sizes and synthetic data in about a minute: the code path, not the numbers.

    python bench/pack_gpu_data.py                                # once, here (about 60 MB)
    python bench/gpu_suite.py --step train-table --results $OUT  # on the device, one step per command
    python bench/gpu_suite.py --step report                      # here, after copying the parts back
    python bench/gpu_suite.py --dry-run --step all --results /tmp/gpu-dry
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

from cyclegan.fileio import write_text_atomic
from cyclegan.synthetic import make_unpaired_dataset

BENCH = Path(__file__).resolve().parent
DATA = BENCH / "data" / "gpu"
RESULTS = harness.RESULTS / "gpu"
STEP_TIMEOUT = 570  # seconds: a device command may run 10 minutes, start-up and copying included
QUALITY_MINUTES = 6.0

TITLES = {
    "train-table": "Training step: fp32 batch 1 reference vs eager fast paths (256 px)",
    "train-compile": "Training step: torch.compile rows (256 px)",
    "train-e2e": "cyclegan train end to end at 256 px (data loading, logging, checkpoints)",
    "bs1": "Batch 1, fp32: the paper's exact recipe, end to end",
    "translate": "Translation at 512, 1024 and 2048 px",
    "quality-cyclegan": "Fixed budget: CycleGAN on horse2zebra-128",
    "quality-fastcut": "Fixed budget: FastCUT on horse2zebra-128",
}
STEPS = (*TITLES, "report")
# The GPU rows of train_speed.py (its default list, split so each command stays under 10 minutes).
TRAIN_EAGER = "fp32@1,fp32+cl@1,bf16@1,bf16+cl@1,fp32@4,bf16+cl@4,bf16+cl@8,fp32+data@1"
TRAIN_COMPILE = "fp32@1,compile+bf16+cl@1,compile+bf16+cl@8,compile+bf16+cl+data@8"


def script_args(step: str, dry: bool, data: Path) -> tuple[str, list[str]]:
    """(bench script, its arguments) of a measuring step; the dry run's are tiny and CPU-only."""
    if dry:
        tiny_e2e = ["--device", "cpu", "--dataroot", str(data / "horse2zebra-256"), "--size", "32", "--steps",
                    "1",
                    "--warmup-steps", "1", "--log-every", "1", "--checkpoint-every", "100", "--workers", "0",
                    "--settings", "fp32@1"]
        tiny_step = ["--device", "cpu", "--size", "32", "--iters", "1", "--repeats", "1", "--warmup", "1",
                     "--settings", "fp32@1"]
        return {
            "train-table": ("train_speed.py", tiny_step),
            "train-compile": ("train_speed.py", tiny_step),  # compiling alone would take minutes on a CPU
            "train-e2e": ("train_e2e.py", tiny_e2e),
            "bs1": ("train_e2e.py", tiny_e2e),
            "translate": ("translate_speed.py", ["--device", "cpu", "--sizes", "16", "--repeats", "1",
                                                 "--variants", "eager-fp32"]),
        }[step]
    e2e = ["--device", "cuda", "--dataroot", str(data / "horse2zebra-256"), "--size", "256", "--steps", "200",
           "--warmup-steps", "30", "--log-every", "10", "--checkpoint-every", "100"]
    return {
        "train-table": ("train_speed.py", ["--device", "cuda", "--size", "256", "--settings", TRAIN_EAGER,
                                           "--timeout", "120"]),
        "train-compile": ("train_speed.py", ["--device", "cuda", "--size", "256", "--settings", TRAIN_COMPILE,
                                             "--timeout", "240"]),
        "train-e2e": ("train_e2e.py", e2e),
        "bs1": ("train_e2e.py", [*e2e, "--settings", "fp32@1,fp32+cl@1,compile+cl@1"]),
        "translate": ("translate_speed.py",
                      ["--device", "cuda", "--sizes", "512,1024,2048", "--repeats", "10",
                                             "--timeout", "240", "--variants",
                                             "eager-fp32,bf16+cl,fp16,compile,onnxruntime,tensorrt"]),
    }[step]


def run_script(script: str, argv: list[str], raw: Path, timeout: float) -> dict:
    """Run one bench script with ``--markdown``; its table, its JSON, and how it went."""
    cmd = [sys.executable, str(BENCH / script), *argv, "--out", str(raw), "--markdown"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              cwd=BENCH.parent, env=os.environ.copy())
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return {"status": "failed", "reason": f"timed out after {timeout:.0f} s", "table": out,
                "wall_s": time.perf_counter() - t0, "command": cmd[1:]}
    part = {"status": "ok" if proc.returncode == 0 else "failed", "table": proc.stdout.strip(),
            "wall_s": time.perf_counter() - t0, "command": cmd[1:], "reason": None}
    if proc.returncode != 0:
        part["reason"] = f"exit {proc.returncode}: " + " | ".join(proc.stderr.strip().splitlines()[-3:])[
            -600:]
    if raw.is_file():
        part["result"] = json.loads(raw.read_text())
    return part


def _img_per_s(run: Path) -> float | None:
    """Images per second over the logged windows after the first (which holds the warm-up)."""
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    speeds = [r["img_per_s"] for r in log if r.get("img_per_s")]
    speeds = speeds[1:] if len(speeds) > 1 else speeds
    return len(speeds) / sum(1.0 / v for v in speeds) if speeds else None  # equal windows: harmonic mean


def quality(model: str, *, dry: bool, data: Path, work: Path, results: Path, minutes: float,
            timeout: float) -> dict:
    """Train ``model``'s preset for a fixed time from scratch, score it, keep its last samples."""
    run, device = work / f"quality-{model}", "cpu" if dry else "cuda"
    size = 32 if dry else 128
    sets = {"train.seed": 0, "train.tensorboard": False, "data.num_workers": 0 if dry else 4,
            # A fixed budget, not a schedule: epochs far beyond it and no decay within it (as
            # compare_models.py), so the budget alone decides how far each model gets.
            "train.epochs": 1000, "optim.decay_epochs": 1, "train.log_every": 1 if dry else 50}
    budget = ["--max-steps", "1"] if dry else ["--max-minutes", f"{minutes:g}"]
    train = harness.run_cli(["train", "--dataroot", str(data / "horse2zebra-128"), "--preset", model, "--out",
                             str(run), "--device", device, "--crop-size", str(size), "--load-size",
                             str(round(size * 143 / 128)), "--quiet", "--overwrite", *budget,
                             *harness.set_args(sets)], timeout=timeout)
    part = {"status": "ok" if train["ok"] else "failed", "reason": train["reason"], "wall_s": train["wall_s"],
            "command": ["cyclegan", "train", "--preset", model, *budget]}
    if not train["ok"]:
        return part
    scores = work / f"quality-{model}.eval.json"
    # No Inception weights on an offline machine: cycle reconstruction (two-sided models) and the
    # domain classifier's score (trained here on the training images, no download; both models).
    ev = harness.run_cli(["evaluate", "--checkpoint", str(run), "--no-inception", "--classifier", "--device",
                          device, "--out", str(scores), "--quiet",
                          *(["--max-images", "4", "--classifier-min-accuracy", "0", "--image-size", "16"]
                            if dry else [])],
                         timeout=timeout)
    if not ev["ok"]:
        return {**part, "status": "failed", "reason": f"evaluate: {ev['reason']}"}
    doc = json.loads(scores.read_text())
    steps = [json.loads(x).get("step", 0) for x in (run / "log.jsonl").read_text().splitlines()]
    samples = sorted((run / "samples").glob("*.*"), key=lambda p: p.stat().st_mtime)
    kept = None
    if samples:
        kept = results / f"quality-{model}-samples{samples[-1].suffix}"
        shutil.copyfile(samples[-1], kept)
    result = {"model": model, "minutes": None if dry else minutes, "iterations": max(steps, default=0),
              "img_per_s": _img_per_s(run), "samples": kept.name if kept else None,
              "scores": {d: {k: v for k, v in doc[d].items() if isinstance(v, (int, float))}
                         for d in ("a2b", "b2a") if isinstance(doc.get(d), dict)}}
    keys = sorted({k for d in result["scores"].values() for k in d} - {"n_source", "n_target"})
    rows = [[d, *(harness.fmt(s.get(k), ".4f") for k in keys)] for d, s in result["scores"].items()]
    table = (f"{model}: {result['iterations']} iterations, {harness.fmt(result['img_per_s'], '.2f')} img/s, "
             f"samples {result['samples']}\n\n" + harness.format_table(
                 ["direction", *keys], rows, right=set(range(1, len(keys) + 1)), markdown=True))
    return {**part, "wall_s": part["wall_s"] + ev["wall_s"], "result": result, "table": table}


# ------------------------------------------------------------------------------------------- report


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def write_report(results: Path, *, dry: bool) -> tuple[Path, Path] | None:
    """Merge ``results/parts/*.json`` into ``<date>-<gpu>.json`` and ``.md``; None when there are none."""
    parts = {p.stem: json.loads(p.read_text()) for p in sorted((results / "parts").glob("*.json"))
             if p.stem in TITLES}
    if not parts:
        return None
    first = parts[next(s for s in TITLES if s in parts)]
    hw = first["hardware"]
    gpu = (hw.get("gpu") or {}).get("name")
    date = hw["date"][:10]
    name = f"{date}-{_slug(gpu) if gpu else 'cpu'}" + ("-dry-run" if dry or first.get("dry_run") else "")
    doc = {"benchmark": "gpu_suite", "git": harness.git_state(), "hardware": hw,
           "steps": {s: parts.get(s, {"status": "not run"}) for s in TITLES}}
    lines = [f"# GPU suite: {gpu or 'CPU dry run'}, {date}", "", harness.hardware_line(hw), ""]
    for s, title in TITLES.items():
        part = parts.get(s)
        lines += [f"## {title}", ""]
        if part is None:
            lines += ["not run", ""]
            continue
        lines += [f"`{' '.join(part['command'])}` ({part['status']}, {part['wall_s']:.0f} s)", ""]
        if part.get("reason"):
            lines += [f"reason: {part['reason']}", ""]
        if part.get("table"):
            lines += [part["table"], ""]
    json_path, md_path = results / f"{name}.json", results / f"{name}.md"
    write_text_atomic(json_path, json.dumps(doc, indent=2, default=str) + "\n")
    write_text_atomic(md_path, "\n".join(lines))
    return json_path, md_path


# --------------------------------------------------------------------------------------------- main


def run_step(step: str, args, data: Path, work: Path) -> dict:
    device = "cpu" if args.dry_run else "cuda"
    if step.startswith("quality-"):
        part = quality(step.removeprefix("quality-"), dry=args.dry_run, data=data, work=work,
                       results=args.results, minutes=args.minutes, timeout=args.timeout)
    else:
        script, argv = script_args(step, args.dry_run, data)
        part = run_script(script, argv, work / f"{step}.raw.json", args.timeout)
    return {"step": step, "title": TITLES[step], "dry_run": args.dry_run,
            "hardware": harness.hardware_info(device, packages=("onnxruntime",)), **part}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--step", choices=(*STEPS, "all"), required=True)
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, tiny sizes, synthetic data: checks the code path")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder for parts/ and the report "
                   "(default bench/results/gpu)")
    p.add_argument("--data", type=Path, default=DATA, help="bench/pack_gpu_data.py's folder")
    p.add_argument("--minutes", type=float, default=QUALITY_MINUTES,
                   help="training budget of the quality steps")
    p.add_argument("--timeout", type=float, default=STEP_TIMEOUT, help="seconds a step's command may take")
    args = p.parse_args(argv)
    if args.dry_run and args.results == RESULTS:
        p.error("--dry-run writes no results under bench/results/gpu; give --results DIR")
    steps = [s for s in TITLES] if args.step == "all" else ([] if args.step == "report" else [args.step])
    if args.dry_run:
        # Tiny steps pay more for waking a second thread than they gain, and on a busy machine two
        # threads waiting for each other slow a step tenfold (bench/README.md, "A busy CPU").
        os.environ["OMP_NUM_THREADS"] = "1"
    log = harness.Progress()
    (args.results / "parts").mkdir(parents=True, exist_ok=True)
    failed = False
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        work = Path(tmp)
        data = args.data
        if args.dry_run:
            data = work / "data"
            # quality_race.py --tiny's set, scored at its --eval-size 16: the domain classifier (900
            # steps, most of a dry run's evaluate) is trained once per test session and then cached.
            for name in ("horse2zebra-128", "horse2zebra-256"):
                make_unpaired_dataset(data / name, n_train=2, n_test=4, size=32, seed=0)
        elif steps and not (data / "horse2zebra-128" / "trainA").is_dir():
            p.error(f"{data}: no packed data; run python bench/pack_gpu_data.py (and carry bench/data/gpu)")
        for step in steps:
            log(f"{step}: {TITLES[step]}")
            part = run_step(step, args, data, work)
            write_text_atomic(args.results / "parts" / f"{step}.json",
                              json.dumps(part, indent=2, default=str) + "\n")
            log(f"{step}: {part['status']} in {part['wall_s']:.0f} s"
                + (f" ({part['reason']})" if part.get("reason")
                                                                         else ""))
            failed |= part["status"] != "ok"
    written = write_report(args.results, dry=args.dry_run)
    if written:
        log(f"wrote {written[0]} and {written[1].name}")
    elif args.step == "report":
        print(f"error: no parts in {args.results / 'parts'}", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
