"""The measurement harness every bench/ script shares; bench/README.md, "Writing a benchmark", shows use.

A benchmark script holds only what it measures. This module holds the rest, so every script reports
the same way:

- command line: ``make_parser`` (``--device auto|cpu|cuda``, ``--out``, ``--markdown``),
  ``resolve_device``, ``split_list``, ``check_minimums``; the speed-lever setting grammar
  (``Setting``, ``parse_setting``, ``parse_settings``: ``compile+bf16+cl@8``)
- hardware: ``hardware_info`` (a JSON-able dict) and ``hardware_line`` (one line above each table)
- measuring inside a process: ``Stopwatch`` (wall and CPU time of a block, synchronising CUDA),
  ``current_rss`` / ``peak_rss``
- statistics: ``timing_stats`` (median of repeats, spread, and repeats set aside when other
  processes had the cores), ``timing_notes``, ``busy_footer``, ``ratio``
- tables: ``format_table`` (aligned text or Markdown), ``fmt``, ``fmt_ratio``
- results: ``write_results`` (JSON under bench/results/ with hardware, config, git commit)
- processes: ``Worker`` / ``serve`` (a setting in its own process, with a time budget) and
  ``run_workers`` (all settings, timed repeats interleaved round-robin or one after another);
  ``run_cli`` / ``set_args`` for scripts that time the ``cyclegan`` command itself

Importing it has no side effects: no files, processes, threads or torch settings change.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import importlib.metadata
import json
import os
import platform
import queue
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self

import torch

from cyclegan.fileio import write_text_atomic

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
# The horse2zebra copy the project's measurements use, next to the repository when present.
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "horse2zebra-128"
# The paper's load/crop ratio (286 -> 256), applied at any crop size.
LOAD_RATIO = 286 / 256
# A CPU repeat during which the process got less than this share of its threads' CPU time (other
# processes had the cores) is set aside when clean repeats exist: two-thread steps on a busy machine
# slow down by 10-30x at OpenMP barriers, which a median of a few repeats cannot absorb.
CLEAN_UTIL = 0.8
NOTE_SPREAD = 0.15  # a row's notes show its spread above this
WORKER_FLAG = "--_worker"  # hidden flag that makes a script run one setting as a worker
MSG = "@@bench "  # worker -> driver messages on stdout; any other output is ignored


# ------------------------------------------------------------------------------------ command line


def make_parser(name: str, doc: str, *, epilog: str | None = None) -> argparse.ArgumentParser:
    """The options every benchmark has: ``--device``, ``--out`` (bench/results/NAME.json), ``--markdown``."""
    p = argparse.ArgumentParser(description=doc.strip().split("\n\n")[0], epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when available, else CPU (the defaults of other options follow it)")
    p.add_argument("--out", type=Path, default=RESULTS / f"{name}.json", help=f"JSON path (default "
                   f"bench/results/{name}.json)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    p.add_argument(WORKER_FLAG, help=argparse.SUPPRESS)
    return p


def check_minimums(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   minimums: Mapping[str, int]) -> None:
    """``parser.error`` (exit 2) for an option below its minimum; None means "the default"."""
    for name, low in minimums.items():
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f"--{name.replace('_', '-')} must be >= {low}")


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: no CUDA device is available")
    return name


def split_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [t.strip() for t in text.split(",") if t.strip()]


# ---------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """A combination of speed levers; none changes what is computed, only how fast.

    ``flags`` are a script's own tokens (``data`` in train_speed, ``sync`` in train_e2e), in the
    order the script declared them, so the canonical name is stable.
    """

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    batch: int = 1
    flags: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Canonical spelling without the batch size: ``compile+bf16+cl+data``."""
        parts = (["compile"] if self.compile else []) + [self.precision]
        return "+".join(parts + (["cl"] if self.channels_last else []) + list(self.flags))

    @property
    def key(self) -> str:
        return f"{self.name}@{self.batch}"

    @property
    def is_reference(self) -> bool:
        """fp32, eager, batch 1, no flags: what the official implementation computes."""
        return self == Setting()

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def overrides(self) -> dict:
        """The config overrides (``--set`` keys) of the four levers."""
        return {"train.precision": self.precision, "train.channels_last": self.channels_last,
                "train.compile": self.compile, "train.batch_size": self.batch}


def parse_setting(text: str, flags: Mapping[str, str] | Sequence[str] = ()) -> Setting:
    """``'+'``-joined tokens fp32|bf16|fp16, cl, compile, a script's ``flags``, optional ``@BATCH``.

    ``flags`` maps accepted tokens to flag names (aliases), or lists them. ``ref`` is ``fp32@1``;
    ``eager`` is accepted and means nothing. Raises ValueError naming the bad token.
    """
    flags = dict(flags) if isinstance(flags, Mapping) else {f: f for f in flags}
    text = text.strip().lower()
    if text in ("ref", "reference"):
        return Setting()
    body, _, batch = text.partition("@")
    if batch and (not batch.isdigit() or int(batch) < 1):
        raise ValueError(f"setting {text!r}: batch after '@' must be a positive integer")
    kw: dict = {"batch": int(batch) if batch else 1}
    found: set[str] = set()
    for tok in filter(None, body.split("+")):
        if tok in ("fp32", "bf16", "fp16"):
            if "precision" in kw:
                raise ValueError(f"setting {text!r}: two precisions")
            kw["precision"] = tok
        elif tok in ("cl", "channels_last"):
            kw["channels_last"] = True
        elif tok == "compile":
            kw["compile"] = True
        elif tok in flags:
            found.add(flags[tok])
        elif tok not in ("eager", "ref"):
            allowed = ", ".join(["fp32|bf16|fp16", "cl", "compile", *dict.fromkeys(flags.values()), "@BATCH"])
            raise ValueError(f"setting {text!r}: unknown token {tok!r} (use {allowed})")
    order = list(dict.fromkeys(flags.values()))
    return Setting(**kw, flags=tuple(f for f in order if f in found))


def parse_settings(text: str, flags: Mapping[str, str] | Sequence[str] = ()) -> list[Setting]:
    """Comma-separated settings, the reference first (always measured: every ratio is against it)."""
    out = [Setting()]
    for item in split_list(text):
        s = parse_setting(item, flags)
        if s not in out:
            out.append(s)
    return out


# ---------------------------------------------------------------------------------------- hardware


def cpu_info() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (Linux); empty elsewhere."""
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
    info = cpu_info()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if info.get(key):
            return info[key]
    return platform.processor() or platform.machine() or "unknown"


def _mkldnn_probe(name: str) -> bool | None:
    try:
        return bool(getattr(torch.ops.mkldnn, name)())
    except (AttributeError, RuntimeError):
        return None


def cpu_bf16_support() -> dict:
    """Whether bf16 matmul/conv run natively on this CPU, or are emulated in fp32 by oneDNN.

    Native: x86 ``avx512_bf16`` or ``amx_bf16``, or Arm ``bf16`` (ARMv8.6). torch's probes are
    recorded too; ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is also true on plain AVX-512
    CPUs, where oneDNN emulates bf16, so it is not evidence of native support.
    """
    info = cpu_info()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    native_flags = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    probes: dict[str, bool | None] = {}
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, name, None)
        probes[name] = bool(fn()) if fn else None
    probes["mkldnn_bf16"] = _mkldnn_probe("_is_mkldnn_bf16_supported")
    native = bool(native_flags) or any(probes[k] for k in ("_is_avx512_bf16_supported",
                                                           "_is_amx_tile_supported"))
    if native:
        note = "native (" + (", ".join(native_flags) or ", ".join(k for k, v in probes.items() if v)) + ")"
    elif flags:
        note = "emulated (no avx512_bf16 / amx_bf16 / bf16 CPU flag)"
    else:
        note = "unknown (no CPU flags readable)"
    return {"native": native, "note": note, "cpu_flags": native_flags, "torch_probes": probes,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def mkldnn_fp16() -> bool:
    """oneDNN has fp16 kernels on this CPU (avx512_fp16 / amx_fp16); elsewhere fp16 convs crawl."""
    return bool(_mkldnn_probe("_is_mkldnn_fp16_supported"))


def loadavg() -> list[float] | None:
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


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def hardware_info(device: str, *, threads: int | None = None, packages: Sequence[str] = ()) -> dict:
    """What the numbers were measured on. ``threads``: the torch thread count the settings will set
    (recorded with torch's default); ``packages``: more package versions to record (onnxruntime)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    hw = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "torch_threads": threads or torch.get_num_threads(),
        "memory_gib": _total_memory_gib(),
        "loadavg_start": loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "packages": {p: _version(p) for p in packages},
        "cpu_bf16": cpu_bf16_support(),
        "gpu": None,
    }
    if threads:
        hw["torch_threads_default"] = torch.get_num_threads()
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


def hardware_line(hw: dict) -> str:
    parts = [(f"CPU {hw['cpu_model']} ({hw['cpu_usable']} usable of {hw['cpu_count']} cores, "
              f"torch threads {hw['torch_threads']}, bf16 {hw['cpu_bf16']['note']})")]
    if hw["gpu"]:
        g = hw["gpu"]
        parts.insert(0, f"GPU {g['name']} ({g['memory_gib']} GiB, sm {g['capability']})")
    parts.append(f"torch {hw['torch']}" + (f" (CUDA {hw['torch_cuda']})" if hw["gpu"] else ""))
    parts += [f"{name} {v or 'not installed'}" for name, v in hw.get("packages", {}).items()]
    parts += [f"python {hw['python']}", hw["date"]]
    if hw.get("loadavg_start") is not None:
        parts.append(f"load avg at start {hw['loadavg_start'][0]}")
    return " | ".join(parts)


def gpu_fp32_line(hw: dict) -> str | None:
    """How fp32 math runs on the GPU as PyTorch defaults it (the benchmarks do not change it)."""
    g = hw.get("gpu")
    if not g:
        return None
    return (f"GPU fp32 as PyTorch defaults it: cudnn.allow_tf32={g['cudnn_allow_tf32']}, float32 matmul "
            f"precision {g['matmul_precision']}, cudnn.benchmark={g['cudnn_benchmark']}")


# ------------------------------------------------------------------------- measuring in a process


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Stopwatch:
    """``with Stopwatch(device) as sw: ...`` -> ``sw.wall_s`` and ``sw.cpu_s`` (this process, all
    threads) of the block, with CUDA synchronised before and after."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = device
        self.wall_s = self.cpu_s = 0.0

    def __enter__(self) -> Self:
        sync(self.device)
        self._c0, self._t0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_s = time.process_time() - self._c0

    def record(self) -> dict:
        """The repeat record ``timing_stats`` reads."""
        return {"wall_s": self.wall_s, "cpu_s": self.cpu_s}


def current_rss() -> int | None:
    """Resident set size of this process in bytes now (Linux /proc/self/statm; else None)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def peak_rss() -> int:
    """This process's peak RSS in bytes (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# -------------------------------------------------------------------------------------- statistics


def cpu_util(wall_s: float, cpu_s: float, threads: int) -> float:
    """Process CPU seconds per wall second per thread: well under 1 means other processes had the cores."""
    return cpu_s / wall_s / max(threads, 1) if wall_s > 0 else 1.0


def timing_stats(repeats: Sequence[Mapping], *, per: int = 1, threads: int = 1, drop_busy: bool = True,
                 clean: float = CLEAN_UTIL) -> dict:
    """Robust statistics of timed repeats (``{"wall_s", "cpu_s"}`` each; ``cpu_s`` optional).

    ``per``: units per repeat (steps), so ``times`` are per unit. With ``drop_busy`` (CPU runs),
    repeats whose CPU utilisation is under ``clean`` are set aside when at least one repeat is clean;
    the median, spread and ``cpu_util_used`` are over the repeats used. ``best`` is the fastest of all.
    """
    if not repeats:
        raise ValueError("timing_stats: no repeats")
    times = [r["wall_s"] / per for r in repeats]
    utils = None
    used = list(range(len(times)))
    util_all = util_used = None
    if all("cpu_s" in r for r in repeats):
        utils = [cpu_util(r["wall_s"], r["cpu_s"], threads) for r in repeats]
        if drop_busy:
            used = [k for k, u in enumerate(utils) if u >= clean] or used
        util_all = cpu_util(sum(r["wall_s"] for r in repeats), sum(r["cpu_s"] for r in repeats), threads)
        util_used = cpu_util(sum(repeats[k]["wall_s"] for k in used), sum(repeats[k]["cpu_s"] for k in used),
                             threads)
    kept = [times[k] for k in used]
    med = statistics.median(kept)
    return {"times": times, "used": used, "median": med, "best": min(times),
            "spread": (max(kept) - min(kept)) / med if med > 0 else 0.0,
            "cpu_util_repeats": utils, "cpu_util": util_all, "cpu_util_used": util_used}


def timing_notes(stats: Mapping, *, busy_check: bool, clean: float = CLEAN_UTIL) -> list[str]:
    """The notes a row gets from its ``timing_stats`` (``busy_check``: a CPU run)."""
    notes = []
    n_used, n_all = len(stats["used"]), len(stats["times"])
    if n_used < n_all:
        notes.append(f"{n_all - n_used} of {n_all} repeats set aside (busy CPU)")
    if stats["spread"] > NOTE_SPREAD:
        notes.append(f"spread {stats['spread']:.0%}")
    if busy_check and stats["cpu_util_used"] is not None and stats["cpu_util_used"] < clean:
        notes.append(f"had {stats['cpu_util_used']:.0%} of its cores")
    return notes


def busy_footer(all_stats: Sequence[Mapping], hw: Mapping, clean: float = CLEAN_UTIL) -> str | None:
    """Below a CPU table: a warning when even the repeats used were busy, else a note on those set aside."""
    busy = [s for s in all_stats if s["cpu_util_used"] is not None and s["cpu_util_used"] < clean]
    if busy:
        start, end = (hw.get(k) or ["?"] for k in ("loadavg_start", "loadavg_end"))
        load = f"1-min load avg {start[0]} at start, {end[0]} at end, on {hw['cpu_usable']} cores"
        return (f"warning: other processes took CPU time during {len(busy)} row(s) ({load}); absolute "
                "numbers are inflated and the ratios less reliable: rerun on an idle machine")
    dropped = sum(len(s["times"]) - len(s["used"]) for s in all_stats)
    if dropped:
        return (f"note: {dropped} repeat(s) during which other processes had the cores were set aside; "
                "every figure comes from clean repeats")
    return None


def ratio(value: float | None, reference: float | None, *, higher_is_better: bool = True) -> float | None:
    """How many times better than the reference (> 1: better): value/ref for rates, ref/value for times."""
    if value is None or reference is None or value <= 0 or reference <= 0:
        return None
    return value / reference if higher_is_better else reference / value


# ------------------------------------------------------------------------------------------ tables


def fmt(x: float | None, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def format_table(head: Sequence[str], rows: Sequence[Sequence[str]], *, right: Collection[int] = (),
                 markdown: bool = False) -> str:
    """Aligned text (two spaces between columns) or a Markdown table.

    ``right``: indices of right-aligned (numeric) columns. A left-aligned last column (notes) is not
    padded, so long notes do not widen the table.
    """
    rows = [[str(c) for c in r] for r in rows]
    if markdown:
        rule = ["---:" if i in right else "---" for i in range(len(head))]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in (head, rule, *rows))
    widths = [max([len(head[i]), *(len(r[i]) for r in rows)]) for i in range(len(head))]

    last = len(head) - 1
    if last not in right:
        widths[last] = len(head[last])

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    rule = ["-" * w for w in widths]
    return "\n".join([line(head), line(rule), *(line(r) for r in rows)])


# ----------------------------------------------------------------------------------------- results


def git_state() -> dict:
    """The commit measured, and whether src/ or bench/ had uncommitted changes (None: not a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no", "--", "src", "bench") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def write_results(path: Path, *, benchmark: str, hardware: dict, config: dict, results: list,
                  **extra) -> Path:
    """Write ``{benchmark, git, command, hardware, config, results, **extra}`` as JSON, atomically."""
    doc = {"benchmark": benchmark, "git": git_state(), "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
           "hardware": hardware, "config": config, "results": results, **extra}
    return write_text_atomic(path, json.dumps(doc, indent=2, default=str) + "\n")


class Progress:
    """``log = Progress(); log("msg")`` prints ``[  12 s] msg`` to stderr; stdout keeps only the table."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, msg: str) -> None:
        print(f"[{self.elapsed:6.0f} s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------- processes


def skip(reason: str) -> dict:
    """A row that did not run: unsupported here, failed, or timed out."""
    return {"status": "skipped", "reason": reason}


def failure(e: BaseException) -> dict:
    """``skip`` for an exception, its traceback on stderr (the driver keeps the tail)."""
    traceback.print_exc()
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return skip(f"failed: {type(e).__name__}: {msg[:300]}")


class Session(Protocol):
    """One setting inside its worker process."""

    def prepare(self) -> dict:
        """Build and warm up; ``{"status": "ready", ...}``, or ``skip(reason)``."""

    def repeat(self) -> dict:
        """One timed repeat (a ``Stopwatch.record()`` plus anything the script needs)."""

    def finish(self) -> dict:
        """What is known at the end (peak memory, checks)."""


def send(obj: dict) -> None:
    sys.stdout.write(MSG + json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(session: Session) -> int:
    """The worker side: send ``prepare()``, then answer each stdin line ``repeat`` | ``finish``."""
    try:
        ready = session.prepare()
    except Exception as e:  # noqa: BLE001 - one setting failing must not lose the others
        ready = failure(e)
    send(ready)
    if ready.get("status") != "ready":
        return 0
    for line in sys.stdin:
        cmd = line.strip()
        try:
            if cmd == "repeat":
                send(session.repeat())
            elif cmd == "finish":
                send(session.finish())
                return 0
        except Exception as e:  # noqa: BLE001
            send(failure(e))
            return 0
    return 0


def worker_command(script: str | Path, spec: dict) -> list[str]:
    """How a driver starts ``script`` as a worker for ``spec`` (the script calls ``serve`` on WORKER_FLAG)."""
    return [sys.executable, str(Path(script).resolve()), WORKER_FLAG, json.dumps(spec)]


class Worker:
    """A setting's own process. ``request`` sends a command and waits, within the setting's time
    budget, for the reply; a crash or timeout becomes a ``skip`` result instead of an exception."""

    def __init__(self, command: Sequence[str], budget_s: float, env: Mapping[str, str] | None = None) -> None:
        self.budget_s = budget_s
        self.used_s = 0.0
        self.messages: queue.Queue = queue.Queue()
        self.stderr: collections.deque = collections.deque(maxlen=40)
        # Own process group: on a timeout the whole tree (DataLoader and compile workers) goes too.
        self.proc = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True,
                                     env=None if env is None else {**os.environ, **env})
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
        """Send ``cmd`` (None: just wait for the next message) and return the reply."""
        t = time.perf_counter()
        try:
            if cmd is not None:
                self.proc.stdin.write(cmd + "\n")
                self.proc.stdin.flush()
            msg = self.messages.get(timeout=max(self.budget_s - self.used_s, 1.0))
        except queue.Empty:
            self.kill()
            return skip(f"failed: timed out after {self.budget_s:g} s (raise --timeout)")
        except OSError:  # BrokenPipeError: the process is gone
            msg = None
        finally:
            self.used_s += time.perf_counter() - t
        if msg is None:
            code = self.proc.wait()
            sig = f" (signal {-code})" if code < 0 else ""
            last = self.stderr[-1][-300:] if self.stderr else ""
            return {**skip(f"failed: worker exited with code {code}{sig}: {last}"),
                    "stderr_tail": "\n".join(self.stderr)}
        if msg.get("status") == "skipped" and self.stderr:
            msg["stderr_tail"] = "\n".join(self.stderr)
        return msg

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
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


@dataclass
class Job:
    """One setting for ``run_workers``: a label for the log, the worker command, and whether its
    timed repeats may interleave with other jobs' (False: it runs alone, after the others)."""

    label: str
    command: list[str]
    together: bool = True


def run_workers(jobs: Sequence[Job], *, repeats: int, budget_s: float, interleave: bool,
                log: Callable[[str], None], describe: Callable[[int, dict], str] | None = None,
                env: Mapping[str, str] | None = None) -> list[dict]:
    """Run every job's worker: prepare, ``repeats`` timed repeats, finish.

    With ``interleave`` (CPU default) the ``together`` jobs are built and warmed up one at a time,
    then their timed repeats go round-robin (one process runs at a time), so load from other
    processes that comes and goes hits every setting alike and the ratios stay meaningful; the
    other jobs follow one by one. Returns per job ``{"status": "ok", "ready", "repeats", "final",
    "wall_s"}`` or ``skip(reason)`` with ``wall_s`` (the seconds its worker spent answering).
    ``describe(i, result)``: the text logged when job ``i`` ran (default "done"; skipped: the reason).
    """
    n = len(jobs)
    results: list[dict | None] = [None] * n
    readies: list[dict] = [{}] * n
    reps: list[list[dict]] = [[] for _ in range(n)]
    workers: list[Worker | None] = [None] * n  # the live ones
    used = [0.0] * n

    def retire(i: int) -> None:
        used[i] = workers[i].used_s
        workers[i] = None

    def fail(i: int, res: dict) -> None:
        results[i] = res
        if workers[i] is not None:
            workers[i].kill()
            retire(i)

    def start(i: int) -> None:
        workers[i] = Worker(jobs[i].command, budget_s, env)
        readies[i] = workers[i].request()
        if readies[i].get("status") != "ready":
            fail(i, readies[i])

    def one_repeat(i: int) -> None:
        if workers[i] is not None:
            r = workers[i].request("repeat")
            if r.get("status") == "skipped":
                fail(i, r)
            else:
                reps[i].append(r)

    def finish(i: int) -> None:
        if workers[i] is not None:
            final = workers[i].request("finish")
            if final.get("status") == "skipped":
                return fail(i, final)
            workers[i].close()
            retire(i)
            results[i] = {"status": "ok", "ready": readies[i], "repeats": reps[i], "final": final}

    def report(i: int) -> None:
        r = results[i]
        if r["status"] != "ok":
            text = f"skipped: {r['reason']}"
        else:
            text = describe(i, r) if describe else "done"
        log(f"[{i + 1}/{n}] {jobs[i].label}: {text}")

    together = [i for i in range(n) if interleave and jobs[i].together]
    alone = [i for i in range(n) if i not in together]
    try:
        for i in together:  # build + warm up one at a time, so they do not compete
            log(f"[{i + 1}/{n}] {jobs[i].label}: building and warming up")
            start(i)
            if results[i] is not None:
                report(i)
        early = {i for i in together if results[i] is not None}
        for r in range(repeats if together else 0):
            log(f"round {r + 1}/{repeats} over {sum(workers[i] is not None for i in together)} settings")
            for i in together:
                one_repeat(i)
        for i in together:
            finish(i)
            if i not in early:
                report(i)
        for i in alone:
            log(f"[{i + 1}/{n}] {jobs[i].label}: running")
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
    return [{**(r or skip("interrupted")), "wall_s": u} for r, u in zip(results, used)]


def set_args(overrides: Mapping[str, object]) -> list[str]:
    """``--set key=value`` arguments of the ``cyclegan`` CLI (booleans as true/false)."""
    out: list[str] = []
    for key, value in overrides.items():
        out += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return out


def run_cli(args: Sequence[str], *, timeout: float | None = None) -> dict:
    """Run ``python -m cyclegan ARGS``; ``{"ok", "reason", "wall_s"}``, reason = the last stderr line."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "cyclegan", *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "reason": f"timed out after {timeout:.0f} s", "wall_s": time.perf_counter() - t0}
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
    reason = None if proc.returncode == 0 else f"exit {proc.returncode}: {last}"
    return {"ok": reason is None, "reason": reason, "wall_s": time.perf_counter() - t0}
