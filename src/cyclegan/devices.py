"""Where the work runs: device choice, autocast, what the hardware computes natively, CPU threads and
free memory. Shared by training, translation, evaluation and the server, so every command picks
devices, precisions and thread counts the same way.

Thread count: PyTorch and ONNX Runtime default to one thread per physical core of the host, which
inside a container limited to a few CPUs (cgroup quota or affinity mask) oversubscribes the
machine; ``cap_threads`` lowers the count to what the process may use and never raises it.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch

from cyclegan.errors import CycleGANError, DeviceError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")  # training and PyTorch inference (autocast dtypes)
# Inference only: "auto" picks a path (cyclegan.runtime.choose_runtime); "int8" is ONNX Runtime's
# quantized model (cyclegan.quantize), which has no training counterpart.
TRANSLATE_PRECISIONS = ("auto", *PRECISIONS, "int8")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MIN_MEMORY_BUDGET = 64 * 2**20  # below this a forward pass of any useful tile cannot run


# ------------------------------------------------------------------------------------------- devices


def resolve_device(name: str | torch.device) -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name not in DEVICES:
        raise DeviceError(f"device {name!r}: choose from {', '.join(DEVICES)}")
    mps = getattr(torch.backends, "mps", None)
    mps_ok = mps is not None and mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device cuda: no CUDA device is available")
    if name == "mps" and not mps_ok:
        raise DeviceError("device mps: MPS is not available on this machine")
    return torch.device(name)


def host_available_memory() -> int:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return 4 * 2**30  # unknown platform: assume a modest laptop


def default_memory_budget(device: torch.device) -> int:
    """Half of the memory free on ``device`` now; the rest stays for weights, caches and other programs."""
    free = None
    if device.type == "cuda":
        with contextlib.suppress(RuntimeError):
            free, _ = torch.cuda.mem_get_info(device)
    elif device.type == "mps":
        with contextlib.suppress(AttributeError, RuntimeError):
            free = int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    if free is None:
        free = host_available_memory()
    return max(MIN_MEMORY_BUDGET, int(free) // 2)


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for "bf16" / "fp16" on ``device``; a no-op context for "fp32"."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[precision])


# ---------------------------------------------------------------------------------- native precision


def native_bf16(device: torch.device) -> bool:
    """bf16 arithmetic in hardware: Ampere+ GPUs; on CPUs AVX512-BF16 or AMX (emulated bf16 is slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None),
                  getattr(torch.cpu, "_is_amx_tile_supported", None))
        return any(p is not None and p() for p in probes)
    return False


def native_fp16(device: torch.device) -> bool:
    """fp16 arithmetic in hardware: any CUDA GPU; on CPUs only AMX-FP16 (others convert through fp32)."""
    if device.type in ("cuda", "mps"):
        return True
    probe = getattr(torch.cpu, "_is_amx_fp16_supported", None)
    return device.type == "cpu" and probe is not None and probe()


def precision_warning(device: torch.device, precision: str) -> str | None:
    """A warning when ``precision`` was asked for on a device that only emulates it (slower than fp32)."""
    if precision == "bf16" and device.type == "cpu" and not native_bf16(device):
        return "bf16 on a CPU without native bf16 (avx512_bf16/amx) is emulated and usually slower than fp32"
    if precision == "fp16" and not native_fp16(device):
        # measured on this project's dev CPU (AMD EPYC, avx512_bf16): an fp16 conv ~34x slower than fp32
        return (f"fp16 on this {device.type} has no fast kernels and is much slower than fp32; "
                "use bf16 or fp32")
    return None


# ------------------------------------------------------------------------------------------- threads


def _own_cgroups(proc_cgroup: Path) -> dict[str, str]:
    """{controller: path} of this process (``/proc/self/cgroup``); "" is the cgroup v2 hierarchy."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path.strip("/")
    return out


def _ancestry(path: str) -> list[str]:
    """'a/b' -> ['a/b', 'a', '']: a limit anywhere above the process's cgroup applies to it."""
    parts = [p for p in path.split("/") if p]
    return ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_cpu_quota(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """CPUs granted by the cgroup CPU quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``) of this process's
    cgroup or any parent, the smallest one; None if unlimited."""
    own = _own_cgroups(proc_cgroup)
    quotas = []
    for sub in _ancestry(own.get("", "")):  # cgroup v2
        with contextlib.suppress(OSError, ValueError):
            quota, period = (root / sub / "cpu.max").read_text().split()[:2]
            if quota != "max":
                quotas.append(int(quota) / int(period))
    for mount in ("cpu", "cpu,cpuacct"):  # cgroup v1
        for sub in _ancestry(own.get("cpu", "")):
            with contextlib.suppress(OSError, ValueError):
                quota_us = int((root / mount / sub / "cpu.cfs_quota_us").read_text())
                period_us = int((root / mount / sub / "cpu.cfs_period_us").read_text())
                if quota_us > 0:
                    quotas.append(quota_us / period_us)
    return min(quotas) if quotas else None


def usable_cpus(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup quota (rounded up)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def cap_threads() -> int:
    """Lower PyTorch's intra-op threads to ``usable_cpus()`` if it is above; returns the count in use."""
    n = min(torch.get_num_threads(), usable_cpus())
    if n < torch.get_num_threads():
        torch.set_num_threads(n)
    return n


def apply_threads(threads: int | None) -> None:
    """The ``threads`` convention (``--threads`` on the command line): None leaves PyTorch alone, 0 caps
    it (``cap_threads``), N sets N."""
    if threads is None:
        return
    if threads < 0:
        raise CycleGANError(f"threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    else:
        cap_threads()
