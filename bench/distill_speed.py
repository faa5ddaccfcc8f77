#!/usr/bin/env python
"""Distilled students against their teacher: MACs, parameters, seconds per image at 512x512 and
1024x1024, and how closely each student reproduces the teacher on a test set, in one run.

Models: the teacher (``--teacher RUN``; default a randomly initialised ResNet-9 at ngf 64, which
times the same as a trained one) and each student (``--students RUN,RUN``: runs of ``cyclegan
distill``; default random ``mobile_resnet`` and ``animeganv2`` at ngf 16). Every timed row runs the
full ``cyclegan.translate.Translator`` path on a uint8 image (to [-1, 1], padding, forward, crop, back
to uint8), tiling off, batch 1:

    teacher eager-fp32   PyTorch eager fp32: the reference every ratio is computed against
    <student> eager-fp32 the same path for the student
    <student> auto       precision="auto" with threads capped, what ``cyclegan translate`` does by
                         default (bf16 autocast, ONNX Runtime or fp32; the note says which)

MACs are counted at 256x256 (``cyclegan.networks.count_macs``: multiply-adds of convolutions and
matrix products, transposed convolutions over their input positions). With trained runs and test
images (``--test-a``, default: testA of the teacher's dataroot), ``PSNR`` / ``SSIM`` compare each
student's translations with the teacher's at the teacher's training size (``cyclegan evaluate
--reference``). Each row runs in its own process; on CPU the timed repeats go round-robin over the
rows so load from other processes hits all alike. Results: a table on stdout, JSON via ``--out``.

    python bench/distill_speed.py --teacher runs/teacher --students runs/student-mobile,runs/student-anime
    python bench/distill_speed.py --sizes 256 --repeats 1        # random networks: a quick check
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import harness
import torch
from harness import Stopwatch, fmt, fmt_ratio

from cyclegan.config import GeneratorConfig
from cyclegan.data import find_images
from cyclegan.evaluate import load_test_images, reference_scores
from cyclegan.evaluate.checkpoints import resolve_test_folders
from cyclegan.modelfile import load_any_generator
from cyclegan.networks import build_generator, count_macs, count_parameters
from cyclegan.translate import Translator

REFERENCE = ("teacher", "eager-fp32")
DEFAULT_STUDENTS = (GeneratorConfig(name="mobile_resnet", ngf=16), GeneratorConfig(name="animeganv2", ngf=16))
TEACHER = GeneratorConfig(name="resnet", ngf=64, n_blocks=9)


def load_model(spec: dict) -> tuple[torch.nn.Module, GeneratorConfig]:
    """A model of the benchmark: a run/checkpoint/export (``source``) or a random network (``gcfg``)."""
    if spec.get("source"):
        loaded = load_any_generator(spec["source"], device="cpu")
        return loaded.model.eval(), loaded.info.config.model.generator
    torch.manual_seed(0)
    gcfg = GeneratorConfig(**spec["gcfg"])
    return build_generator(gcfg).eval(), gcfg


class RowSession:
    """One (model, variant) in its worker: build, first call and warm-up per size, then timed repeats."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.rounds = 0

    def prepare(self) -> dict:
        spec, device = self.spec, self.spec["device"]
        net, _ = load_model(spec)
        os.environ["CYCLEGAN_CACHE_DIR"] = str(Path(spec["tmp"]) / f"cache-{spec['label']}")  # exports timed
        # --threads: the same intra-op thread count for every row; default as cyclegan translate (auto caps
        # at the CPUs this process may use, eager leaves PyTorch's default)
        threads = spec["threads"]
        with Stopwatch(device) as setup:
            if spec["variant"] == "auto":
                self.translator = Translator(model=net, precision="auto",
                                             threads=0 if threads is None else threads,
                                             device=device, tile="off", batch_size=1)
            else:
                self.translator = Translator(model=net, device=device, tile="off", batch_size=1,
                                             threads=threads)
        out = {"status": "ready", "setup_s": setup.wall_s, "first_call_s": {}}
        if spec["variant"] == "auto":
            out["chose"] = self.translator.runtime.line()
        self.inputs = {}
        for size in spec["sizes"]:
            g = torch.Generator().manual_seed(size)
            self.inputs[size] = x = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=g)
            with Stopwatch(device) as first:
                self.translator.translate_tensor(x)
            out["first_call_s"][size] = first.wall_s
            for _ in range(spec["warmup"] - 1):
                self.translator.translate_tensor(x)
        return out

    def repeat(self) -> dict:
        self.rounds += 1
        out = {}
        for size, x in self.inputs.items():
            if self.rounds <= repeats_at(size, self.spec["repeats"], self.spec["device"]):
                with Stopwatch(self.spec["device"]) as sw:
                    self.translator.translate_tensor(x)
                out[size] = sw.record()
        return {"sizes": out}

    def finish(self) -> dict:
        return {"torch_threads": torch.get_num_threads()}


def repeats_at(size: int, repeats: int, device: str) -> int:
    # The teacher's 1024x1024 pass takes 10-30 s on a 2-core CPU: fewer repeats there keep the run short.
    return max(1, repeats // 2) if device == "cpu" and size >= 1024 else repeats


def describe(spec: dict) -> dict:
    """MACs at 256x256 and parameters of a model (in the driver; the meta-device count allocates nothing)."""
    net, gcfg = load_model(spec)
    return {"generator": gcfg.name, "ngf": gcfg.ngf, "macs_256": count_macs(net),
            "params": count_parameters(net)}


def quality(teacher: str, student: str, test_a: str | None, limit: int | None) -> dict:
    """PSNR / SSIM / L1 of the student's translations against the teacher's on test-A images at the
    teacher's training size (the numbers ``cyclegan evaluate --reference`` writes)."""
    t_loaded, s_loaded = load_any_generator(teacher), load_any_generator(student)
    cfg = t_loaded.info.config
    folder = Path(test_a) if test_a else resolve_test_folders(cfg, dataroot=None, test_a=None, test_b=None)[0]
    images, _ = load_test_images(find_images(folder), size=cfg.data.crop_size, max_images=limit)
    scores = reference_scores(s_loaded.model, t_loaded.model, images)
    return {**scores, "test_folder": str(folder), "image_size": cfg.data.crop_size}


def teacher_training(teacher: str) -> dict | None:
    """Steps, epochs and wall time of the teacher run, from its log.jsonl (None for a non-run)."""
    log = Path(teacher) / "log.jsonl"
    if not log.is_file():
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    steps = [r for r in records if "step" in r and "event" not in r]
    starts = [r["time"] for r in records if r.get("event") in ("start", "resume")]
    stops = [r["time"] for r in records if r.get("event") == "stop"]
    return {"steps": steps[-1]["step"] if steps else 0, "epoch": steps[-1]["epoch"] if steps else 0,
            "hours": round(sum(b - a for a, b in zip(starts, stops)) / 3600, 2) if stops else None}


def format_report(hw: dict, config: dict, models: list[dict], results: list[dict], *, markdown: bool) -> str:
    ref_macs = models[0]["macs_256"]
    head = ["model", "generator", "GMACs@256", "x fewer", "params", "PSNR dB", "SSIM"]
    mrows = []
    for m in models:
        q = m.get("quality") or {}
        mrows.append([m["label"], f"{m['generator']} ngf {m['ngf']}", fmt(m["macs_256"] / 1e9, ".2f"),
                      fmt_ratio(ref_macs / m["macs_256"]), f"{m['params']:,}", fmt(q.get("psnr"), ".2f"),
                      fmt(q.get("ssim"), ".3f")])
    rows = []
    for r in results:
        label = f"{r['size']}x{r['size']}"
        if r["status"] != "ok":
            rows.append([label, r["model"], r["variant"], "skipped", "", r["reason"]])
            continue
        notes = [f"chose {r['chose'].split(' (')[0]}; setup {r['setup_s']:.1f} s"] if r.get("chose") else []
        notes += harness.timing_notes(_stats(r), busy_check=config["device"] == "cpu")
        rows.append([label, r["model"], r["variant"], fmt(r["s_per_img"], ".3f"), fmt_ratio(r["ratio"]),
                     "; ".join(notes)])
    threads = f", {config['threads']} thread(s) per row" if config.get("threads") else ""
    lines = [f"Distilled students vs teacher, device {config['device']}{threads}", harness.hardware_line(hw)]
    if config.get("teacher_training"):
        t = config["teacher_training"]
        lines.append(f"teacher trained {t['steps']} steps (epoch {t['epoch']}), {t['hours']} h")
    lines += [harness.format_table(head, mrows, right={2, 3, 4, 5, 6}, markdown=markdown),
              (f"PSNR/SSIM: student vs teacher translations of {config.get('quality_images') or 'no'} test-A "
               "images at the teacher's training size"),
              (f"median of {config['repeats']} run(s) "
               f"({repeats_at(1024, config['repeats'], config['device'])} at 1024+), {config['warmup']} "
               "warm-up; x teacher = teacher eager-fp32 s/img / row s/img"),
              harness.format_table(["size", "model", "variant", "s/img", "x teacher", "notes"], rows,
                                   right={3, 4}, markdown=markdown)]
    if config["device"] == "cpu" and (footer := harness.busy_footer([_stats(r) for r in results
                                                                     if r["status"] == "ok"], hw)):
        lines.append(footer)
    return "\n".join(lines)


def _stats(r: dict) -> dict:
    return {"times": r["s_repeats"], "used": r["repeats_used"], "spread": r["spread"],
            "cpu_util_used": r["cpu_util_used"]}


def main(argv=None) -> int:
    p = harness.make_parser("distill_speed", __doc__)
    p.add_argument("--teacher", help="teacher run/checkpoint/export (default: a random ResNet-9, ngf 64)")
    p.add_argument("--students", help="comma-separated student runs (default: random mobile_resnet and "
                                      "animeganv2 at ngf 16)")
    p.add_argument("--test-a", help="test images for PSNR/SSIM (default: testA of the teacher's dataroot)")
    p.add_argument("--max-images", type=int, help="at most N test images for PSNR/SSIM")
    p.add_argument("--sizes", default="512,1024", help="square image sides, comma separated")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per size (CPU: half at 1024+)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per size, the first call included")
    p.add_argument("--timeout", type=float, default=900, help="seconds per row before it is skipped")
    p.add_argument("--threads", type=int, help="CPU threads of every row (default: as cyclegan translate; 1 "
                                               "avoids threads waiting on each other on a busy machine)")
    args = p.parse_args(argv)
    if args._worker:
        return harness.serve(RowSession(json.loads(args._worker)))
    harness.check_minimums(p, args, {"repeats": 1, "warmup": 1, "threads": 1})
    device = harness.resolve_device(args.device)
    sizes = [int(s) for s in harness.split_list(args.sizes)]
    teacher = {"label": "teacher", "source": args.teacher,
               "gcfg": None if args.teacher else dataclasses.asdict(TEACHER)}
    students = ([{"label": Path(s).name, "source": s,
                  "gcfg": None} for s in harness.split_list(args.students)]
                if args.students else
                [{"label": f"{g.name}-{g.ngf}", "source": None, "gcfg": dataclasses.asdict(g)}
                 for g in DEFAULT_STUDENTS])
    log = harness.Progress()
    hw = harness.hardware_info(device, threads=args.threads, packages=("onnxruntime",))
    log(harness.hardware_line(hw))
    models = [{**m, **describe(m)} for m in [teacher, *students]]
    config = {"device": device, "sizes": sizes, "repeats": args.repeats, "warmup": args.warmup,
              "threads": args.threads,
              "teacher": args.teacher, "students": args.students, "timeout_s": args.timeout,
              "teacher_training": teacher_training(args.teacher) if args.teacher else None}
    if args.teacher and args.students:
        for m in models[1:]:
            m["quality"] = quality(args.teacher, m["source"], args.test_a, args.max_images)
            config["quality_images"] = m["quality"]["n"]
            log(f"{m['label']}: PSNR {m['quality']['psnr']:.2f} dB vs the teacher")
    rows = [(models[0], "eager-fp32")] + [(m, v) for m in models[1:] for v in ("eager-fp32", "auto")]
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"device": device, "sizes": sizes, "repeats": args.repeats, "warmup": args.warmup, "tmp": tmp,
                "threads": args.threads}
        jobs = [harness.Job(f"{m['label']} {v}", harness.worker_command(__file__, {
            **spec, "label": m["label"], "source": m["source"], "gcfg": m["gcfg"], "variant": v}))
                for m, v in rows]
        runs = harness.run_workers(jobs, repeats=args.repeats, budget_s=args.timeout,
                                   interleave=device == "cpu", log=log, env={"PYTHONWARNINGS": "ignore"})
    results = []
    for (m, variant), run in zip(rows, runs):
        for size in sizes:
            row = {"model": m["label"], "variant": variant, "size": size, "status": run["status"],
                   "reason": run.get("reason")}
            if run["status"] == "ok":
                reps = [r["sizes"][str(size)] for r in run["repeats"] if str(size) in r["sizes"]]
                threads = run["final"].get("torch_threads") or 1
                st = harness.timing_stats(reps, threads=threads, drop_busy=device == "cpu")
                row.update(s_per_img=st["median"], s_repeats=st["times"], repeats_used=st["used"],
                           spread=st["spread"], cpu_util_used=st["cpu_util_used"],
                           setup_s=run["ready"]["setup_s"],
                           first_call_s=run["ready"]["first_call_s"][str(size)],
                           chose=run["ready"].get("chose"), torch_threads=threads)
            results.append(row)
    for r in results:
        ref = next(x for x in results if x["size"] == r["size"] and (x["model"], x["variant"]) == REFERENCE)
        r["ratio"] = harness.ratio(r.get("s_per_img"), ref.get("s_per_img"), higher_is_better=False)
    hw["loadavg_end"] = harness.loadavg()
    print(format_report(hw, config, models, results, markdown=args.markdown), flush=True)
    harness.write_results(args.out, benchmark="distill_speed", hardware=hw, config=config, results=results,
                          models=models, total_wall_s=log.elapsed)
    log(f"wrote {args.out}")
    return 0 if runs[0]["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
