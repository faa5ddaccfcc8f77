#!/usr/bin/env python
"""Training-step speed of CycleGAN: img/s, peak memory and ms/step, reference vs fast paths.

The reference is what the official CycleGAN implementation computes: the paper's networks (preset
``cyclegan``: ResNet-9 generators at ngf 64, 70x70 PatchGAN, LSGAN + cycle + identity, image pool
50), fp32, eager, batch 1. Every other setting changes only speed levers (precision, memory format,
torch.compile, batch size) and is reported as a ratio to it. Each setting runs in its own subprocess,
so one that crashes, hangs or is unsupported is reported as skipped with the reason, compile caches
do not leak between settings, and CPU peak-RSS readings are per setting.

The step rows time ``cyclegan.training.TrainStep`` (generator step, image pools, discriminator step)
on synthetic uint8 batches in pinned host memory, exactly what the training loop receives from its
DataLoader. Rows with ``+data`` put a real DataLoader in front (PNG files made by
``cyclegan.synthetic.make_unpaired_dataset``; resize 286/256 -> random crop -> flip, as in training)
and also report the share of wall time spent waiting for the next batch.

    python bench/train_speed.py                       # CPU at 128x128, or a GPU at 256x256
    python bench/train_speed.py --device cpu --size 64 --iters 2 --settings fp32,bf16+cl
    python bench/train_speed.py --list-settings

Setting grammar: ``+``-joined tokens, optionally ``@BATCH``: a precision (fp32 | bf16 | fp16,
default fp32), ``cl`` (channels_last), ``compile`` (torch.compile of the four networks), ``data``
(DataLoader in front). ``ref`` is ``fp32@1``. Examples: ``bf16+cl@8``, ``compile+bf16+cl@8``,
``fp32+data@1``. Results go to a table on stdout and to JSON (``--out``).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as _dt
import json
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results" / "train_speed.json"
PRESET = "cyclegan"

# The paper's load/crop ratio (286 -> 256), applied at any --size for the +data rows.
LOAD_RATIO = 286 / 256

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


# ----------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Setting:
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    batch: int = 1
    data: bool = False

    @property
    def name(self) -> str:
        """Canonical spelling, without the batch size: ``compile+bf16+cl+data``."""
        parts = (["compile"] if self.compile else []) + [self.precision]
        parts += (["cl"] if self.channels_last else []) + (["data"] if self.data else [])
        return "+".join(parts)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.batch}"

    @property
    def is_reference(self) -> bool:
        return self == REFERENCE


REFERENCE = Setting()


def parse_setting(text: str) -> Setting:
    text = text.strip().lower()
    if text in ("ref", "reference"):
        return REFERENCE
    body, _, batch = text.partition("@")
    if batch and (not batch.isdigit() or int(batch) < 1):
        raise ValueError(f"setting {text!r}: batch after '@' must be a positive integer")
    kw: dict = {"batch": int(batch) if batch else 1}
    for tok in filter(None, body.split("+")):
        if tok in ("fp32", "bf16", "fp16"):
            if "precision" in kw:
                raise ValueError(f"setting {text!r}: two precisions")
            kw["precision"] = tok
        elif tok in ("cl", "channels_last"):
            kw["channels_last"] = True
        elif tok == "compile":
            kw["compile"] = True
        elif tok in ("data", "e2e"):
            kw["data"] = True
        elif tok in ("eager", "ref"):
            pass
        else:
            raise ValueError(
                f"setting {text!r}: unknown token {tok!r} (use fp32|bf16|fp16, cl, compile, data, @BATCH)"
            )
    return Setting(**kw)


def parse_settings(text: str) -> list[Setting]:
    out: list[Setting] = [REFERENCE]  # always measured: every ratio is against it
    for item in filter(None, (t.strip() for t in text.split(","))):
        s = parse_setting(item)
        if s not in out:
            out.append(s)
    return out


# ----------------------------------------------------------------------------------------------
# Hardware


def _cpuinfo() -> dict[str, str]:
    """First processor block of /proc/cpuinfo (Linux); empty elsewhere."""
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        if not line.strip():
            if info:
                break
            continue
        k, _, v = line.partition(":")
        info.setdefault(k.strip(), v.strip())
    return info


def cpu_model() -> str:
    info = _cpuinfo()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if info.get(key):
            return info[key]
    return platform.processor() or platform.machine() or "unknown"


def cpu_bf16_support() -> dict:
    """Whether bf16 matmul/conv run natively on this CPU, or are emulated in fp32 by oneDNN.

    Native: x86 ``avx512_bf16`` or ``amx_bf16``, or Arm ``bf16`` (ARMv8.6). torch's own probes are
    recorded too; note ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is also true on plain
    AVX-512 CPUs, where oneDNN emulates bf16, so it is not evidence of native support.
    """
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    native_flags = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    torch_probes: dict[str, bool | None] = {}
    try:
        import torch

        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            fn = getattr(torch.cpu, name, None)
            torch_probes[name] = bool(fn()) if fn else None
        torch_probes["mkldnn_bf16"] = _mkldnn_probe("_is_mkldnn_bf16_supported")
        torch_probes_cap = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - hardware probing must never stop the benchmark
        torch_probes_cap = None
    native = bool(native_flags) or bool(torch_probes.get("_is_avx512_bf16_supported")) or bool(
        torch_probes.get("_is_amx_tile_supported")
    )
    if native:
        why = ", ".join(native_flags) or ", ".join(k for k, v in torch_probes.items() if v and k != "mkldnn_bf16")
        note = f"native ({why})"
    elif flags:
        note = "emulated (no avx512_bf16 / amx_bf16 / bf16 CPU flag)"
    else:
        note = "unknown (no CPU flags readable); " + ("torch reports no native bf16" if torch_probes else "")
    return {"native": native, "note": note, "cpu_flags": native_flags, "torch_probes": torch_probes,
            "cpu_capability": torch_probes_cap}


def hardware_info(device: str) -> dict:
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    hw = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _total_memory_gib(),
        "loadavg_start": _loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cpu_bf16": cpu_bf16_support(),
        "gpu": None,
    }
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        hw["gpu"] = {
            "name": p.name,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "capability": f"{p.major}.{p.minor}",
            "count": torch.cuda.device_count(),
            "cudnn": torch.backends.cudnn.version(),
            "bf16_supported": torch.cuda.is_bf16_supported(),
            # PyTorch defaults, left as they are (as in training): fp32 convs may run in TF32.
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        }
    return hw


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _total_memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def hardware_line(hw: dict) -> str:
    parts = [(f"CPU {hw['cpu_model']} ({hw['cpu_usable']} usable of {hw['cpu_count']} cores, "
              f"torch threads {hw['torch_threads']}, bf16 {hw['cpu_bf16']['note']})")]
    if hw["gpu"]:
        g = hw["gpu"]
        parts.insert(0, f"GPU {g['name']} ({g['memory_gib']} GiB, sm {g['capability']})")
    parts.append(f"torch {hw['torch']}" + (f" (CUDA {hw['torch_cuda']})" if hw["gpu"] else ""))
    parts.append(f"python {hw['python']}")
    parts.append(hw["date"])
    if hw.get("loadavg_start") is not None:
        parts.append(f"load avg at start {hw['loadavg_start'][0]}")
    return " | ".join(parts)


# ----------------------------------------------------------------------------------------------
# Memory


def _current_rss() -> tuple[int | None, str]:
    """Resident set size in bytes now, and how it was read."""
    try:
        import psutil

        return psutil.Process().memory_info().rss, "psutil"
    except ImportError:
        pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE"), "/proc/self/statm"
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    peak, _ = _peak_rss()
    return peak, "ru_maxrss"


def _peak_rss() -> tuple[int | None, str]:
    """This process's peak RSS in bytes (ru_maxrss: KiB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:  # Windows
        return None, "unavailable"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss"


def memory_method(device: str) -> str:
    if device == "cuda":
        return ("GPU: torch.cuda.max_memory_allocated (tensors: weights, Adam state, activations, "
                "pool; excludes the caching allocator's slack, see peak_reserved_bytes in JSON)")
    _, how = _current_rss()
    return (f"CPU: peak RSS growth of the setting's own process = ru_maxrss after the run - RSS before "
            f"building the models (read via {how}); includes weights, Adam state, activations, allocator "
            "caches; DataLoader worker processes are not counted")


# ----------------------------------------------------------------------------------------------
# One setting (runs in a subprocess)


def _skip(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


def _mkldnn_probe(name: str) -> bool | None:
    import torch

    try:
        return bool(getattr(torch.ops.mkldnn, name)())
    except (AttributeError, RuntimeError):
        return None


def _precheck(s: Setting, device) -> str | None:
    """Why this setting cannot run here, or None."""
    import torch

    if s.precision == "fp16" and device.type == "cpu" and not _mkldnn_probe("_is_mkldnn_fp16_supported"):
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
    if s.compile:
        if device.type == "cuda":
            try:
                from torch.utils._triton import has_triton
            except ImportError:
                has_triton = None
            if has_triton is not None and not has_triton():
                return "unsupported: torch.compile on CUDA needs triton, which is not installed"
        else:
            compiler = None
            try:
                from torch._inductor.cpp_builder import get_cpp_compiler

                compiler = get_cpp_compiler()
            except Exception as e:  # noqa: BLE001
                return f"unsupported: no C++ compiler for torch.compile ({type(e).__name__}: {e})"
            if compiler is None or shutil.which(compiler) is None and not Path(str(compiler)).exists():
                return f"unsupported: C++ compiler {compiler!r} for torch.compile not found"
    return None


def _synthetic_batch(s: Setting, size: int, seed: int, pin: bool) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    batch = {d: torch.randint(0, 256, (s.batch, 3, size, size), dtype=torch.uint8, generator=g) for d in "AB"}
    return {d: x.pin_memory() for d, x in batch.items()} if pin else batch


def _data_iterator(cfg, repeat_files: int, workers: int, pin: bool):
    """Endless batches from the training pipeline's own dataset, sampler and DataLoader."""
    from cyclegan.data import UnpairedImages, UnpairedSampler, gather_training_files, make_loader

    files = gather_training_files(cfg.data, batch_size=cfg.train.batch_size)
    # The same few files listed many times: each is still decoded and augmented per sample (from the
    # page cache, as in a real run), while an epoch is long enough that no timed step straddles an
    # epoch boundary with a cold prefetch queue.
    dataset = UnpairedImages(files.a * repeat_files, files.b * repeat_files, cfg.data)
    sampler = UnpairedSampler(n_a=len(dataset.files["A"]), n_b=len(dataset.files["B"]), seed=cfg.train.seed)
    loader = make_loader(dataset, sampler, batch_size=cfg.train.batch_size, num_workers=workers, pin_memory=pin)
    epoch = 1
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


class SettingRun:
    """One setting inside its worker process: build + warm up, then timed repeats on request."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.setting = Setting(**spec["setting"])

    def prepare(self) -> dict:
        import torch

        from cyclegan.config import build_config
        from cyclegan.training import build_train_step

        s, spec = self.setting, self.spec
        self.torch = torch
        self.device = device = torch.device(spec["device"])
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        self.cuda = device.type == "cuda"
        why = _precheck(s, device)
        if why:
            return _skip(why)

        size, seed = spec["size"], spec["seed"]
        overrides = {
            "train.precision": s.precision,
            "train.channels_last": s.channels_last,
            "train.compile": s.compile,
            "train.batch_size": s.batch,
            "train.seed": seed,
            "train.device": device.type,
        }
        if s.data:
            overrides.update({
                "data.dataroot": spec["data_root"],
                "data.crop_size": size,
                "data.load_size": max(size, round(size * LOAD_RATIO)),
                "data.num_workers": spec["workers"],
            })
        cfg = build_config(preset=PRESET, overrides=overrides)

        torch.manual_seed(seed)
        self.rss0, _ = _current_rss()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        self.step = build_train_step(cfg, device)
        build_s = time.perf_counter() - t

        warmup = max(spec["warmup"], COMPILE_MIN_WARMUP if s.compile else 0, 1)
        if s.data:
            n = (warmup + spec["iters"] * spec["repeats"]) * s.batch
            self.source = _data_iterator(cfg, repeat_files=-(-n // spec["data_images"]) + 1,
                                         workers=spec["workers"], pin=self.cuda)
        else:
            fixed = _synthetic_batch(s, size, seed, pin=self.cuda)
            self.source = iter(lambda: fixed, None)

        first_step_s = None
        for i in range(warmup):
            t = time.perf_counter()
            self.out = self.step(next(self.source))
            self._sync()
            if i == 0:
                first_step_s = time.perf_counter() - t
        return {"status": "ready", "build_s": build_s, "first_step_s": first_step_s, "warmup": warmup}

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def repeat(self) -> dict:
        """``iters`` timed steps; returns the wall time and the time spent waiting for batches."""
        iters = self.spec["iters"]
        data_wait = 0.0
        self._sync()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(iters):
            td = time.perf_counter()
            batch = next(self.source)
            data_wait += time.perf_counter() - td
            self.out = self.step(batch)
        self._sync()
        return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "data_wait_s": data_wait}

    def finish(self) -> dict:
        torch = self.torch
        loss = torch.stack([self.out[k].detach().float() for k in ("G_total", "D_A", "D_B")])
        res = {"losses_finite": bool(torch.isfinite(loss).all()), "torch_threads": torch.get_num_threads()}
        if self.cuda:
            res["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
            res["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        else:
            peak, _ = _peak_rss()
            res["peak_mem_bytes"] = (peak - self.rss0) if (peak is not None and self.rss0 is not None) else None
            res["peak_rss_bytes"] = peak
        return res


MSG = "@@train_speed "  # worker -> driver messages on stdout; any other output is ignored


def _send(obj: dict) -> None:
    sys.stdout.write(MSG + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _failure(e: BaseException) -> dict:
    import traceback

    traceback.print_exc()
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return _skip(f"failed: {type(e).__name__}: {msg[:300]}")


def _worker_main(spec_json: str) -> int:
    """Protocol: send the prepare result; then for each stdin line ``repeat`` | ``finish`` send one reply."""
    run = SettingRun(json.loads(spec_json))
    try:
        ready = run.prepare()
    except Exception as e:  # noqa: BLE001 - one setting failing must not lose the others
        ready = _failure(e)
    _send(ready)
    if ready["status"] != "ready":
        return 0
    for line in sys.stdin:
        cmd = line.strip()
        try:
            if cmd == "repeat":
                _send(run.repeat())
            elif cmd == "finish":
                _send(run.finish())
                return 0
        except Exception as e:  # noqa: BLE001
            _send(_failure(e))
            return 0
    return 0


# ----------------------------------------------------------------------------------------------
# Driver side


class Worker:
    """A setting's own process. ``request`` sends a command and waits, within the setting's time
    budget, for the reply; a crash or timeout becomes a "skipped" result instead of an exception."""

    def __init__(self, spec: dict, budget_s: float):
        self.budget_s = budget_s
        self.used_s = 0.0
        self.messages: queue.Queue = queue.Queue()
        self.stderr: collections.deque = collections.deque(maxlen=40)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(spec)]
        # Own process group: on a timeout the whole tree (DataLoader and compile workers) goes too.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1, start_new_session=True)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            if MSG in line:  # other output may precede it on the same line
                self.messages.put(json.loads(line[line.index(MSG) + len(MSG):]))
        self.messages.put(None)  # EOF: the process is gone

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            if line.strip():
                self.stderr.append(line.rstrip())

    def request(self, cmd: str | None = None) -> dict:
        t = time.perf_counter()
        try:
            if cmd is not None:
                self.proc.stdin.write(cmd + "\n")
                self.proc.stdin.flush()
            msg = self.messages.get(timeout=max(self.budget_s - self.used_s, 1.0))
        except queue.Empty:
            self.kill()
            return _skip(f"failed: timed out after {self.budget_s:.0f} s (raise --timeout)")
        except (BrokenPipeError, OSError):
            msg = None
        finally:
            self.used_s += time.perf_counter() - t
        if msg is None:
            code = self.proc.wait()
            sig = f" (signal {-code})" if code < 0 else ""
            last = self.stderr[-1][-300:] if self.stderr else ""
            return {**_skip(f"failed: worker exited with code {code}{sig}: {last}"),
                    "stderr_tail": "\n".join(self.stderr)}
        if msg.get("status") == "skipped" and self.stderr:
            msg["stderr_tail"] = "\n".join(self.stderr)
        return msg

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, AttributeError):
                self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


# A CPU repeat during which the process got less than this share of its threads' CPU time (other
# processes had the cores) is set aside when clean repeats exist: two-thread steps on a busy machine
# slow down by 10-30x at OpenMP barriers, which a median of a few repeats cannot absorb.
CLEAN_UTIL = 0.8


def summarise(s: Setting, ready: dict, repeats: list[dict], final: dict, iters: int, device: str) -> dict:
    threads = final.get("torch_threads") or 1
    utils = [r["cpu_s"] / r["wall_s"] / threads if r["wall_s"] > 0 else 1.0 for r in repeats]
    used = list(range(len(repeats)))
    if device == "cpu":
        used = [k for k, u in enumerate(utils) if u >= CLEAN_UTIL] or used
    step_times = [r["wall_s"] / iters for r in repeats]
    med = statistics.median(step_times[k] for k in used)
    wall = sum(r["wall_s"] for r in repeats)
    res = {
        "status": "ok",
        "reason": None,
        "img_per_s": s.batch / med,
        "ms_per_step": med * 1e3,
        "step_s_repeats": step_times,
        "repeats_used": used,  # indices into step_s_repeats that the median is taken over
        "spread": (max(step_times[k] for k in used) - min(step_times[k] for k in used)) / med,
        "img_per_s_best": s.batch / min(step_times),
        # Process CPU seconds (all threads) per wall second per torch thread: well under 1 on a CPU
        # run means other processes took this setting's cores while it was timed.
        "cpu_util_repeats": utils,
        "cpu_util": sum(r["cpu_s"] for r in repeats) / wall / threads,
        "cpu_util_used": sum(repeats[k]["cpu_s"] for k in used) / sum(repeats[k]["wall_s"] for k in used) / threads,
        "data_share": sum(r["data_wait_s"] for r in repeats) / wall if s.data else None,
        "build_s": ready["build_s"],
        "first_step_s": ready["first_step_s"],
        "warmup": ready["warmup"],
        **final,
    }
    if not final.get("losses_finite", True):
        res["reason"] = "warning: non-finite losses"
    return res


def run_settings(settings: list[Setting], specs: list[dict], *, interleave: bool, repeats: int, iters: int,
                 budget_s: float, device: str, log=print) -> list[dict]:
    """Measure every setting; with ``interleave`` the timed repeats go round-robin over live workers
    (one runs at a time), so load from other processes that comes and goes hits every setting alike."""
    n = len(settings)
    results: list[dict | None] = [None] * n
    readies: list[dict | None] = [None] * n
    reps: list[list[dict]] = [[] for _ in range(n)]
    workers: list[Worker | None] = [None] * n  # live ones
    used = [0.0] * n  # seconds each setting's worker spent answering (its own wall time)

    def retire(i: int) -> None:
        used[i] = workers[i].used_s
        workers[i] = None

    def fail(i: int, res: dict) -> None:
        results[i] = res
        if workers[i] is not None:
            workers[i].kill()
            retire(i)

    def start(i: int) -> None:
        workers[i] = Worker(specs[i], budget_s)
        ready = workers[i].request()
        if ready["status"] != "ready":
            fail(i, ready)
        readies[i] = ready

    def one_repeat(i: int) -> None:
        if workers[i] is None:
            return
        r = workers[i].request("repeat")
        if "wall_s" not in r:
            fail(i, r)
        else:
            reps[i].append(r)

    def finish(i: int) -> None:
        if workers[i] is None:
            return
        final = workers[i].request("finish")
        if final.get("status") == "skipped":
            fail(i, final)
            return
        workers[i].close()
        retire(i)
        results[i] = summarise(settings[i], readies[i], reps[i], final, iters, device)

    def report(i: int) -> None:
        r = results[i]
        msg = f"{r['img_per_s']:.2f} img/s" if r["status"] == "ok" else f"skipped: {r['reason']}"
        log(f"[{i + 1}/{n}] {settings[i].key}: {msg}")

    # Data rows never interleave: an idle DataLoader would prefetch while other settings run and
    # hide its real data time.
    together = [i for i, s in enumerate(settings) if interleave and not s.data]
    alone = [i for i in range(n) if i not in together]
    try:
        for i in together:  # build + warm up one at a time, so they do not compete
            log(f"[{i + 1}/{n}] {settings[i].key}: building and warming up")
            start(i)
            if results[i] is not None:
                report(i)
        early = {i for i in together if results[i] is not None}
        for r in range(repeats):
            log(f"round {r + 1}/{repeats} over {sum(workers[i] is not None for i in together)} settings")
            for i in together:
                one_repeat(i)
        for i in together:
            finish(i)
            if i not in early:
                report(i)
        for i in alone:
            log(f"[{i + 1}/{n}] {settings[i].key}: running")
            start(i)
            for _ in range(repeats):
                one_repeat(i)
            finish(i)
            report(i)
    except KeyboardInterrupt:
        log("interrupted: stopping the workers, writing what was measured")
    finally:
        for i, w in enumerate(workers):
            if w is not None:
                w.kill()
                retire(i)
    for i in range(n):
        if results[i] is None:
            results[i] = _skip("interrupted")
        results[i]["wall_s"] = used[i]
    return results


def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def format_table(report: dict) -> str:
    hw = report["hardware"]
    cfg = report["config"]
    mem_col = "peak GPU MiB" if cfg["device"] == "cuda" else "peak RSS+ MiB"
    head = ["setting", "batch", "img/s", "x ref", mem_col, "ms/step", "data %", "notes"]
    rows = []
    for r in report["results"]:
        label = r["setting"] + (" (reference)" if r["is_reference"] else "")
        if r["status"] == "ok":
            notes = []
            n_used, n_all = len(r["repeats_used"]), len(r["step_s_repeats"])
            if n_used < n_all:
                notes.append(f"{n_all - n_used} of {n_all} repeats set aside (busy CPU)")
            if r.get("spread") is not None and r["spread"] > 0.15:
                notes.append(f"spread {r['spread']:.0%}")
            if cfg["device"] == "cpu" and r["cpu_util_used"] < CLEAN_UTIL:
                notes.append(f"had {r['cpu_util_used']:.0%} of its cores")
            if r["compile"]:
                notes.append(f"first step {r['first_step_s']:.0f} s")
            if r.get("reason"):
                notes.append(r["reason"])
            mem = r.get("peak_mem_bytes")
            rows.append([label, str(r["batch"]), _fmt(r["img_per_s"], ".2f"), _fmt(r.get("ratio"), ".2f"),
                         _fmt(mem / 2**20 if mem is not None else None, ".0f"), _fmt(r["ms_per_step"], ".0f"),
                         _fmt(r["data_share"] * 100 if r.get("data_share") is not None else None, ".1f"),
                         "; ".join(notes)])
        else:
            rows.append([label, str(r["batch"]), "skipped", "", "", "", "", r["reason"] or ""])
    widths = [max(len(head[i]), *(len(row[i]) for row in rows)) for i in range(len(head) - 1)]
    right = {1, 2, 3, 4, 5, 6}

    def line(cells):
        out = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out + [cells[-1]]).rstrip()

    lines = [
        (f"CycleGAN training step, preset {cfg['preset']} ({cfg['networks']}), "
         f"{cfg['size']}x{cfg['size']}, device {cfg['device']}"),
        hardware_line(hw),
        (f"median of {cfg['repeats']} repeats x {cfg['iters']} step(s) after {cfg['warmup']} warm-up step(s)"
         f" (compile: >= {COMPILE_MIN_WARMUP}), {cfg['schedule']}"
         + (f"; repeats with < {CLEAN_UTIL:.0%} CPU for the process are set aside when others are clean"
            if cfg["device"] == "cpu" else "")
         + "; x ref = img/s / reference img/s"),
        line(head),
        line(["-" * w for w in widths] + ["-----"]),
        *(line(r) for r in rows),
        f"memory: {report['memory_method']}",
    ]
    if cfg["device"] == "cpu":
        lines.append(f"bf16 on this CPU: {hw['cpu_bf16']['note']}")
        busy = [r for r in report["results"] if r["status"] == "ok" and r["cpu_util_used"] < CLEAN_UTIL]
        if busy:
            start, end = (hw.get(k) or ["?"] for k in ("loadavg_start", "loadavg_end"))
            load = f"1-min load avg {start[0]} at start, {end[0]} at end, on {hw['cpu_usable']} cores"
            lines.append(f"warning: other processes took CPU time during {len(busy)} setting(s) ({load}); "
                         "absolute numbers are inflated and the ratios less reliable: rerun on an idle machine")
        else:
            dropped = sum(len(r["step_s_repeats"]) - len(r["repeats_used"])
                          for r in report["results"] if r["status"] == "ok")
            if dropped:
                lines.append(f"note: {dropped} repeat(s) during which other processes had the cores were set "
                             "aside; every figure comes from clean repeats")
    elif hw.get("gpu"):
        g = hw["gpu"]
        lines.append(f"GPU fp32 as PyTorch defaults it: cudnn.allow_tf32={g['cudnn_allow_tf32']}, float32 matmul "
                     f"precision {g['matmul_precision']}, cudnn.benchmark={g['cudnn_benchmark']}")
    if any(r.get("data") for r in report["results"]):
        lines.append(f"data %: share of wall time waiting for the DataLoader ({cfg['workers']} workers, "
                     f"PNG decode + resize {round(cfg['size'] * LOAD_RATIO)} + crop {cfg['size']} + flip)")
    return "\n".join(lines)


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return name


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="img/s, peak memory and ms/step of the CycleGAN training step: reference vs fast paths.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="settings: '+'-joined tokens fp32|bf16|fp16, cl, compile, data, optional @BATCH; "
               "'ref' = fp32@1 (always run).",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--size", type=int, help="crop size (default 256 on GPU, 128 on CPU)")
    p.add_argument("--settings", help="comma-separated settings (default: a per-device list, see --list-settings)")
    p.add_argument("--list-settings", action="store_true", help="print the default settings and exit")
    p.add_argument("--warmup", type=int, help=f"untimed steps first (default {DEFAULT_WARMUP['cuda']} GPU, {DEFAULT_WARMUP['cpu']} CPU; "
                   f"compile >= {COMPILE_MIN_WARMUP})")
    p.add_argument("--iters", type=int, help=f"timed steps per repeat (default {DEFAULT_ITERS['cuda']} GPU, {DEFAULT_ITERS['cpu']} CPU)")
    p.add_argument("--repeats", type=int, help=f"timed repeats; the median is reported (default "
                   f"{DEFAULT_REPEATS['cuda']} GPU, {DEFAULT_REPEATS['cpu']} CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch.set_num_threads in each setting (default: torch's)")
    p.add_argument("--workers", type=int, help="DataLoader workers for +data rows (default: config's 4)")
    p.add_argument("--data-images", type=int, default=32, help="generated images per domain for +data rows")
    p.add_argument("--timeout", type=float, help="seconds per setting before it is skipped (default 900 GPU, "
                   "420 CPU)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON path (default {DEFAULT_OUT.relative_to(REPO)})")
    p.add_argument("--schedule", choices=("interleaved", "sequential"),
                   help="interleaved: timed repeats round-robin over all settings, so changing load from other "
                        "processes hits each alike (default on CPU); sequential: one setting after another, one "
                        "process alive at a time (default on GPU)")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("size", "warmup", "iters", "repeats", "data_images", "workers", "threads"):
        v = getattr(args, name)
        low = 0 if name in ("warmup", "workers") else 1
        if v is not None and v < low:
            p.error(f"--{name.replace('_', '-')} must be >= {low}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._worker:
        return _worker_main(args._worker)
    if args.list_settings:
        print(f"cuda: {','.join(default_settings('cuda', True))}")
        print(f"cpu with native bf16: {','.join(default_settings('cpu', True))}")
        print(f"cpu without: {','.join(default_settings('cpu', False))}")
        return 0

    device = resolve_device(args.device)
    try:
        names = args.settings or ",".join(default_settings(device, cpu_bf16_support()["native"]))
        settings = parse_settings(names)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = args.size or DEFAULT_SIZE[device]
    schedule = args.schedule or ("interleaved" if device == "cpu" else "sequential")
    from cyclegan.config import build_config

    base = build_config(preset=PRESET)
    g, d = base.model.generator, base.model.discriminator
    config = {
        "preset": PRESET,
        "networks": (f"ResNet-{g.n_blocks} ngf {g.ngf}, {d.n_layers}-layer PatchGAN ndf {d.ndf}, "
                     f"{base.loss.gan} + cycle {base.loss.lambda_cyc:g} + identity {base.loss.lambda_id:g}, "
                     f"pool {base.loss.pool_size}"),
        "device": device,
        "size": size,
        "warmup": args.warmup if args.warmup is not None else DEFAULT_WARMUP[device],
        "iters": args.iters or DEFAULT_ITERS[device],
        "repeats": args.repeats or DEFAULT_REPEATS[device],
        "schedule": schedule,
        "seed": args.seed,
        "threads": args.threads,
        "workers": args.workers if args.workers is not None else base.data.num_workers,
        "data_images": args.data_images,
        "timeout_s": args.timeout or DEFAULT_TIMEOUT[device],
        "settings": [s.key for s in settings],
    }
    hw = hardware_info(device)
    if args.threads:
        hw["torch_threads_default"], hw["torch_threads"] = hw["torch_threads"], args.threads
    report = {"benchmark": "train_speed", "hardware": hw, "config": config,
              "memory_method": memory_method(device), "results": []}

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    log(hardware_line(hw))
    tmp_data = None
    try:
        if any(s.data for s in settings):
            tmp_data = tempfile.mkdtemp(prefix="train_speed_data_")
            from cyclegan.synthetic import make_unpaired_dataset

            make_unpaired_dataset(Path(tmp_data), n_train=args.data_images, n_test=0, size=size, seed=args.seed)
        specs = [{"setting": dataclasses.asdict(s), "device": device, "size": size, "seed": args.seed,
                  "warmup": config["warmup"], "iters": config["iters"], "repeats": config["repeats"],
                  "threads": args.threads, "workers": config["workers"], "data_root": tmp_data,
                  "data_images": args.data_images} for s in settings]
        results = run_settings(settings, specs, interleave=schedule == "interleaved", repeats=config["repeats"],
                               iters=config["iters"], budget_s=config["timeout_s"], device=device, log=log)
    finally:
        if tmp_data:
            shutil.rmtree(tmp_data, ignore_errors=True)

    for s, res in zip(settings, results):
        report["results"].append({
            "setting": s.name, "key": s.key, "batch": s.batch, "precision": s.precision,
            "channels_last": s.channels_last, "compile": s.compile, "data": s.data,
            "is_reference": s.is_reference, "reason": None, **res,
        })
    ref = next((r for r in report["results"] if r["is_reference"] and r["status"] == "ok"), None)
    for r in report["results"]:
        r["ratio"] = r["img_per_s"] / ref["img_per_s"] if ref and r["status"] == "ok" else None
        if r.get("peak_mem_bytes") is not None:
            r["peak_mem_mib"] = r["peak_mem_bytes"] / 2**20
    hw["loadavg_end"] = _loadavg()
    report["total_wall_s"] = time.perf_counter() - started

    print(format_table(report), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.out}")
    return 0 if ref else 1


if __name__ == "__main__":
    sys.exit(main())
