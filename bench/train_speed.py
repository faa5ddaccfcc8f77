#!/usr/bin/env python
"""Training-step speed of CycleGAN: img/s, peak memory and ms/step, reference vs fast paths.

The reference is what the official CycleGAN implementation computes: the paper's networks (preset
``cyclegan``: ResNet-9 generators at ngf 64, 70x70 PatchGAN, LSGAN + cycle + identity, image pool
50), fp32, eager, batch 1. Every other setting changes only speed levers (precision, memory format,
torch.compile, batch size) and is reported as a ratio to it. Each setting runs in its own subprocess
(harness.run_workers), so one that crashes, hangs or is unsupported is reported as skipped with the
reason, compile caches do not leak between settings, and CPU peak-RSS readings are per setting.

The step rows time ``cyclegan.training.build_train_step``'s step (generator step, image pools,
discriminator step) on synthetic uint8 batches in pinned host memory, exactly what the training loop
receives from its DataLoader. Rows with ``+data`` put a real DataLoader in front (PNG files made by
``cyclegan.synthetic.make_unpaired_dataset``; resize 286/256 -> random crop -> flip, as in training)
and also report the share of wall time spent waiting for the next batch.

    python bench/train_speed.py                       # CPU at 128x128, or a GPU at 256x256
    python bench/train_speed.py --device cpu --size 64 --iters 2 --settings fp32,bf16+cl
    python bench/train_speed.py --list-settings

Setting grammar (harness.parse_setting): ``+``-joined tokens, optionally ``@BATCH``: a precision
(fp32 | bf16 | fp16, default fp32), ``cl`` (channels_last), ``compile`` (torch.compile of the four
networks), ``data`` (DataLoader in front). ``ref`` is ``fp32@1``. Examples: ``bf16+cl@8``,
``compile+bf16+cl@8``, ``fp32+data@1``. Results go to a table on stdout and to JSON (``--out``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import harness
import torch
from harness import LOAD_RATIO, Setting, Stopwatch, fmt, fmt_ratio, skip

from cyclegan.config import build_config
from cyclegan.data import UnpairedImages, UnpairedSampler, gather_training_files, make_loader
from cyclegan.synthetic import make_unpaired_dataset
from cyclegan.training import build_train_step

PRESET = "cyclegan"
FLAGS = {"data": "data", "e2e": "data"}  # setting tokens of this script beyond harness.parse_setting's

DEFAULT_SETTINGS = {
    # The GPU figures: fp32 eager b1 (12.5 img/s on an H100), bf16+cl eager b8, compile b8.
    "cuda": [
        "fp32@1", "fp32+cl@1", "bf16@1", "bf16+cl@1", "compile+bf16+cl@1",
        "fp32@4", "bf16+cl@4", "bf16+cl@8", "compile+bf16+cl@8",
        "fp32+data@1", "compile+bf16+cl+data@8",
    ],
    # Sized so the whole default run stays within about 5 minutes on 2 idle cores at 128x128. The
    # batch-4 row uses the fastest eager path: bf16+cl where the CPU has native bf16, else fp32+cl.
    "cpu": [
        "fp32@1", "fp32+cl@1", "bf16@1", "bf16+cl@1", "compile+bf16+cl@1",
        "{fast}+cl@4", "fp32+data@1",
    ],
}
DEFAULT_SIZE = {"cuda": 256, "cpu": 128}
DEFAULT_ITERS = {"cuda": 20, "cpu": 1}
DEFAULT_REPEATS = {"cuda": 3, "cpu": 5}  # CPU: more one-step repeats, robust to other processes' load
DEFAULT_WARMUP = {"cuda": 5, "cpu": 1}
DEFAULT_TIMEOUT = {"cuda": 900, "cpu": 420}
# The first compiled step compiles every graph (one per network with torch 2.14, as generator outputs
# are handed on in fp32; dynamo counted 5 graphs for the 4 networks under bf16 before that); a
# second warm-up step catches any recompilation a later guard failure would trigger.
COMPILE_MIN_WARMUP = 2


def default_settings(device: str, native_bf16: bool) -> list[str]:
    fast = "bf16" if native_bf16 else "fp32"
    return [name.format(fast=fast) for name in DEFAULT_SETTINGS[device]]


def memory_method(device: str) -> str:
    if device == "cuda":
        return ("GPU: torch.cuda.max_memory_allocated (tensors: weights, Adam state, activations, "
                "pool; excludes the caching allocator's slack, see peak_reserved_bytes in JSON)")
    return ("CPU: peak RSS growth of the setting's own process = ru_maxrss after the run - RSS before "
            "building the models (/proc/self/statm); includes weights, Adam state, activations, allocator "
            "caches; DataLoader worker processes are not counted")


# ----------------------------------------------------------------------------------------------
# One setting (runs in a worker process)


def precheck(s: Setting, device: torch.device) -> str | None:
    """Why this setting cannot run here, or None."""
    if s.precision == "fp16" and device.type == "cpu" and not harness.mkldnn_fp16():
        return ("unsupported: this CPU has no oneDNN fp16 kernels (no avx512_fp16/amx_fp16); fp16 convs fall "
                "back to reference kernels ~100x slower than fp32")
    if s.precision != "fp32":
        dtype = torch.bfloat16 if s.precision == "bf16" else torch.float16
        try:
            with torch.autocast(device_type=device.type, dtype=dtype):
                torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
        except Exception as e:  # noqa: BLE001
            return f"unsupported: {s.precision} autocast on {device.type}: {type(e).__name__}: {e}"
        if device.type == "cuda" and s.precision == "bf16" and not torch.cuda.is_bf16_supported():
            return "unsupported: this GPU has no bf16"
    if s.compile and device.type == "cuda":
        try:
            from torch.utils._triton import has_triton  # private, but the only probe torch offers
        except ImportError:
            has_triton = None
        if has_triton is not None and not has_triton():
            return "unsupported: torch.compile on CUDA needs triton, which is not installed"
    elif s.compile:
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler  # the compiler inductor would use

            compiler = get_cpp_compiler()
        except Exception as e:  # noqa: BLE001
            return f"unsupported: no C++ compiler for torch.compile ({type(e).__name__}: {e})"
        if compiler is None or shutil.which(compiler) is None and not Path(str(compiler)).exists():
            return f"unsupported: C++ compiler {compiler!r} for torch.compile not found"
    return None


def data_iterator(cfg, repeat_files: int, workers: int, pin: bool):
    """Endless batches from the training pipeline's own dataset, sampler and DataLoader."""
    files = gather_training_files(cfg.data, batch_size=cfg.train.batch_size)
    # The same few files listed many times: each is still decoded and augmented per sample (from the
    # page cache, as in a real run), while an epoch is long enough that no timed step straddles an
    # epoch boundary with a cold prefetch queue.
    dataset = UnpairedImages(files.a * repeat_files, files.b * repeat_files, cfg.data)
    sampler = UnpairedSampler(n_a=len(dataset.files["A"]), n_b=len(dataset.files["B"]), seed=cfg.train.seed)
    loader = make_loader(dataset, sampler, batch_size=cfg.train.batch_size, num_workers=workers,
                         pin_memory=pin)
    epoch = 1
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


class StepSession:
    """One setting inside its worker: build + warm up, then timed repeats of ``iters`` steps."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.setting = harness.parse_setting(spec["setting"], FLAGS)
        self.device = torch.device(spec["device"])

    def prepare(self) -> dict:
        s, spec, device = self.setting, self.spec, self.device
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        why = precheck(s, device)
        if why:
            return skip(why)
        size, seed = spec["size"], spec["seed"]
        overrides = {**s.overrides(), "train.seed": seed, "train.device": device.type}
        if s.has("data"):
            overrides.update({"data.dataroot": spec["data_root"], "data.crop_size": size,
                              "data.load_size": max(size, round(size * LOAD_RATIO)),
                              "data.num_workers": spec["workers"]})
        cfg = build_config(preset=PRESET, overrides=overrides)

        torch.manual_seed(seed)
        self.rss0 = harness.current_rss()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with Stopwatch(device) as build:
            self.step = build_train_step(cfg, device)

        warmup = max(spec["warmup"], COMPILE_MIN_WARMUP if s.compile else 0, 1)
        pin = device.type == "cuda"
        if s.has("data"):
            n = (warmup + spec["iters"] * spec["repeats"]) * s.batch
            self.source = data_iterator(cfg, repeat_files=-(-n // spec["data_images"]) + 1,
                                        workers=spec["workers"], pin=pin)
        else:  # [B, 3, S, S] uint8 per domain, as the DataLoader hands them over
            g = torch.Generator().manual_seed(seed)
            fixed = {d: torch.randint(0, 256, (s.batch, 3, size, size), dtype=torch.uint8, generator=g)
                     for d in "AB"}
            fixed = {d: x.pin_memory() for d, x in fixed.items()} if pin else fixed
            self.source = iter(lambda: fixed, None)
        first = Stopwatch(device)
        for i in range(warmup):
            with first if i == 0 else Stopwatch(device):
                self.out = self.step(next(self.source))
        return {"status": "ready", "build_s": build.wall_s, "first_step_s": first.wall_s, "warmup": warmup}

    def repeat(self) -> dict:
        """``iters`` timed steps: wall and CPU time, and the time spent waiting for batches."""
        data_wait = 0.0
        with Stopwatch(self.device) as sw:
            for _ in range(self.spec["iters"]):
                td = time.perf_counter()
                batch = next(self.source)
                data_wait += time.perf_counter() - td
                self.out = self.step(batch)
        return {**sw.record(), "data_wait_s": data_wait}

    def finish(self) -> dict:
        loss = torch.stack([self.out[k].detach().float() for k in ("G_total", "D_A", "D_B")])
        res = {"losses_finite": bool(torch.isfinite(loss).all()), "torch_threads": torch.get_num_threads()}
        if self.device.type == "cuda":
            res["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
            res["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        else:
            res["peak_rss_bytes"] = peak = harness.peak_rss()
            res["peak_mem_bytes"] = peak - self.rss0 if self.rss0 is not None else None
        return res


# ----------------------------------------------------------------------------------------------
# Driver side


def summarise(s: Setting, run: dict, iters: int, device: str) -> dict:
    """A result row from a worker's ready / repeats / final messages."""
    if run["status"] != "ok":
        return {"status": "skipped", "reason": run["reason"], "wall_s": run.get("wall_s"),
                **({"stderr_tail": run["stderr_tail"]} if "stderr_tail" in run else {})}
    reps, ready, final = run["repeats"], run["ready"], run["final"]
    st = harness.timing_stats(reps, per=iters, threads=final.get("torch_threads") or 1,
                              drop_busy=device == "cpu")
    wall = sum(r["wall_s"] for r in reps)
    return {
        "status": "ok",
        "reason": None if final.get("losses_finite", True) else "warning: non-finite losses",
        "img_per_s": s.batch / st["median"],
        "ms_per_step": st["median"] * 1e3,
        "step_s_repeats": st["times"],
        "repeats_used": st["used"],  # indices into step_s_repeats that the median is taken over
        "spread": st["spread"],
        "img_per_s_best": s.batch / st["best"],
        "cpu_util_repeats": st["cpu_util_repeats"],
        "cpu_util": st["cpu_util"],
        "cpu_util_used": st["cpu_util_used"],
        "data_share": sum(r["data_wait_s"] for r in reps) / wall if s.has("data") else None,
        "build_s": ready["build_s"],
        "first_step_s": ready["first_step_s"],
        "warmup": ready["warmup"],
        "wall_s": run.get("wall_s"),
        **final,
    }


def _stats(r: dict) -> dict:
    """A result row's statistics in ``harness.timing_stats``'s names."""
    return {"times": r["step_s_repeats"], "used": r["repeats_used"], "spread": r["spread"],
            "cpu_util_used": r["cpu_util_used"]}


def format_report(report: dict, *, markdown: bool = False) -> str:
    hw, cfg = report["hardware"], report["config"]
    cpu = cfg["device"] == "cpu"
    head = ["setting", "batch", "img/s", "x ref", "peak RSS+ MiB" if cpu else "peak GPU MiB", "ms/step",
            "data %", "notes"]
    rows = []
    for r in report["results"]:
        label = r["setting"] + (" (reference)" if r["is_reference"] else "")
        if r["status"] != "ok":
            rows.append([label, str(r["batch"]), "skipped", "", "", "", "", r["reason"] or ""])
            continue
        notes = harness.timing_notes(_stats(r), busy_check=cpu)
        notes += [f"first step {r['first_step_s']:.0f} s"] if r["compile"] else []
        notes += [r["reason"]] if r.get("reason") else []
        mem = r.get("peak_mem_bytes")
        share = r.get("data_share")
        rows.append([label, str(r["batch"]), fmt(r["img_per_s"], ".2f"), fmt_ratio(r.get("ratio")),
                     fmt(mem / 2**20 if mem is not None else None, ".0f"), fmt(r["ms_per_step"], ".0f"),
                     fmt(share * 100 if share is not None else None, ".1f"), "; ".join(notes)])
    lines = [
        (f"CycleGAN training step, preset {cfg['preset']} ({cfg['networks']}), "
         f"{cfg['size']}x{cfg['size']}, device {cfg['device']}"),
        harness.hardware_line(hw),
        (f"median of {cfg['repeats']} repeats x {cfg['iters']} step(s) after {cfg['warmup']} warm-up step(s)"
         f" (compile: >= {COMPILE_MIN_WARMUP}), {cfg['schedule']}"
         + (f"; repeats with < {harness.CLEAN_UTIL:.0%} CPU for the process are set aside when others "
            "are clean" if cpu else "")
         + "; x ref = img/s / reference img/s"),
        harness.format_table(head, rows, right={1, 2, 3, 4, 5, 6}, markdown=markdown),
        f"memory: {report['memory_method']}",
    ]
    if cpu:
        lines.append(f"bf16 on this CPU: {hw['cpu_bf16']['note']}")
        footer = harness.busy_footer([_stats(r) for r in report["results"] if r["status"] == "ok"], hw)
        lines += [footer] if footer else []
    elif harness.gpu_fp32_line(hw):
        lines.append(harness.gpu_fp32_line(hw))
    if any(r["data"] for r in report["results"]):
        lines.append(f"data %: share of wall time waiting for the DataLoader ({cfg['workers']} workers, "
                     f"PNG decode + resize {round(cfg['size'] * LOAD_RATIO)} + crop {cfg['size']} + flip)")
    return "\n".join(lines)


def parse_args(argv=None):
    p = harness.make_parser("train_speed", __doc__, epilog="settings: '+'-joined tokens fp32|bf16|fp16, cl, "
                            "compile, data, optional @BATCH; 'ref' = fp32@1 (always run).")
    p.add_argument("--size", type=int, help="crop size (default 256 on GPU, 128 on CPU)")
    p.add_argument("--settings", help="comma-separated settings (default: a per-device list, see "
                   "--list-settings)")
    p.add_argument("--list-settings", action="store_true", help="print the default settings and exit")
    p.add_argument("--warmup", type=int, help=f"untimed steps first (default {DEFAULT_WARMUP['cuda']} GPU, "
                   f"{DEFAULT_WARMUP['cpu']} CPU; compile >= {COMPILE_MIN_WARMUP})")
    p.add_argument("--iters", type=int, help=f"timed steps per repeat (default {DEFAULT_ITERS['cuda']} GPU, "
                   f"{DEFAULT_ITERS['cpu']} CPU)")
    p.add_argument("--repeats", type=int, help=f"timed repeats; the median is reported (default "
                   f"{DEFAULT_REPEATS['cuda']} GPU, {DEFAULT_REPEATS['cpu']} CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch.set_num_threads in each setting (default: torch's)")
    p.add_argument("--workers", type=int, help="DataLoader workers for +data rows (default: config's 4)")
    p.add_argument("--data-images", type=int, default=32, help="generated images per domain for +data rows")
    p.add_argument("--timeout", type=float, help="seconds per setting before it is skipped (default 900 GPU, "
                   "420 CPU)")
    p.add_argument("--schedule", choices=("interleaved", "sequential"),
                   help="interleaved: timed repeats round-robin over all settings, so changing load from "
                        "other processes hits each alike (default on CPU); sequential: one setting after "
                        "another, one process alive at a time (default on GPU)")
    args = p.parse_args(argv)
    harness.check_minimums(p, args, {"size": 1, "warmup": 0, "iters": 1, "repeats": 1, "data_images": 1,
                                     "workers": 0, "threads": 1})
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._worker:
        return harness.serve(StepSession(json.loads(args._worker)))
    if args.list_settings:
        print(f"cuda: {','.join(default_settings('cuda', True))}")
        print(f"cpu with native bf16: {','.join(default_settings('cpu', True))}")
        print(f"cpu without: {','.join(default_settings('cpu', False))}")
        return 0
    device = harness.resolve_device(args.device)
    try:
        names = args.settings or ",".join(default_settings(device, harness.cpu_bf16_support()["native"]))
        settings = harness.parse_settings(names, FLAGS)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base = build_config(preset=PRESET)
    g, d = base.model.generator, base.model.discriminator
    config = {
        "preset": PRESET,
        "networks": (f"ResNet-{g.n_blocks} ngf {g.ngf}, {d.n_layers}-layer PatchGAN ndf {d.ndf}, "
                     f"{base.loss.gan} + cycle {base.loss.lambda_cyc:g} + identity {base.loss.lambda_id:g}, "
                     f"pool {base.loss.pool_size}"),
        "device": device,
        "size": args.size or DEFAULT_SIZE[device],
        "warmup": args.warmup if args.warmup is not None else DEFAULT_WARMUP[device],
        "iters": args.iters or DEFAULT_ITERS[device],
        "repeats": args.repeats or DEFAULT_REPEATS[device],
        "schedule": args.schedule or ("interleaved" if device == "cpu" else "sequential"),
        "seed": args.seed,
        "threads": args.threads,
        "workers": args.workers if args.workers is not None else base.data.num_workers,
        "data_images": args.data_images,
        "timeout_s": args.timeout or DEFAULT_TIMEOUT[device],
        "settings": [s.key for s in settings],
    }
    hw = harness.hardware_info(device, threads=args.threads)
    log = harness.Progress()
    log(harness.hardware_line(hw))
    with tempfile.TemporaryDirectory(prefix="train_speed_data_", ignore_cleanup_errors=True) as tmp:
        if any(s.has("data") for s in settings):
            make_unpaired_dataset(Path(tmp), n_train=args.data_images, n_test=0, size=config["size"],
                                  seed=args.seed)
        spec = {k: config[k] for k in ("device", "size", "seed", "warmup", "iters", "repeats", "threads",
                                       "workers", "data_images")}
        # Data rows never interleave: an idle DataLoader would prefetch while other settings run and
        # hide its real data time.
        jobs = [harness.Job(s.key, harness.worker_command(__file__, {**spec, "setting": s.key,
                                                                     "data_root": tmp}),
                            together=not s.has("data")) for s in settings]
        runs = harness.run_workers(
            jobs, repeats=config["repeats"], budget_s=config["timeout_s"],
            interleave=config["schedule"] == "interleaved", log=log,
            describe=lambda i, r: fmt(summarise(settings[i], r, config["iters"], device)["img_per_s"], ".2f")
            + " img/s")

    results = []
    for s, run in zip(settings, runs):
        results.append({"setting": s.name, "key": s.key, "batch": s.batch, "precision": s.precision,
                        "channels_last": s.channels_last, "compile": s.compile, "data": s.has("data"),
                        "is_reference": s.is_reference, **summarise(s, run, config["iters"], device)})
    ref = next((r for r in results if r["is_reference"] and r["status"] == "ok"), None)
    for r in results:
        r["ratio"] = harness.ratio(r.get("img_per_s"), ref and ref["img_per_s"])
        if r.get("peak_mem_bytes") is not None:
            r["peak_mem_mib"] = r["peak_mem_bytes"] / 2**20
    hw["loadavg_end"] = harness.loadavg()
    report = {"hardware": hw, "config": config, "memory_method": memory_method(device), "results": results}
    print(format_report(report, markdown=args.markdown), flush=True)
    harness.write_results(args.out, benchmark="train_speed", hardware=hw, config=config, results=results,
                          memory_method=report["memory_method"], total_wall_s=log.elapsed)
    log(f"wrote {args.out}")
    return 0 if ref else 1


if __name__ == "__main__":
    sys.exit(main())
