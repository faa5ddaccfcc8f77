"""Import format ``onnx``: someone else's image-to-image ONNX generator (AnimeGANv3's
``AnimeGANv3_Hayao_36.onnx``, ...) with its input convention, as a model folder that runs like ours.

The file is read without running anything of it (``onnx.load`` without external data), checked
(one float image input of rank 4 with 3 channels where ``layout`` puts them, any height and width,
one output; every initializer's declared size matching its bytes, none stored outside the file),
run by ONNX Runtime on three deterministic probe images (a photo-like scene, a gradient, noise),
and converted to PyTorch with onnx2torch (opset upgraded first by onnx's version converter, which
turns opset 9's ``Upsample`` into ``Resize``). The conversion must reproduce ONNX Runtime within
``MAX_LEVELS`` 8-bit levels on every probe, else the conversion is refused; a graph whose conversion
is refused or impossible is kept for ONNX Runtime alone (inference only: translate, serve, int8; training
and distillation refuse it), and the result line says why.

The folder holds ``foreign.onnx`` (the file as given), ``generator.onnx`` (the same graph between
nodes that apply the convention, so ONNX Runtime takes our tensors: what ``--precision auto/int8``
and the fallback run) and ``foreign.json`` (the convention, the backend, hashes, provenance):
every later command rebuilds the generator from these with no flags
(``cyclegan.modelfile.load_any_generator``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cyclegan.checkpoint import file_sha256
from cyclegan.errors import first_line
from cyclegan.fileio import write_bytes_atomic, write_json_atomic
from cyclegan.importers.common import IMPORT_FORMATS, Converted, ForeignWeightsError, one_file
from cyclegan.modelfile import FOREIGN_GRAPH, FOREIGN_INFO, FOREIGN_WRAPPED, METADATA_KEY, ModelInfo
from cyclegan.networks.foreign import (
    ForeignGenerator,
    OnnxConvention,
    convert_onnx_graph,
    from_model_range,
    to_model_range_of,
    wrap_onnx_graph,
)
from cyclegan.synthetic import make_scene
from cyclegan.version import __version__

FORMAT = "onnx"
MAX_LEVELS = 1  # a conversion may differ from ONNX Runtime by at most this many 8-bit levels
MAX_FILE_BYTES = 2**31 - 1  # protobuf's own limit for one message
PROBE_MIN_SIDE = 64
# TensorProto dtypes
_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


@dataclass(frozen=True)
class OnnxImportOptions:
    """What ``import onnx`` needs besides the file: the publisher's convention, and whether to try
    PyTorch (``convert=False`` keeps the graph for ONNX Runtime alone, inference only)."""

    convention: OnnxConvention
    convert: bool = True


@dataclass
class _Graph:
    model: Any  # onnx.ModelProto
    data: bytes
    input_name: str
    output_name: str


# ------------------------------------------------------------------------------------------- reading


def _read(path: Path, convention: OnnxConvention) -> _Graph:
    if not path.exists():
        raise ForeignWeightsError(f"{path}: no such file")
    if not path.is_file():
        raise ForeignWeightsError(f"{path}: not a file; give the .onnx file itself")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ForeignWeightsError(f"{path}: larger than 2 GiB, the most one ONNX file can hold")
    try:
        import onnx  # the onnx extra
        import onnxruntime  # noqa: F401 - the onnx extra: every import is checked against it
    except ImportError:
        raise ForeignWeightsError(f"{path}: importing ONNX models needs onnx, onnxruntime and onnx2torch "
                                  "(pip install 'cyclegan[onnx]')") from None
    data = path.read_bytes()
    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others for junk
        raise ForeignWeightsError(f"{path}: not an ONNX model ({type(e).__name__}: "
                                  f"{first_line(e, 'unreadable')})") \
            from None
    if not model.graph.node:
        raise ForeignWeightsError(f"{path}: not an ONNX model (no graph nodes)")
    _check_initializers(path, model)
    name_in, name_out = _check_io(path, model, convention)
    return _Graph(model=model, data=data, input_name=name_in, output_name=name_out)


def _check_initializers(path: Path, model: Any) -> None:
    """Every weight inside the file, of the size its dims declare: a file declaring more than it
    holds, or pointing at other files (external data: any path on this machine), is refused before
    ONNX Runtime or onnx2torch allocate anything for it."""
    if _sparse(model.graph):
        raise ForeignWeightsError(f"{path}: holds sparse initializers, which are densified to their declared "
                                  "size when loaded; not imported")
    for t in _tensors(model.graph):
        if t.data_location == 1 or t.external_data:
            raise ForeignWeightsError(f"{path}: initializer {t.name!r} keeps its data in another file; only "
                                      "self-contained .onnx files are imported")
        count = 1
        for d in t.dims:
            if d < 0:
                raise ForeignWeightsError(f"{path}: initializer {t.name!r} declares a negative dimension {d}")
            count *= d
        if count * _ITEM_BYTES.get(t.data_type, 1) > MAX_FILE_BYTES:
            raise ForeignWeightsError(f"{path}: initializer {t.name!r} declares {list(t.dims)} values, more "
                                      "than any ONNX file can hold")
        held = (len(t.raw_data) // _ITEM_BYTES.get(t.data_type, 1) if t.raw_data else
                len(t.float_data) + len(t.int32_data) + len(t.int64_data) + len(t.double_data)
                + len(t.uint64_data) + len(t.string_data))
        if t.data_type in (10, 16) and not t.raw_data:  # fp16/bf16 in int32_data, one value each
            held = len(t.int32_data)
        if held != count:
            raise ForeignWeightsError(f"{path}: initializer {t.name!r} declares {list(t.dims)} ({count} "
                                      f"values) but holds {held}")


def _graphs(graph: Any):
    """``graph`` and every subgraph of its nodes (If / Loop / Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for sub in subgraphs:
                yield from _graphs(sub)


def _tensors(graph: Any):
    """Every stored tensor: initializers and node attributes (Constant values), subgraphs included."""
    for g in _graphs(graph):
        yield from g.initializer
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors


def _sparse(graph: Any) -> bool:
    return any(g.sparse_initializer or any(a.HasField("sparse_tensor") or a.sparse_tensors
                                           for n in g.node for a in n.attribute) for g in _graphs(graph))


def _dims(value_info: Any) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def _check_io(path: Path, model: Any, convention: OnnxConvention) -> tuple[str, str]:
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]  # IR < 4 lists weights as inputs
    outputs = list(model.graph.output)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ForeignWeightsError(f"{path}: expected one input image and one output, found {len(inputs)} "
                                  f"input(s) ({', '.join(i.name for i in inputs) or 'none'}) and "
                                  f"{len(outputs)} "
                                  "output(s)")
    (inp,), (out,) = inputs, outputs
    if inp.type.tensor_type.elem_type != 1:  # FLOAT
        raise ForeignWeightsError(f"{path}: input {inp.name!r} is not float32")
    dims = _dims(inp)
    if not inp.type.tensor_type.HasField("shape") or len(dims) != 4:
        raise ForeignWeightsError(f"{path}: input {inp.name!r} has shape {dims or 'unknown'}, expected an "
                                  "image "
                                  f"batch of rank 4 ({convention.layout.upper()})")
    axis = convention.channel_axis
    if dims[axis] != 3:
        spatial = [dims[1], dims[2], dims[3]]
        hint = " (is it NCHW? pass --layout nchw)" if axis == 3 and dims[1] == 3 else (
            " (is it NHWC? pass --layout nhwc)" if axis == 1 and dims[3] == 3 else "")
        raise ForeignWeightsError(f"{path}: input {inp.name!r} has shape {dims}: its channel dimension "
                                  f"({convention.layout}) is {spatial[0] if axis == 1 else dims[3]}, "
                                  f"expected 3{hint}")
    hw = [dims[1], dims[2]] if axis == 3 else [dims[2], dims[3]]
    if all(isinstance(d, int) and d > 0 for d in hw):
        raise ForeignWeightsError(f"{path}: input {inp.name!r} is fixed at {hw[0]}x{hw[1]} pixels; only "
                                  "graphs taking any height and width can translate whole images")
    return inp.name, out.name


# ------------------------------------------------------------------------------------------- probing


def probe_images(convention: OnnxConvention) -> list[torch.Tensor]:
    """Three deterministic probes, ours ([1, 3, H, W] in [-1, 1]): a photo-like scene, a gradient,
    noise; at least the minimum side, one multiple wider than high (a swapped H and W shows)."""
    m = convention.multiple
    h = max(convention.min_side, m * -(-PROBE_MIN_SIDE // m))
    w = h + m
    rng = np.random.default_rng(0)
    scene = make_scene(rng, w, "photo")[:h]  # [H, W, 3] uint8
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.linspace(0.2, 1, h,
                                                                                 dtype=np.float32)[:, None,
                                                                                                              None]
    gradient = np.concatenate([ramp, ramp[:, ::-1], np.full_like(ramp, 128)], axis=2).astype(np.uint8)
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return [torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 127.5 - 1
            for a in (scene, gradient, noise)]


class _Session:
    """An ONNX Runtime session over bytes in memory, for one input and one output."""

    def __init__(self, path: Path, data: bytes, input_name: str, output_name: str) -> None:
        import onnxruntime as ort  # the onnx extra

        try:
            self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad graphs
            raise ForeignWeightsError(f"{path}: ONNX Runtime cannot load it "
                                      f"({first_line(e, type(e).__name__)})") \
                from None
        self.path, self.input_name, self.output_name = path, input_name, output_name

    def run(self, x: torch.Tensor) -> torch.Tensor:
        try:
            (y,) = self.session.run([self.output_name], {self.input_name: x.numpy()})
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for failed runs
            raise ForeignWeightsError(f"{self.path}: ONNX Runtime fails on a {list(x.shape)} probe "
                                      f"({first_line(e, type(e).__name__)})") from None
        return torch.from_numpy(np.asarray(y, dtype=np.float32))


class WrappedOnnxGenerator:
    """The wrapped graph in memory behind the generator convention: what the fallback folder runs."""

    def __init__(self, session: _Session, convention: OnnxConvention) -> None:
        self.session = session
        self.size_multiple = convention.multiple
        self.min_side = convention.min_side

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # [B, 3, H, W] in [-1, 1] -> same
        return self.session.run(x.detach().cpu().float().contiguous())


def _reference(path: Path, graph: _Graph, convention: OnnxConvention, probes: list[torch.Tensor]) -> list:
    session = _Session(path, graph.data, graph.input_name, graph.output_name)
    outs = []
    for x in probes:
        xf = to_model_range_of(x, convention)
        y = session.run(xf)
        if tuple(y.shape) != tuple(xf.shape):
            raise ForeignWeightsError(f"{path}: on a {list(xf.shape)} probe the output is {list(y.shape)}, "
                                      "not an image of the input's size; only image-to-image generators are "
                                      "imported")
        if not bool(torch.isfinite(y).all()):
            raise ForeignWeightsError(f"{path}: its output holds NaN or infinity on a probe image")
        outs.append(from_model_range(y, convention))
    return outs


def _worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The largest difference between two lists of outputs (ours, [-1, 1]) in 8-bit levels (not rounded:
    a difference of 0.001 level can still flip one rounded pixel)."""
    worst = 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return float("inf")
        diff = float(((x.double() - y.double()).abs() * 127.5).max())
        worst = max(worst, diff if math.isfinite(diff) else float("inf"))  # NaN counts as unbounded
    return worst


def _convert(path: Path, graph: _Graph, convention: OnnxConvention, probes, reference) -> tuple[Any,
                                                                                                float | str]:
    """The PyTorch generator and its worst level difference, or (None, why it cannot be converted)."""
    try:
        net = ForeignGenerator(net=convert_onnx_graph(graph.model), convention=convention).eval()
        with torch.inference_mode():
            got = [net(x) for x in probes]
    except Exception as e:  # noqa: BLE001 - onnx's version converter and onnx2torch raise many types
        return None, f"{type(e).__name__}: {first_line(e, 'no detail')}"
    return net, _worst(reference, got)


# ------------------------------------------------------------------------------------------- the format


@IMPORT_FORMATS.register(FORMAT, options=OnnxImportOptions)
def convert(paths: Sequence[Path], *, options: OnnxImportOptions) -> Converted:
    path = one_file(paths, FORMAT, "the .onnx file")
    conv = options.convention
    graph = _read(path, conv)
    probes = probe_images(conv)
    reference = _reference(path, graph, conv, probes)
    net, outcome = _convert(path, graph, conv, probes, reference) if options.convert else (None,
                                                                                           "not asked for")
    if net is not None and isinstance(outcome, float) and not outcome <= MAX_LEVELS:
        # Refused: a conversion that changes the pictures is worse than none. ONNX Runtime still runs the
        # file.
        net, outcome = None, (f"refused: it differs from ONNX Runtime by {outcome:.3g} levels on the probe "
                              f"images, at most {MAX_LEVELS} allowed")
    try:
        wrapped = wrap_onnx_graph(graph.model, conv, input_name=graph.input_name,
                                  output_name=graph.output_name)
    except Exception as e:  # noqa: BLE001 - onnx's converter, composer and checker raise many types
        raise ForeignWeightsError(f"{path}: cannot put its convention around the graph "
                                  f"({type(e).__name__}: {first_line(e, 'no detail')})") from None
    info = ModelInfo(direction="a2b", size_multiple=conv.multiple, config=None, format="onnx-import")
    entry = wrapped.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    wrapped_bytes = wrapped.SerializeToString()
    runner = WrappedOnnxGenerator(_Session(path, wrapped_bytes, "image", "translated"), conv)
    # a bug of ours, not the user's
    if not (drift := _worst(reference, [runner(x) for x in probes])) <= MAX_LEVELS:
        raise RuntimeError(f"{path}: the wrapped ONNX graph differs from the original by {drift} levels")
    backend = "torch" if net is not None else "onnxruntime"
    record = {
        "format": FORMAT,
        "version": __version__,
        "convention": conv.to_dict(),
        "backend": backend,
        "input": graph.input_name,
        "output": graph.output_name,
        "opset": next((o.version for o in graph.model.opset_import if o.domain in ("", "ai.onnx")), None),
        "max_level_diff": outcome if net is not None else None,
        "not_converted": None if net is not None else outcome,
    }
    where = f"{conv.layout.upper()} {conv.channels.upper()} in [{conv.value_range}], sides multiples of " \
            f"{conv.multiple}" + (f", at least {conv.min_side}" if conv.min_side else "")
    if net is not None:
        how = (f"; PyTorch conversion (onnx2torch) within {outcome:.2g} 8-bit levels of ONNX Runtime on "
               f"{len(probes)} probe images")
    else:
        how = f"; not converted to PyTorch ({outcome}): runs with ONNX Runtime, inference only"

    def write(folder: Path, provenance: dict) -> None:
        folder.mkdir(parents=True, exist_ok=False)
        write_bytes_atomic(folder / FOREIGN_GRAPH, graph.data)
        write_bytes_atomic(folder / FOREIGN_WRAPPED, wrapped_bytes)
        files = {name: file_sha256(folder / name) for name in (FOREIGN_GRAPH, FOREIGN_WRAPPED)}
        write_json_atomic(folder / FOREIGN_INFO, record | {"sha256": files, "imported": provenance})

    return Converted(config=None, generators={"a2b": net if net is not None else runner},
                     architecture=f"ONNX generator {path.name} ({where})", write=write,
                     folder="foreign ONNX model folder", note=how.lstrip("; "))


def describe(folder: Path) -> dict:
    """The foreign.json of an imported folder (for tools and tests)."""
    return json.loads((folder / FOREIGN_INFO).read_text())

