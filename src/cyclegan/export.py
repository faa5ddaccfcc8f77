"""Exported generators: write ONNX, TorchScript or plain safetensors and check them against PyTorch.

Every format holds exactly one generator (one direction) with the calling convention of the PyTorch
module: float [B, 3, H, W] in [-1, 1] -> float [B, 3, H, W] in [-1, 1], H and W multiples of
``size_multiple``. Nothing of the pre/post-processing (uint8 <-> [-1, 1], padding, tiling) is baked
in, so ``translate`` runs every format through the same code path. Each format also records a small
JSON document (``ModelInfo`` keys: format, version, direction, size_multiple, config), which is all a
reader needs to rebuild or drive the generator without flags:

    onnx         one ``.onnx`` file; dynamic batch, height and width; JSON in the model's metadata
                 property ``cyclegan``. Checked against PyTorch with ONNX Runtime after export.
    torchscript  one ``.pt`` file (torch.jit); JSON in the extra file ``cyclegan.json``. Checked too.
    safetensors  a folder with ``generator.safetensors`` (JSON in its header metadata) and the full
                 ``config.json``: the weights without any training state, for sharing a model.

Outputs are written next to their destination under a temporary name and renamed into place only
after the check passed, so a failed export leaves nothing behind and never replaces a good file.
Reading any of them back (and ``ModelInfo`` itself) is ``cyclegan.modelfile``'s job.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cyclegan.checkpoint import record_sha256, sidecar_path, write_sha256_sidecar
from cyclegan.errors import ExportError, first_line
from cyclegan.fileio import save_safetensors_atomic, temp_sibling, write_text_atomic
from cyclegan.modelfile import (
    EXPORTED_WEIGHTS,
    METADATA_KEY,
    TORCHSCRIPT_EXTRA,
    ModelInfo,
    OnnxGenerator,
    load_any_generator,
    load_safetensors_file,
)

__all__ = [
    "EXPORT_FORMATS",
    "PARITY_TOLERANCE",
    "ExportResult",
    "check_destination",
    "export_generator",
    "export_module",
    "max_abs_diff",
    "parity_shapes",
]

EXPORT_FORMATS = ("onnx", "torchscript", "safetensors")
# fp32 kernels of different libraries reorder sums; 1e-3 is 1/8 of one uint8 step in [-1, 1] units
# (2/255 ~ 7.8e-3), so a model within it produces the same 8-bit image up to rare rounding flips.
PARITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    exporter: str  # how it was produced: "dynamo" / "legacy" (ONNX), "script" / "trace", "safetensors"
    max_abs_diff: float  # against the PyTorch generator on random inputs of shapes ``checked``
    checked: tuple[tuple[int, ...], ...]

    def line(self) -> str:
        shapes = ", ".join("x".join(map(str, s)) for s in self.checked)
        return (
            f"wrote {self.path} ({self.format}, {self.exporter}); max abs diff vs PyTorch "
            f"{self.max_abs_diff:.2e} on {shapes} (tolerance {PARITY_TOLERANCE:g})"
        )


# --------------------------------------------------------------------------------------------- parity


def parity_shapes(size_multiple: int) -> tuple[tuple[int, ...], ...]:
    """Two input shapes that differ in batch, height and width (and from the export example)."""
    m = size_multiple
    h = -(-64 // m) * m
    w = -(-96 // m) * m
    return (1, 3, h, w), (2, 3, w + m, h)


def max_abs_diff(
    reference: nn.Module, candidate: Callable[[Tensor], Tensor], shapes, *, seed: int = 0
) -> float:
    """Largest |reference(x) - candidate(x)| over uniform random x in [-1, 1] of each shape."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for shape in shapes:
        x = torch.rand(shape, generator=gen) * 2 - 1  # [B, 3, H, W]
        with torch.inference_mode():
            expected = reference(x).float()
            got = candidate(x).float()
        if got.shape != expected.shape:
            raise ExportError(f"exported model returned shape {list(got.shape)} for {list(shape)}, "
                              f"PyTorch {list(expected.shape)}")
        worst = max(worst, float((got - expected).abs().max()))
    return worst


def _check(diff: float, path: Path, fmt: str) -> None:
    if not diff <= PARITY_TOLERANCE:  # also catches NaN
        raise ExportError(
            f"{path}: {fmt} export disagrees with PyTorch (max abs diff {diff:.3g} > {PARITY_TOLERANCE:g}); "
            "nothing was written"
        )


# ----------------------------------------------------------------------------------------------- writers


def _onnx_export(net: nn.Module, dest: Path, *, size_multiple: int, opset: int | None) -> str:
    """Write ``net`` to ``dest`` as ONNX with dynamic batch/height/width; returns the exporter used."""
    m = size_multiple
    # Batch 2 and 2 multiples per side: torch.export specialises dimensions that are 1 in the example,
    # and instance norm refuses a 1x1 bottleneck.
    example = torch.rand(2, 3, 2 * m, 2 * m) * 2 - 1
    kwargs: dict[str, Any] = {"input_names": ["image"], "output_names": ["translated"]}
    if opset is not None:
        kwargs["opset_version"] = opset
    errors = []
    try:
        batch = torch.export.Dim("batch", min=1)
        height = torch.export.Dim("height", min=2)
        width = torch.export.Dim("width", min=2)
        # The dynamo exporter prints progress (and, when an opset conversion fails, a traceback);
        # keep both streams for the command's own output.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                net, (example,), None, dynamo=True, verbose=False,
                dynamic_shapes=({0: batch, 2: m * height, 3: m * width},), **kwargs,
            )
        import onnx  # the onnx extra

        got = next((o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset is not None and got != opset:
            # The dynamo exporter may not convert down to an old opset; it then keeps its own.
            raise ExportError(f"asked for opset {opset}, the dynamo exporter produced {got}")
        onnx.save(program.model_proto, str(dest))
        return "dynamo"
    except Exception as e:  # noqa: BLE001 - fall back to the TorchScript-based exporter below
        errors.append(f"dynamo: {type(e).__name__}: {first_line(e, '')}")
    try:
        axes = {0: "batch", 2: "height", 3: "width"}
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net, (example,), str(dest), dynamo=False,
                dynamic_axes={"image": axes, "translated": axes}, **kwargs,
            )
        return "legacy"
    except Exception as e:  # noqa: BLE001
        errors.append(f"legacy: {type(e).__name__}: {first_line(e, '')}")
    raise ExportError(f"{dest}: ONNX export failed ({'; '.join(errors)})")


def _write_onnx(net: nn.Module, tmp: Path, info: ModelInfo, opset: int | None) -> tuple[str, float, tuple]:
    try:
        import onnx  # the onnx extra
    except ImportError:
        raise ExportError("ONNX export needs onnx and onnxruntime (pip install 'cyclegan[onnx]')") from None
    exporter = _onnx_export(net, tmp, size_multiple=info.size_multiple, opset=opset)
    model = onnx.load(str(tmp))
    onnx.helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    model.doc_string = (
        f"cyclegan {info.direction} generator: float image [batch, 3, height, width] in [-1, 1] -> same; "
        f"height and width multiples of {info.size_multiple}"
    )
    onnx.save(model, str(tmp))
    shapes = parity_shapes(info.size_multiple)
    diff = max_abs_diff(net, OnnxGenerator(path=tmp, device="cpu"), shapes)
    return exporter, diff, shapes


def _write_torchscript(net: nn.Module, tmp: Path, info: ModelInfo) -> tuple[str, float, tuple]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still supported
        # The trace records instance norm's size check as a constant; the parity check below runs
        # other shapes, so a trace that did not generalise would fail there.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            # Scripting keeps the module's control flow; tracing is the fallback for code it rejects.
            scripted, how = torch.jit.script(net), "script"
        except Exception:  # noqa: BLE001
            m = info.size_multiple
            scripted, how = torch.jit.trace(net, torch.rand(1, 3, 2 * m, 2 * m) * 2 - 1), "trace"
        torch.jit.save(scripted, str(tmp), _extra_files={TORCHSCRIPT_EXTRA: info.to_json()})
        loaded = torch.jit.load(str(tmp), map_location="cpu")
    shapes = parity_shapes(info.size_multiple)
    return how, max_abs_diff(net, loaded.eval(), shapes), shapes


def _write_safetensors(net: nn.Module, tmp: Path, info: ModelInfo) -> tuple[str, float, tuple]:
    tmp.mkdir()
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    # Not safetensors' save_file: it creates the file 0600, and an export is made to be shared.
    save_safetensors_atomic(weights, tmp / EXPORTED_WEIGHTS, metadata={METADATA_KEY: info.to_json()})
    assert info.config is not None
    write_text_atomic(tmp / "config.json", info.config.to_json())
    # The export carries its own hashes (meta.json), checked by load_weights like a checkpoint's.
    record_sha256(tmp, (EXPORTED_WEIGHTS, "config.json"))
    loaded, _ = load_safetensors_file(tmp / EXPORTED_WEIGHTS, torch.device("cpu"))
    shapes = parity_shapes(info.size_multiple)
    return "safetensors", max_abs_diff(net, loaded, shapes), shapes


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def check_destination(dest: Path, fmt: str, source: Path | None, overwrite: bool) -> None:
    """Refuse a destination that is the source (or inside it), exists without ``overwrite``, or is a
    folder that is not one of our exports; shared with the int8 export (cyclegan.quantize)."""
    if source is not None:
        src, target = source.resolve(), dest.resolve()
        if target == src or src in target.parents or target in src.parents:
            raise ExportError(f"{dest}: would overwrite the model it is exported from; choose another --out")
    if not dest.exists() and not dest.is_symlink():
        return
    if not overwrite:
        raise ExportError(f"{dest}: already exists; pass --overwrite to replace it")
    if fmt == "safetensors":
        # Replacing a folder is only safe if it is one of our exports; never delete a user's folder.
        if not dest.is_dir() or {p.name for p in dest.iterdir()} - {EXPORTED_WEIGHTS, "config.json",
                                                                    "meta.json"}:
            raise ExportError(f"{dest}: exists and is not a cyclegan safetensors export; refusing to replace "
                              "it")
    elif dest.is_dir():
        raise ExportError(f"{dest}: is a folder; give a file name for the {fmt} export")


def export_generator(
    source: str | Path,
    *,
    fmt: str,
    out: str | Path,
    direction: str = "a2b",
    overwrite: bool = False,
    opset: int | None = None,
    ema: bool = True,
) -> ExportResult:
    """Export one generator of ``source`` (run/checkpoint folder or an exported model) as ``fmt``.

    The exported model is run on random inputs and compared with the PyTorch generator; above
    ``PARITY_TOLERANCE`` this raises ExportError and nothing is written.
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"--format {fmt!r}: choose from {', '.join(EXPORT_FORMATS)}")
    loaded = load_any_generator(source, direction=direction, device="cpu", ema=ema)
    if not isinstance(loaded.model, nn.Module) or loaded.kind == "torchscript":
        raise ExportError(f"{source}: export needs the PyTorch weights (a run, checkpoint or safetensors "
                          "export)")
    return export_module(
        loaded.model, fmt=fmt, out=out, info=loaded.info, overwrite=overwrite, opset=opset, source=loaded.path
    )


def export_module(
    net: nn.Module,
    *,
    fmt: str,
    out: str | Path,
    info: ModelInfo,
    overwrite: bool = False,
    opset: int | None = None,
    source: Path | None = None,
) -> ExportResult:
    """Export an eager generator module as ``fmt`` to ``out``, check it, and rename it into place.

    ``info`` is recorded in the file (safetensors needs ``info.config`` to be rebuildable);
    ``source``, when given, is protected from being overwritten.
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"--format {fmt!r}: choose from {', '.join(EXPORT_FORMATS)}")
    if fmt == "safetensors" and info.config is None:
        raise ExportError(f"{out}: a safetensors export needs the model's config to be rebuildable")
    dest = Path(out)
    # translate --model and Translator.from_checkpoint pick the loader by extension.
    expected = {"onnx": (".onnx",), "torchscript": (".pt", ".pth")}.get(fmt)
    if expected and dest.suffix.lower() not in expected:
        raise ExportError(f"{dest}: a {fmt} export must end in {' or '.join(expected)} so it loads as {fmt}")
    net = net.eval()
    check_destination(dest, fmt, source, overwrite)
    info = ModelInfo(direction=info.direction, size_multiple=info.size_multiple, config=info.config,
                     format=fmt)
    if dest.parent != Path(""):
        dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest)
    try:
        if fmt == "onnx":
            exporter, diff, shapes = _write_onnx(net, tmp, info, opset)
        elif fmt == "torchscript":
            exporter, diff, shapes = _write_torchscript(net, tmp, info)
        else:
            exporter, diff, shapes = _write_safetensors(net, tmp, info)
        _check(diff, dest, fmt)
        if dest.is_dir():  # os.replace swaps files atomically but cannot replace a non-empty folder
            _remove(dest)
        # A single file carries its hash beside it; the old one goes first, so a kill between the
        # two renames leaves a file without a checksum (loaded unchecked), never a wrong checksum.
        sidecar_path(dest).unlink(missing_ok=True)
        os.replace(tmp, dest)
    except BaseException:
        _remove(tmp)
        raise
    if fmt != "safetensors":
        write_sha256_sidecar(dest)
    return ExportResult(path=dest, format=fmt, exporter=exporter, max_abs_diff=diff, checked=tuple(shapes))
