"""How a generator runs at inference: PyTorch (eager or compiled, any autocast) or ONNX Runtime,
the automatic choice between them (``precision="auto"``), and the CPU thread count.

``choose_runtime`` picks, for one model on one device, the fastest path whose output stays within a
set tolerance of PyTorch fp32. The rules follow what ``bench/translate_speed.py`` measured (the figures are on
the
documentation's Benchmarks page, docs/benchmarks.md, not here, where they would go stale):

0. On a CPU, an int8 model of these exact weights that passed its image-level check
   (``cyclegan.quantize``), when ``translate --precision int8`` or ``export --int8`` made one
   earlier: it is never made here, since that needs the training images and a minute or more.
1. bf16 autocast where the device computes bf16 natively and a probe image stays within
   ``AUTO_MAX_LEVELS`` of fp32.
2. Otherwise, on a CPU with ``onnxruntime`` installed, ONNX Runtime (fp32): the module is exported once,
   checked against PyTorch as ``cyclegan export``
   does, and cached under ``cache_dir()`` keyed by its weights, structure and code.
3. Otherwise PyTorch fp32 eager. channels_last is never chosen: it was slower than plain
   fp32 on the CPU measured.

``int8_runtime`` is ``--precision int8``: the model quantized on calibration images and checked
(cached under ``cache_dir()/int8`` keyed by the weights and the calibration images), refused when the
check fails. ``export_int8_generator`` is ``cyclegan export --int8``; it lives here because it also
puts the model in that cache, where ``auto`` finds it.

Thread count: PyTorch and ONNX Runtime default to one thread per physical core of the host, which
inside a container limited to a few CPUs (cgroup quota or affinity mask) oversubscribes the
machine; ``cap_threads`` lowers the count to what the process may use and never raises it.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from cyclegan.checkpoint import file_sha256, sidecar_path
from cyclegan.config import Config
from cyclegan.devices import native_bf16
from cyclegan.errors import CheckpointError, CycleGANError, ExportError, TranslateError, first_line
from cyclegan.export import export_module
from cyclegan.fileio import temp_sibling
from cyclegan.image import to_model_range, to_uint8
from cyclegan.modelfile import ModelInfo, OnnxGenerator, load_any_generator
from cyclegan.quantize import (
    DEFAULT_CALIBRATION_SIZE,
    DEFAULT_LIMITS,
    Calibration,
    Int8ExportResult,
    Int8Limits,
    Int8Report,
    calibration_for,
    export_int8,
    load_calibration,
    quantize_onnx,
    read_int8_report,
)
from cyclegan.synthetic import make_scene
from cyclegan.version import __version__

__all__ = [
    "AUTO_MAX_LEVELS",
    "AUTO_MEAN_LEVELS",
    "RuntimeChoice",
    "TorchRunner",
    "cache_dir",
    "choose_runtime",
    "export_int8_generator",
    "int8_cached",
    "int8_runtime",
    "onnx_cached",
]

# bf16 is accepted by precision="auto" only if, on a probe image, no output pixel moves by more than
# AUTO_MAX_LEVELS 8-bit levels from fp32 and the mean change stays under AUTO_MEAN_LEVELS.
AUTO_MAX_LEVELS = 8
AUTO_MEAN_LEVELS = 1.0

CACHE_ENV = "CYCLEGAN_CACHE_DIR"
CACHE_MAX_BYTES = 2**30  # ONNX models kept for precision="auto"; least recently used go first


# ------------------------------------------------------------------------------------------ runners


class TorchRunner:
    """An nn.Module (eager or TorchScript) behind float-in, float32-out, with autocast and options."""

    def __init__(
        self, *, module: nn.Module, device: torch.device, precision: str, channels_last: bool, compile: bool
    ) -> None:
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.module = module.to(device).eval()
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.compiled = torch.compile(self.module) if compile else None

    def __call__(self, x: Tensor, *, eager: bool = False) -> Tensor:
        # [B, 3, H, W] float in [-1, 1] on self.device -> [B, 3, H, W] float32
        net = self.module if eager or self.compiled is None else self.compiled
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        ctx = torch.autocast(self.device.type, dtype=amp) if amp else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            y = net(x)
        return y.float().contiguous()


class CallableRunner:
    """Any callable with the generator convention (e.g. an ONNX Runtime session) behind the runner API."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def __call__(self, x: Tensor, *, eager: bool = False) -> Tensor:
        with torch.inference_mode():
            return self.fn(x).float()


# ------------------------------------------------------------------------------------- bf16 probe


def _bf16_within_tolerance(module: nn.Module, device: torch.device, size_multiple: int) -> tuple[bool, str]:
    side = max(64, 2 * size_multiple)
    scene = make_scene(np.random.default_rng(0), side, "photo")  # a photo-like probe, not noise
    x = to_model_range(torch.from_numpy(scene).permute(2, 0, 1)[None].to(device))  # [1, 3, S, S]
    outs = {}
    for precision in ("fp32", "bf16"):
        runner = TorchRunner(module=module, device=device, precision=precision, channels_last=False,
                             compile=False)
        outs[precision] = to_uint8(runner(x)).int()
    diff = (outs["bf16"] - outs["fp32"]).abs()
    worst, mean = int(diff.max()), float(diff.float().mean())
    if worst <= AUTO_MAX_LEVELS and mean <= AUTO_MEAN_LEVELS:
        return True, f"native bf16, probe differs from fp32 by at most {worst} levels (mean {mean:.2f})"
    return False, f"bf16 moved the probe by up to {worst} levels (mean {mean:.2f}), over the tolerance"


# -------------------------------------------------------------------------------- ONNX Runtime cache


def cache_dir() -> Path:
    """``$CYCLEGAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/cyclegan``, else ``~/.cache/cyclegan``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cyclegan"


def _module_key(module: nn.Module, size_multiple: int) -> str:
    """A digest of everything the exported graph depends on: structure, weights, versions."""
    h = hashlib.sha256()
    h.update(f"{__version__}|{torch.__version__}|{size_multiple}|{module!r}".encode())
    # The code too: an edited forward (same version, e.g. an editable install) must not reuse a graph.
    for cls in sorted({type(m) for m in module.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        try:
            h.update(inspect.getsource(cls).encode())
        except (OSError, TypeError):
            h.update(f"{cls.__module__}.{cls.__qualname__}".encode())
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # A fresh buffer: a broadcast constant (stride 0, as onnx2torch keeps some) cannot be viewed as bytes.
        h.update(torch.empty(t.numel(),
                             dtype=t.dtype).copy_(t.reshape(-1)).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401 - the onnx extra
        import onnxruntime  # noqa: F401 - the onnx extra
    except ImportError:
        return False
    return True


def onnx_cached(module: nn.Module, *, size_multiple: int, threads: int | None = None):
    """An ``OnnxGenerator`` for ``module``: loaded from the cache, or exported, checked and cached first.

    Returns (generator, path, exported_now). Raises CycleGANError (or OSError) when it cannot.
    """
    own = getattr(module, "onnx_graph", None)  # an imported ONNX model's own graph (networks.foreign)
    if own is not None:
        return OnnxGenerator(path=Path(own), device="cpu", threads=threads), Path(own), False
    path = cache_dir() / "onnx" / f"{_module_key(module, size_multiple)}.onnx"
    if path.is_file():
        with contextlib.suppress(CheckpointError):  # unreadable (e.g. truncated by a full disk): redo it
            session = OnnxGenerator(path=path, device="cpu", threads=threads)
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: kept longest by _trim_cache
            return session, path, False
    info = ModelInfo(direction="a2b", size_multiple=size_multiple, config=None)
    # export_module writes under a temporary name and renames after its parity check, so a
    # concurrent reader never sees a half-written file.
    export_module(module.cpu().eval(), fmt="onnx", out=path, info=info, overwrite=True)
    _trim_cache(path.parent, keep=path)
    return OnnxGenerator(path=path, device="cpu", threads=threads), path, True


def _trim_cache(folder: Path, *, keep: Path, max_bytes: int | None = None) -> None:
    """Delete the least recently used models until the folder holds at most ``max_bytes``
    (``CACHE_MAX_BYTES``); every new checkpoint adds one (45 MB for the paper's generator)."""
    limit = CACHE_MAX_BYTES if max_bytes is None else max_bytes
    entries = []
    for p in folder.glob("*.onnx"):
        with contextlib.suppress(OSError):
            st = p.stat()
            entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    for _, size, p in sorted(entries):  # oldest first
        if total <= limit:
            break
        if p != keep:
            with contextlib.suppress(OSError):
                p.unlink()
                sidecar_path(p).unlink(missing_ok=True)
                total -= size


# ------------------------------------------------------------------------------------- int8 cache


def _int8_key(model: nn.Module | Path, size_multiple: int) -> str:
    """The weights' part of an int8 cache name: the module's key, or an fp32 ONNX file's hash."""
    if isinstance(model, nn.Module):
        return _module_key(model, size_multiple)
    return file_sha256(model)[:24]


def _load_int8(path: Path, threads: int | None) -> tuple[OnnxGenerator, Int8Report] | None:
    with contextlib.suppress(CheckpointError):  # unreadable (e.g. truncated by a full disk): redo it
        session = OnnxGenerator(path=path, device="cpu", threads=threads)
        report = read_int8_report(session.metadata())
        if report is not None:
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: kept longest by _trim_cache
            return session, report
    return None


def int8_cached(model: nn.Module | Path, *, size_multiple: int, calibration: Calibration,
                threads: int | None = None) -> tuple[OnnxGenerator, Path, Int8Report, bool]:
    """The int8 model of ``model`` (an eager module, or an fp32 ``.onnx`` file) calibrated on
    ``calibration``: from the cache, or quantized, checked and cached first (whatever the check
    says: the caller decides). Returns (session, path, report, quantized_now)."""
    path = cache_dir() / "int8" / f"{_int8_key(model, size_multiple)}-{calibration.digest}.onnx"
    if path.is_file() and (hit := _load_int8(path, threads)) is not None:
        return hit[0], path, hit[1], False
    if isinstance(model, nn.Module):
        _, fp32, _ = onnx_cached(model, size_multiple=size_multiple, threads=threads)
    else:
        fp32 = model
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)  # renamed whole, so a concurrent reader never sees half a model
    try:
        report = quantize_onnx(fp32, tmp, calibration, threads=threads)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _trim_cache(path.parent, keep=path)
    return OnnxGenerator(path=path, device="cpu", threads=threads), path, report, True


def cached_int8(module: nn.Module, *, size_multiple: int, limits: Int8Limits,
                threads: int | None = None) -> tuple[OnnxGenerator, Path, Int8Report] | None:
    """The most recently used cached int8 model of these weights whose check passes ``limits``."""
    folder = cache_dir() / "int8"
    if not folder.is_dir():
        return None
    entries = []
    for p in folder.glob(f"{_module_key(module, size_multiple)}-*.onnx"):
        with contextlib.suppress(OSError):
            entries.append((p.stat().st_mtime, p))
    for _, p in sorted(entries, reverse=True):
        hit = _load_int8(p, threads)
        if hit is not None and hit[1].check.passed(limits):
            return hit[0], p, hit[1]
    return None


def remember_int8(module: nn.Module, *, size_multiple: int, path: Path, digest: str) -> Path:
    """Put an exported int8 model of ``module`` into the cache, where ``auto`` looks for one."""
    dest = cache_dir() / "int8" / f"{_module_key(module, size_multiple)}-{digest}.onnx"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest)
    try:
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _trim_cache(dest.parent, keep=dest)
    return dest


def _calibration(config: Config | None, direction: str, override, size_multiple: int) -> Calibration:
    source = calibration_for(config, direction, override)
    size = config.data.crop_size if config is not None else DEFAULT_CALIBRATION_SIZE
    npz_key = None
    if override is None and config is not None:
        npz_key = config.data.npz_key_a if direction == "a2b" else config.data.npz_key_b
    return load_calibration(source, size=size, size_multiple=size_multiple, npz_key=npz_key)


def int8_runtime(
    model: nn.Module | Path, *, size_multiple: int, config: Config | None, direction: str | None,
    calibration: str | os.PathLike | None = None, limits: Int8Limits = DEFAULT_LIMITS,
                 threads: int | None = None,
) -> tuple[RuntimeChoice, OnnxGenerator]:
    """``--precision int8`` for an eager module or an fp32 ``.onnx`` file: the cached (or newly made)
    int8 model and its choice line; a TranslateError when its check is over ``limits``."""
    cal = _calibration(config, direction or "a2b", calibration, size_multiple)
    session, path, report, created = int8_cached(model, size_multiple=size_multiple, calibration=cal,
                                                 threads=threads)
    failures = report.check.failures(limits)
    if failures:
        raise TranslateError(
            f"{path}: the int8 model is too far from fp32 on {report.check.images} calibration image(s) from "
            f"{cal.source} ({'; '.join(failures)}); translate with --precision auto or fp32"
        )
    how = "quantized and cached" if created else "cached"
    return RuntimeChoice("onnxruntime", "int8", f"{report.check.line()}; {how} at {path}"), session


def export_int8_generator(
    source: str | os.PathLike, *, out: str | os.PathLike, direction: str = "a2b",
    calibration: str | os.PathLike | None = None, limits: Int8Limits = DEFAULT_LIMITS,
                          overwrite: bool = False,
    ema: bool = True, threads: int | None = None,
) -> Int8ExportResult:
    """``cyclegan export --int8``: quantize one generator of ``source`` (run, checkpoint or safetensors
    export), check it against fp32 on the calibration images, write it to ``out`` only if within
    ``limits``, and cache it for ``--precision auto``."""
    loaded = load_any_generator(source, direction=direction, device="cpu", ema=ema)
    if not isinstance(loaded.model, nn.Module) or loaded.kind == "torchscript":
        raise ExportError(f"{source}: export needs the PyTorch weights (a run, checkpoint or safetensors "
                          "export)")
    m = loaded.info.size_multiple
    cal = _calibration(loaded.info.config, loaded.info.direction, calibration, m)
    result = export_int8(loaded.model, out=out, info=loaded.info, calibration=cal, limits=limits,
                         overwrite=overwrite, source=loaded.path, threads=threads)
    with contextlib.suppress(OSError, CycleGANError):  # the export stands even if the cache is unwritable
        remember_int8(loaded.model, size_multiple=m, path=result.path, digest=cal.digest)
    return result


# ------------------------------------------------------------------------------------------- choice


@dataclass(frozen=True)
class RuntimeChoice:
    """What ``choose_runtime`` picked and why (printed by ``cyclegan translate``)."""

    backend: str  # "torch" | "onnxruntime"
    precision: str  # "fp32" | "bf16" | "int8"
    reason: str

    def line(self) -> str:
        return f"{self.backend} {self.precision} ({self.reason})"


def choose_runtime(
    module: nn.Module, device: torch.device, size_multiple: int, *, allow_onnx: bool = True,
    threads: int | None = None,
) -> tuple[RuntimeChoice, Callable[[Tensor], Tensor] | None]:
    """precision="auto": the fastest path within tolerance of fp32 for ``module`` on ``device``.

    Returns the choice and, when it is ONNX Runtime, the session to run (else None: run ``module``
    in PyTorch at ``choice.precision``). ``threads`` goes to the ONNX Runtime session.
    """
    scriptable = not isinstance(module, torch.jit.ScriptModule)
    if allow_onnx and device.type == "cpu" and scriptable and onnx_available():
        found = cached_int8(module, size_multiple=size_multiple, limits=DEFAULT_LIMITS, threads=threads)
        if found is not None:
            session, path, report = found
            return RuntimeChoice("onnxruntime", "int8", f"int8 model checked {report.check.line()}; "
                                                        f"cached at {path}"), session
    if native_bf16(device):
        ok, why = _bf16_within_tolerance(module, device, size_multiple)
        if ok:
            return RuntimeChoice("torch", "bf16", why), None
    else:
        why = f"no native bf16 on {device.type}"
    if not allow_onnx or device.type != "cpu" or isinstance(module, torch.jit.ScriptModule):
        return RuntimeChoice("torch", "fp32", why), None
    if not onnx_available():
        return RuntimeChoice("torch", "fp32", f"{why}; onnxruntime not installed"), None
    try:
        session, path, exported = onnx_cached(module, size_multiple=size_multiple, threads=threads)
    except Exception as e:  # noqa: BLE001 - exporter, onnx and ORT errors have many types; PyTorch still works
        reason = f"{type(e).__name__}: {first_line(e, '')}"
        return RuntimeChoice("torch", "fp32", f"{why}; ONNX Runtime not used: {reason}"), None
    how = "exported and cached" if exported else "cached"
    return RuntimeChoice("onnxruntime", "fp32",
                         f"{why}; ONNX Runtime is faster on CPU, {how} at {path}"), session
