#!/usr/bin/env python
"""Translation speed: seconds per image for 512x512 and 1024x1024 photos, reference vs faster paths.

The model is the paper's generator (ResNet-9, ngf 64, instance norm; random weights, which time the
same as trained ones), or a trained one with ``--checkpoint RUN`` (the int8 row's check needs one). Every row
runs the full ``cyclegan.translate.Translator`` path on a uint8
image (to [-1, 1], padding, forward, crop, back to uint8) with tiling off and batch 1, so the rows
differ only in how the forward pass runs:

    eager-fp32      PyTorch eager, fp32: the reference every ratio is computed against
    channels_last   eager fp32 with NHWC weights and activations
    bf16            eager under bf16 autocast (CPU: only where the CPU has native bf16, else skipped)
    bf16+cl         bf16 autocast and channels_last
    fp16            fp16 autocast (GPU only)
    compile         torch.compile of the generator, fp32
    onnxruntime     the model exported to ONNX (dynamic shapes) run by ONNX Runtime, fp32
    int8            that ONNX model quantized by ``cyclegan.quantize`` (CPU): calibrated on the run's
                    training images with ``--checkpoint``, else on synthetic photo-like scenes; the
                    row's note holds its image-level check against fp32 on those images
    tensorrt        the ONNX model under ONNX Runtime's TensorRT provider (GPU, when installed)
    auto            precision="auto", threads capped (what ``cyclegan translate`` does by default):
                    the row's note says which path it chose; its setup (probe, ONNX export into
                    an empty cache) is timed separately as ``setup_s``

Each variant runs in its own subprocess (harness.run_workers: fresh caches, a hang or crash becomes
a "skipped" row with the reason); on CPU the timed repeats go round-robin over the variants, so load
from other processes hits all alike. ``maxdiff`` is the largest difference from the reference output
in 8-bit levels. Results go to a table on stdout and to JSON (``--out``).

    python bench/translate_speed.py                      # CPU, 512 and 1024, ~3-5 minutes on 2 cores
    python bench/translate_speed.py --variants eager-fp32,bf16+cl   # rows not in the default set
    python bench/translate_speed.py --device cuda --repeats 10
    python bench/translate_speed.py --sizes 256 --variants eager-fp32,onnxruntime
    python bench/translate_speed.py --variants eager-fp32,onnxruntime,int8,auto --checkpoint runs/h2z
    python bench/translate_speed.py --generator animeganv2 --sizes 1024 --variants eager-fp32,int8,auto
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import harness
import numpy as np
import torch
from harness import Stopwatch, fmt, fmt_ratio, skip
from PIL import Image

from cyclegan.config import GeneratorConfig
from cyclegan.export import export_module
from cyclegan.modelfile import ModelInfo, OnnxGenerator, load_any_generator
from cyclegan.networks import GENERATORS, build_generator
from cyclegan.quantize import DEFAULT_LIMITS, calibration_for, load_calibration, quantize_onnx
from cyclegan.synthetic import make_scene
from cyclegan.translate import Translator

REFERENCE = "eager-fp32"
VARIANTS = ("eager-fp32", "channels_last", "bf16", "bf16+cl", "fp16", "compile", "onnxruntime", "int8",
            "tensorrt", "auto")
DEFAULT_VARIANTS = {
    "cpu": ("eager-fp32", "channels_last", "bf16", "compile", "onnxruntime", "int8", "auto"),
    "cuda": ("eager-fp32", "channels_last", "bf16+cl", "fp16", "compile", "onnxruntime", "tensorrt", "auto"),
}
ONNX_FILES = {"onnxruntime": "resnet9.onnx", "int8": "resnet9_int8.onnx", "tensorrt": "resnet9.onnx"}
OPTIONS = {  # Translator keywords of the eager variants
    "eager-fp32": {},
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "bf16+cl": {"precision": "bf16", "channels_last": True},
    "fp16": {"precision": "fp16"},
    "compile": {"compile": True},
}
DEFAULT_REPEATS = {"cpu": 2, "cuda": 10}
DEFAULT_TIMEOUT = {"cpu": 420, "cuda": 420}


def repeats_at(size: int, repeats: int, device: str) -> int:
    # A 1024x1024 ResNet-9 pass takes several seconds on a laptop CPU; fewer runs keep the default
    # benchmark within minutes, and at that length one run is already a stable measurement.
    return max(1, repeats // 2) if device == "cpu" and size >= 1024 else repeats


def reference_generator(checkpoint: str | None = None, generator: str = "resnet") -> torch.nn.Module:
    if checkpoint:
        return load_any_generator(checkpoint, direction="a2b", device="cpu").model.eval()
    torch.manual_seed(0)
    # the registry's defaults: for resnet the paper's ResNet-9, ngf 64, instance norm
    return build_generator(GeneratorConfig(name=generator)).eval()


class TensorRTSession:
    """The ONNX model under ONNX Runtime's TensorRT provider, behind the generator convention."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort  # the onnx extra

        providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), providers=providers)
        if self.session.get_providers()[0] != "TensorrtExecutionProvider":
            raise RuntimeError(f"TensorRT provider not used (got {self.session.get_providers()})")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (y,) = self.session.run(None, {"image": x.detach().to("cpu", torch.float32).contiguous().numpy()})
        return torch.from_numpy(y).to(x.device)


class VariantSession:
    """One variant in its worker: set up, first call and warm-up per size, then timed repeats.

    The reference saves its outputs in ``tmp``; the others compare against them (the reference is
    always prepared first).
    """

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.rounds = 0

    def prepare(self) -> dict:
        spec, variant, device = self.spec, self.spec["variant"], self.spec["device"]
        tmp = Path(spec["tmp"])
        net = reference_generator(spec.get("checkpoint"), spec.get("generator", "resnet"))
        common = {"device": device, "tile": "off", "batch_size": 1}
        with Stopwatch(device) as setup:
            if variant == "auto":
                os.environ["CYCLEGAN_CACHE_DIR"] = str(tmp / "cache")  # empty: any ONNX export is timed
                self.translator = Translator(model=net, precision="auto", threads=0, **common)
            elif variant in ("onnxruntime", "int8"):
                model = OnnxGenerator(path=tmp / ONNX_FILES[variant], device=device)
                self.translator = Translator(model=model, size_multiple=net.size_multiple, **common)
            elif variant == "tensorrt":
                try:
                    model = TensorRTSession(tmp / ONNX_FILES[variant])
                except Exception as e:  # noqa: BLE001 - no provider, or it refused the model
                    return skip(f"unsupported: {type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}")
                self.translator = Translator(model=model, size_multiple=net.size_multiple, **common)
            else:
                self.translator = Translator(model=net, **common, **OPTIONS[variant])
        out = {"status": "ready", "setup_s": setup.wall_s, "first_call_s": {}, "maxdiff": {}}
        if variant == "auto":
            out["chose"] = self.translator.runtime.line()
        self.inputs = {}
        for size in spec["sizes"]:
            g = torch.Generator().manual_seed(size)
            self.inputs[size] = x = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=g)
            with Stopwatch(device) as first:  # includes compile / kernel selection
                y = self.translator.translate_tensor(x)  # [1, 3, S, S] uint8
            out["first_call_s"][size] = first.wall_s
            for _ in range(spec["warmup"] - 1):
                self.translator.translate_tensor(x)
            ref_file = tmp / f"reference_{size}.pt"
            if variant == REFERENCE:
                torch.save(y, ref_file)
            out["maxdiff"][size] = (int((y.int() - torch.load(ref_file).int()).abs().max())
                                    if ref_file.is_file() else None)
        return out

    def repeat(self) -> dict:
        """One timed call per size (sizes >= 1024 on CPU only in the first rounds, see repeats_at)."""
        self.rounds += 1
        spec, out = self.spec, {}
        for size, x in self.inputs.items():
            if self.rounds <= repeats_at(size, spec["repeats"], spec["device"]):
                with Stopwatch(spec["device"]) as sw:
                    self.translator.translate_tensor(x)
                out[size] = sw.record()
        return {"sizes": out}

    def finish(self) -> dict:
        return {"torch_threads": torch.get_num_threads()}


def export_onnx(path: Path, log, checkpoint: str | None = None, generator: str = "resnet") -> str | None:
    """Export the reference generator once for the ONNX Runtime rows; returns an error or None."""
    if path.is_file():
        return None
    net = reference_generator(checkpoint, generator)
    info = ModelInfo(direction="a2b", size_multiple=net.size_multiple, config=None)
    try:
        with Stopwatch() as sw:
            result = export_module(net, fmt="onnx", out=path, info=info, overwrite=True)
    except Exception as e:  # noqa: BLE001 - reported as a skipped row
        return f"failed: ONNX export: {type(e).__name__}: {e}"
    log(f"{result.line()} ({sw.wall_s:.0f} s)")
    return None


def quantize_int8(tmp: Path, log, checkpoint: str | None,
                  generator: str = "resnet") -> tuple[str | None, dict | None]:
    """The int8 row's model: the exported ONNX quantized and checked (cyclegan.quantize); (error, check)."""
    if (error := export_onnx(tmp / ONNX_FILES["onnxruntime"], log, checkpoint, generator)) is not None:
        return error, None
    try:
        with Stopwatch() as sw:
            if checkpoint:
                loaded = load_any_generator(checkpoint, direction="a2b", device="cpu")
                cfg = loaded.info.config
                source = calibration_for(cfg, "a2b", None)
                size = cfg.data.crop_size if cfg is not None else 256
            else:  # random weights: photo-like synthetic scenes stand in for training images
                source, size = tmp / "calibration", 256
                source.mkdir(exist_ok=True)
                rng = np.random.default_rng(0)
                for i in range(16):
                    Image.fromarray(make_scene(rng, size, "photo")).save(source / f"{i:02d}.png")
            cal = load_calibration(source, size=size, size_multiple=4)
            report = quantize_onnx(tmp / ONNX_FILES["onnxruntime"], tmp / ONNX_FILES["int8"], cal)
    except Exception as e:  # noqa: BLE001 - reported as a skipped row
        return (f"failed: int8 quantization: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}"), None
    check = {**dataclasses.asdict(report.check), "passes_default_limits": report.check.passed(DEFAULT_LIMITS),
             "calibration": str(cal.source), "quantize_s": sw.wall_s}
    log(f"int8: {report.check.line()} ({sw.wall_s:.0f} s)")
    return None, check


def skip_reason(variant: str, device: str) -> str | None:
    if device == "cpu" and variant.startswith("bf16") and not harness.cpu_bf16_support()["native"]:
        return "CPU has no native bf16 (avx512_bf16/amx); emulated bf16 is slower than fp32"
    if device == "cpu" and variant == "fp16":
        return "fp16 is a GPU path"
    if device == "cpu" and variant == "tensorrt":
        return "TensorRT is a GPU path"
    if device != "cpu" and variant == "int8":
        return "int8 is ONNX Runtime's CPU path"
    return None


def rows_for(variant: str, run: dict, sizes: list[int], device: str) -> list[dict]:
    """One result row per size from a variant's worker messages (JSON turns the size keys into strings)."""
    if run["status"] != "ok":
        return [{"size": s, "variant": variant, "status": "skipped", "reason": run["reason"]} for s in sizes]
    ready, threads = run["ready"], run["final"].get("torch_threads") or 1
    rows = []
    for size in sizes:
        reps = [r["sizes"][str(size)] for r in run["repeats"] if str(size) in r["sizes"]]
        st = harness.timing_stats(reps, threads=threads, drop_busy=device == "cpu")
        rows.append({"size": size, "variant": variant, "status": "ok", "reason": None,
                     "s_per_img": st["median"], "s_repeats": st["times"], "repeats_used": st["used"],
                     "spread": st["spread"], "cpu_util_used": st["cpu_util_used"],
                     "maxdiff_levels": ready["maxdiff"][str(size)],
                     "first_call_s": ready["first_call_s"][str(size)], "setup_s": ready["setup_s"],
                     "chose": ready.get("chose"), "torch_threads": threads})
    return rows


def _stats(r: dict) -> dict:
    return {"times": r["s_repeats"], "used": r["repeats_used"], "spread": r["spread"],
            "cpu_util_used": r["cpu_util_used"]}


def format_report(hw: dict, config: dict, results: list[dict], *, markdown: bool = False) -> str:
    cpu = config["device"] == "cpu"
    rows = []
    for r in results:
        label = f"{r['size']}x{r['size']}"
        variant = r["variant"] + (" (reference)" if r["variant"] == REFERENCE else "")
        if r["status"] != "ok":
            rows.append([label, variant, "skipped", "", "", r["reason"]])
            continue
        notes = [f"first call {r['first_call_s']:.1f} s"] if r["variant"] == "compile" else []
        if r["variant"] == "auto":
            notes.append(f"chose {r['chose'].split(' (')[0]}; setup {r['setup_s']:.1f} s")
        if r["variant"] == "int8" and config.get("int8_check"):
            c = config["int8_check"]
            notes.append(f"check {c['psnr_min']:.1f} dB, mean {c['mean_levels']:.2f}, max {c['max_levels']} "
                         f"({'within' if c['passes_default_limits'] else 'over'} the limits)")
        notes += harness.timing_notes(_stats(r), busy_check=cpu)
        rows.append([label, variant, fmt(r["s_per_img"], ".3f"), fmt_ratio(r["ratio"]),
                     fmt(r["maxdiff_levels"], "d"), "; ".join(notes)])
    reps = config["repeats"]
    lines = [
        f"Translation, {config['model']}, tile off, batch 1, device {config['device']}",
        harness.hardware_line(hw),
        (f"median of {reps} run(s) ({repeats_at(1024, reps, config['device'])} at 1024+) after "
         f"{config['warmup']} warm-up, {config['schedule']}; x ref = {REFERENCE} s/img / row s/img "
         f"(higher is faster); maxdiff in 8-bit levels vs {REFERENCE}"),
        harness.format_table(["size", "variant", "s/img", "x ref", "maxdiff", "notes"], rows, right={2, 3, 4},
                             markdown=markdown),
    ]
    footer = (harness.busy_footer([_stats(r) for r in results if r["status"] == "ok"], hw) if cpu
              else harness.gpu_fp32_line(hw))
    return "\n".join(lines + ([footer] if footer else []))


def main(argv=None) -> int:
    p = harness.make_parser("translate_speed", __doc__)
    p.add_argument("--sizes", default="512,1024", help="square image sides, comma separated")
    p.add_argument("--variants", help=f"comma separated, from {', '.join(VARIANTS)} (default: per device)")
    p.add_argument("--repeats", type=int, help="timed runs per size; the median is reported (default 2 CPU, "
                   "10 GPU; CPU: half as many at 1024+)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per size, the first call included")
    p.add_argument("--timeout", type=float, help="seconds per variant before it is skipped (default 420)")
    p.add_argument("--checkpoint",
                   help="time this run's a2b generator instead of random weights (the int8 row "
                   "then calibrates on its training images)")
    p.add_argument("--generator", default="resnet",
                   help="without --checkpoint: time this registered generator with random weights and its "
                        "default options (e.g. animeganv2); default resnet (the paper's ResNet-9)")
    p.add_argument("--schedule", choices=("interleaved", "sequential"),
                   help="interleaved: timed repeats round-robin over the variants (default on CPU); "
                        "sequential: one variant after another, one process alive at a time (default on GPU)")
    args = p.parse_args(argv)
    if args._worker:
        return harness.serve(VariantSession(json.loads(args._worker)))
    harness.check_minimums(p, args, {"repeats": 1, "warmup": 1})
    device = harness.resolve_device(args.device)
    try:
        sizes = [int(s) for s in harness.split_list(args.sizes)]
    except ValueError:
        p.error(f"--sizes {args.sizes!r}: comma-separated integers")
    variants = harness.split_list(args.variants) if args.variants else list(DEFAULT_VARIANTS[device])
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    variants = [REFERENCE] + [v for v in dict.fromkeys(variants) if v != REFERENCE]  # every ratio needs it
    if args.checkpoint and args.generator != "resnet":
        p.error("--generator times random weights; it cannot be combined with --checkpoint")
    if args.generator not in GENERATORS:
        p.error(f"unknown --generator {args.generator!r}; choose from {', '.join(sorted(GENERATORS))}")
    model = (f"{args.checkpoint} (a2b)" if args.checkpoint else
             "ResNet-9 generator ngf 64, instance norm (random init)" if args.generator == "resnet" else
             f"{args.generator} generator, default options (random init)")
    config = {"model": model, "checkpoint": args.checkpoint, "generator": args.generator, "device": device,
              "sizes": sizes, "variants": variants, "repeats": args.repeats or DEFAULT_REPEATS[device],
              "warmup": args.warmup,
              "schedule": args.schedule or ("interleaved" if device == "cpu" else "sequential"),
              "timeout_s": args.timeout or DEFAULT_TIMEOUT[device]}
    hw = harness.hardware_info(device, packages=("onnxruntime",))
    log = harness.Progress()
    log(harness.hardware_line(hw))
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            reason = skip_reason(v, device)
            if reason is None and v in ("onnxruntime", "tensorrt"):
                reason = export_onnx(Path(tmp) / ONNX_FILES[v], log, args.checkpoint, args.generator)
            elif reason is None and v == "int8":
                reason, config["int8_check"] = quantize_int8(Path(tmp), log, args.checkpoint, args.generator)
            if reason:
                runs[v] = skip(reason)
        todo = [v for v in variants if v not in runs]
        spec = {"device": device, "sizes": sizes, "repeats": config["repeats"], "warmup": args.warmup,
                "tmp": tmp, "checkpoint": args.checkpoint, "generator": args.generator}
        jobs = [harness.Job(v, harness.worker_command(__file__, {**spec, "variant": v})) for v in todo]
        done = harness.run_workers(jobs, repeats=config["repeats"], budget_s=config["timeout_s"],
                                   interleave=config["schedule"] == "interleaved", log=log,
                                   env={"PYTHONWARNINGS": "ignore"})
        runs.update(zip(todo, done))

    results = [row for v in variants for row in rows_for(v, runs[v], sizes, device)]
    for r in results:
        ref = next(x for x in results if x["size"] == r["size"] and x["variant"] == REFERENCE)
        r["ratio"] = harness.ratio(r.get("s_per_img"), ref.get("s_per_img"), higher_is_better=False)
    hw["loadavg_end"] = harness.loadavg()
    print(format_report(hw, config, results, markdown=args.markdown), flush=True)
    harness.write_results(args.out, benchmark="translate_speed", hardware=hw, config=config, results=results,
                          total_wall_s=log.elapsed)
    log(f"wrote {args.out}")
    return 0 if runs[REFERENCE]["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
