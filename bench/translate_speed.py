#!/usr/bin/env python
"""Translation speed: seconds per image for 512x512 and 1024x1024 photos, reference vs faster paths.

The model is the paper's generator (ResNet-9, ngf 64, instance norm; random weights, which time the
same as trained ones). Every row runs the full ``cyclegan.translate.Translator`` path on a uint8
image (to [-1, 1], padding, forward, crop, back to uint8) with tiling off and batch 1, so the rows
differ only in how the forward pass runs:

    eager-fp32      PyTorch eager, fp32: the reference every ratio is computed against
    channels_last   eager fp32 with NHWC weights and activations
    bf16            eager under bf16 autocast (CPU: only where the CPU has native bf16, else skipped)
    bf16+cl         bf16 autocast and channels_last
    fp16            fp16 autocast (GPU only)
    compile         torch.compile of the generator, fp32
    onnxruntime     the model exported to ONNX (dynamic shapes) run by ONNX Runtime, fp32
    auto            precision="auto", threads capped (what ``cyclegan translate`` does by default):
                    the row's note says which path it chose; its setup (probe, ONNX export into
                    an empty cache) is timed separately as ``setup_s``

Each row runs in its own subprocess (fresh caches, no memory carried over, a hang or crash becomes a
"skipped" row with the reason). ``maxdiff`` is the largest difference from the reference output in
8-bit levels. Results go to a table on stdout and to JSON (``--out``).

    python bench/translate_speed.py                      # CPU, 512 and 1024, ~3-5 minutes on 2 cores
    python bench/translate_speed.py --variants eager-fp32,bf16+cl   # rows not in the default set
    python bench/translate_speed.py --device cuda --repeats 10
    python bench/translate_speed.py --sizes 256 --variants eager-fp32,onnxruntime
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results" / "translate_speed.json"
VARIANTS = ("eager-fp32", "channels_last", "bf16", "bf16+cl", "fp16", "compile", "onnxruntime", "auto")
DEFAULT_VARIANTS = {
    "cpu": ("eager-fp32", "channels_last", "bf16", "compile", "onnxruntime", "auto"),
    "cuda": ("eager-fp32", "channels_last", "bf16+cl", "fp16", "compile", "onnxruntime", "auto"),
}
WORKER_TIMEOUT_S = 420


# ---------------------------------------------------------------------------------------- hardware


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX on x86, BF16 on ARM); elsewhere bf16 is emulated."""
    flags = _cpu_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def hardware(device: str) -> dict:
    import torch

    info = {
        "device": device,
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_native_bf16": cpu_has_bf16(),
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


# ------------------------------------------------------------------------------------------ worker


def _repeats_for(size: int, repeats: int, device: str) -> int:
    # A 1024x1024 ResNet-9 pass takes several seconds on a laptop CPU; fewer runs keep the default
    # benchmark within minutes, and at that length one run is already a stable measurement.
    return max(1, repeats // 2) if device == "cpu" and size >= 1024 else repeats


def _worker(variant: str, device: str, sizes: list[int], repeats: int, warmup: int, tmp: str) -> dict:
    """Time one variant in this process; returns {"seconds": {size: [..]}, "maxdiff": {size: int}}.

    The reference row saves its outputs in ``tmp``; the others compare against them.
    """
    import torch

    from cyclegan.config import GeneratorConfig
    from cyclegan.networks import build_generator
    from cyclegan.translate import Translator

    torch.manual_seed(0)
    net = build_generator(GeneratorConfig()).eval()  # ResNet-9, ngf 64, instance norm
    common = {"device": device, "tile": "off", "batch_size": 1}
    t_setup = time.perf_counter()
    if variant == "auto":
        os.environ["CYCLEGAN_CACHE_DIR"] = str(Path(tmp) / "cache")  # empty: any ONNX export is timed
        translator = Translator(model=net, precision="auto", threads=0, **common)
    elif variant == "onnxruntime":
        from cyclegan.export import OnnxGenerator

        model = OnnxGenerator(path=Path(tmp) / "resnet9.onnx", device=device)
        translator = Translator(model=model, size_multiple=net.size_multiple, **common)
    else:
        options = {
            "eager-fp32": {},
            "channels_last": {"channels_last": True},
            "bf16": {"precision": "bf16"},
            "bf16+cl": {"precision": "bf16", "channels_last": True},
            "fp16": {"precision": "fp16"},
            "compile": {"compile": True},
        }[variant]
        translator = Translator(model=net, **common, **options)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    out: dict = {"seconds": {}, "maxdiff": {}, "first_call_s": {}, "setup_s": time.perf_counter() - t_setup}
    if variant == "auto":
        out["chose"] = translator.runtime.line()
        print(f"auto chose: {out['chose']}", file=sys.stderr)
    for size in sizes:
        g = torch.Generator().manual_seed(size)
        x = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=g)  # [1, 3, S, S]
        t0 = time.perf_counter()
        y = translator.translate_tensor(x)
        sync()
        out["first_call_s"][size] = time.perf_counter() - t0  # includes compile / kernel selection
        for _ in range(max(0, warmup - 1)):
            translator.translate_tensor(x)
        sync()
        times = []
        for _ in range(_repeats_for(size, repeats, device)):
            t0 = time.perf_counter()
            y = translator.translate_tensor(x)
            sync()
            times.append(time.perf_counter() - t0)
        out["seconds"][size] = times
        ref_file = Path(tmp) / f"reference_{size}.pt"
        if variant == "eager-fp32":
            torch.save(y, ref_file)
            out["maxdiff"][size] = 0
        else:
            ref = torch.load(ref_file)
            out["maxdiff"][size] = int((y.int() - ref.int()).abs().max())
    return out


def _run_worker(args, variant: str, tmp: str) -> dict:
    cmd = [
        sys.executable, __file__, "--_worker", variant, "--device", args.device,
        "--sizes", ",".join(map(str, args.sizes)), "--repeats", str(args.repeats),
        "--warmup", str(args.warmup), "--_tmp", tmp,
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {WORKER_TIMEOUT_S} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"skipped": f"failed (exit {proc.returncode}): {tail[:200]}"}


def _export_onnx(path: Path) -> str | None:
    """Export the reference generator once for the onnxruntime row; returns an error or None."""
    import torch

    from cyclegan.config import GeneratorConfig
    from cyclegan.export import ModelInfo, export_module
    from cyclegan.networks import build_generator

    torch.manual_seed(0)
    net = build_generator(GeneratorConfig()).eval()
    info = ModelInfo(direction="a2b", size_multiple=net.size_multiple, config=None)
    try:
        result = export_module(net, fmt="onnx", out=path, info=info, overwrite=True)
    except Exception as e:  # noqa: BLE001 - reported as a skipped row
        return f"{type(e).__name__}: {e}"
    print(f"  {result.line()}", flush=True)
    return None


# -------------------------------------------------------------------------------------------- main


def _skip_reason(variant: str, device: str) -> str | None:
    if device == "cpu" and variant.startswith("bf16") and not cpu_has_bf16():
        return "CPU has no native bf16 (avx512_bf16/amx); emulated bf16 is slower than fp32"
    if device == "cpu" and variant == "fp16":
        return "fp16 is a GPU path"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sizes", default="512,1024", help="Square image sides, comma separated.")
    parser.add_argument("--variants", default=None, help=f"Comma separated, from {', '.join(VARIANTS)}.")
    parser.add_argument("--repeats", type=int, default=None, help="Timed runs per size (median reported).")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed runs per size (>= 1).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file.")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_tmp", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.repeats is None:
        args.repeats = 2 if args.device == "cpu" else 10

    if args._worker:
        print("RESULT " + json.dumps(_worker(args._worker, args.device, args.sizes, args.repeats,
                                            args.warmup, args._tmp)))
        return

    variants = args.variants.split(",") if args.variants else list(DEFAULT_VARIANTS[args.device])
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if "eager-fp32" not in variants:
        variants.insert(0, "eager-fp32")  # every ratio needs the reference

    hw = hardware(args.device)
    print(f"# {hw['cpu']} ({hw['cpu_cores']} cores, {hw['torch_threads']} torch threads)"
          + (f", {hw['gpu']}" if "gpu" in hw else "") + f"; torch {hw['torch']}, onnxruntime {hw['onnxruntime']}",
          flush=True)
    results: dict[str, dict] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            reason = _skip_reason(variant, args.device)
            if reason is None and variant == "onnxruntime":
                t0 = time.perf_counter()
                reason = _export_onnx(Path(tmp) / "resnet9.onnx")
                print(f"  onnx export: {time.perf_counter() - t0:.0f} s", flush=True)
            if reason is not None:
                results[variant] = {"skipped": reason}
            else:
                t0 = time.perf_counter()
                results[variant] = _run_worker(args, variant, tmp)
                results[variant]["wall_s"] = time.perf_counter() - t0
            print(f"  {variant}: {results[variant].get('skipped') or 'done'} "
                  f"({results[variant].get('wall_s', 0):.0f} s)", flush=True)

    rows = []
    ref = results["eager-fp32"]
    for size in args.sizes:
        ref_s = statistics.median(ref["seconds"][str(size)]) if "seconds" in ref else None
        for variant in variants:
            r = results[variant]
            if "seconds" not in r:
                rows.append({"size": size, "variant": variant, "skipped": r["skipped"]})
                continue
            s = statistics.median(r["seconds"][str(size)])
            rows.append({
                "size": size, "variant": variant, "s_per_img": s,
                "speedup_vs_ref": (ref_s / s) if ref_s else None,
                "maxdiff_levels": r["maxdiff"][str(size)], "first_call_s": r["first_call_s"][str(size)],
                "runs": r["seconds"][str(size)], "setup_s": r.get("setup_s"), "chose": r.get("chose"),
            })

    print(f"\n{'size':>9}  {'variant':<14} {'s/img':>8} {'vs ref':>7} {'maxdiff':>8}  note")
    for row in rows:
        label = f"{row['size']}x{row['size']}"
        if "skipped" in row:
            print(f"{label:>9}  {row['variant']:<14} {'-':>8} {'-':>7} {'-':>8}  skipped: {row['skipped']}")
        else:
            note = f"first call {row['first_call_s']:.1f} s" if row["variant"] == "compile" else ""
            if row["variant"] == "auto":
                chose = row["chose"].split(" (")[0]
                note = f"chose {chose}; setup {row['setup_s']:.1f} s"
            print(f"{label:>9}  {row['variant']:<14} {row['s_per_img']:>8.3f} {row['speedup_vs_ref']:>6.2f}x "
                  f"{row['maxdiff_levels']:>8}  {note}")
    print(f"\nvs ref = eager-fp32 time / row time (higher is faster); maxdiff in 8-bit levels vs eager-fp32; "
          f"median of {args.repeats} runs ({_repeats_for(1024, args.repeats, args.device)} at 1024+) after "
          f"{args.warmup} warm-up; total {time.perf_counter() - start:.0f} s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "translate_speed", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "hardware": hw,
           "model": "ResNet-9 generator, ngf 64, instance norm (random init)", "batch": 1, "tile": "off",
           "repeats": args.repeats, "warmup": args.warmup, "rows": rows}
    args.out.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
