"""Generators defined by someone else's ONNX graph, behind our calling convention.

A foreign image-to-image ONNX model (AnimeGANv3's ``AnimeGANv3_Hayao_36.onnx``, ...) takes images in
its publisher's convention: a layout (NHWC or NCHW), a value range ([-1, 1] or [0, 1]), a channel
order (RGB or BGR), sides that are multiples of some number and at least some minimum. An
``OnnxConvention`` records these; ``ForeignGenerator`` wraps the graph, converted to PyTorch with
``onnx2torch`` (``convert_onnx_graph``), so that it takes and returns our tensors (float
[B, 3, H, W] in [-1, 1], RGB) like every generator of ``cyclegan.networks``: it trains, distils,
exports and tiles like one. ``wrap_onnx_graph`` does the same inside ONNX itself, for graphs that
cannot be converted (then ONNX Runtime runs them, for inference only).

``onnx`` and ``onnx2torch`` are optional (the onnx extra) and imported where used.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyclegan.errors import CheckpointError, ExportError

__all__ = [
    "CHANNELS",
    "LAYOUTS",
    "VALUE_RANGES",
    "AsymmetricLinearResize",
    "ConventionError",
    "ForeignGenerator",
    "OnnxConvention",
    "convert_onnx_graph",
    "from_model_range",
    "to_model_range_of",
    "wrap_onnx_graph",
]

LAYOUTS = ("nhwc", "nchw")
VALUE_RANGES = ("-1,1", "0,1")
CHANNELS = ("rgb", "bgr")
MAX_MULTIPLE = 1024
MAX_MIN_SIDE = 8192
# onnx2torch converts opset 9's Upsample only after onnx's version converter rewrites it as Resize.
CONVERT_OPSET = 13


class ConventionError(CheckpointError):
    """A convention value out of its choices; ``parameter`` names the OnnxConvention field."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class OnnxConvention:
    """How a foreign graph wants its images: checked on construction, stored in the model folder."""

    layout: str  # nhwc | nchw: where the 3 channels sit
    value_range: str  # "-1,1" | "0,1": what black and white are, in and out
    channels: str  # rgb | bgr
    multiple: int  # both sides a multiple of this (AnimeGANv3: 8)
    min_side: int = 0  # both sides at least this (AnimeGANv3: 256); smaller images are padded

    def __post_init__(self) -> None:
        for name, choices in (("layout", LAYOUTS), ("value_range", VALUE_RANGES), ("channels", CHANNELS)):
            if getattr(self, name) not in choices:
                raise ConventionError(name,
                                      f"{name} {getattr(self, name)!r}: choose from {', '.join(choices)}")
        for name, top in (("multiple", MAX_MULTIPLE), ("min_side", MAX_MIN_SIDE)):
            value = getattr(self, name)
            low = 1 if name == "multiple" else 0
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= top:
                raise ConventionError(name, f"{name} {value!r}: expected a whole number from {low} to {top}")
        if self.min_side % self.multiple:
            raise ConventionError("min_side",
                                  f"min_side {self.min_side} is not a multiple of multiple {self.multiple}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Any) -> OnnxConvention:
        if not isinstance(doc, dict) or set(doc) - {"layout", "value_range", "channels", "multiple",
                                                    "min_side"}:
            raise ConventionError("convention", f"not an ONNX convention: {str(doc)[:80]}")
        try:
            return cls(**doc)
        except TypeError as e:
            raise ConventionError("convention", f"incomplete ONNX convention ({e})") from None

    @property
    def channel_axis(self) -> int:
        return 3 if self.layout == "nhwc" else 1

    @property
    def levels_per_unit(self) -> float:
        """8-bit levels per unit of the graph's output (its range spans 255 levels)."""
        return 127.5 if self.value_range == "-1,1" else 255.0


def to_model_range_of(x: Tensor, convention: OnnxConvention) -> Tensor:
    """Ours ([B, 3, H, W], [-1, 1], RGB) -> the graph's input convention."""
    if convention.channels == "bgr":
        x = x.flip(1)
    if convention.value_range == "0,1":
        x = (x + 1.0) * 0.5
    if convention.layout == "nhwc":
        x = x.permute(0, 2, 3, 1)  # [B, H, W, 3]
    return x.contiguous()


def from_model_range(y: Tensor, convention: OnnxConvention) -> Tensor:
    """The graph's output convention -> ours ([B, 3, H, W], [-1, 1], RGB)."""
    if convention.layout == "nhwc":
        y = y.permute(0, 3, 1, 2)
    if convention.value_range == "0,1":
        y = y * 2.0 - 1.0
    if convention.channels == "bgr":
        y = y.flip(1)
    return y.contiguous()


def min_side_padding(h: int, w: int, min_side: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) edge padding that brings an H x W image to at least ``min_side``."""
    ph, pw = max(0, min_side - h), max(0, min_side - w)
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


class ForeignGenerator(nn.Module):
    """A converted foreign graph (``net``) taking and returning our tensors.

    ``size_multiple`` is read by translate, export and distillation as for our generators;
    ``min_side`` says the graph wants at least that many pixels per side: smaller inputs are padded
    here (edge pixels repeated, as the ONNX graph of ``wrap_onnx_graph`` does) and cropped back.
    """

    def __init__(self, *, net: nn.Module, convention: OnnxConvention) -> None:
        super().__init__()
        self.net = net
        self.convention = convention
        self.size_multiple = convention.multiple
        self.min_side = convention.min_side

    def forward(self, x: Tensor) -> Tensor:
        # [B, 3, H, W] in [-1, 1] RGB -> [B, 3, H, W] in [-1, 1] RGB
        if self.min_side and torch.jit.is_tracing():
            # The tracer would freeze the padding at the example's size: wrong for every other size.
            raise ExportError("tracing cannot keep the minimum-side padding of an imported ONNX model; its "
                              "folder's generator.onnx is the model as ONNX already")
        h, w = x.shape[-2:]
        left, right, top, bottom = min_side_padding(h, w, self.min_side)
        if left or right or top or bottom:
            x = F.pad(x, (left, right, top, bottom), mode="replicate")
        y = from_model_range(self.net(to_model_range_of(x, self.convention)), self.convention)
        return y[:, :, top : top + h, left : left + w]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.convention.to_dict().items())


# ------------------------------------------------------------------------------------------- graphs


def opset_of(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgraded(model: Any, opset: int = CONVERT_OPSET) -> Any:
    """``model`` (an onnx ModelProto) at ``opset`` or above: older graphs go through onnx's version
    converter (opset 9's Upsample becomes Resize); newer ones are returned as they are."""
    if opset_of(model) >= opset:
        return model
    from onnx import version_converter  # the onnx extra

    return version_converter.convert_version(model, opset)


def convert_onnx_graph(model: Any) -> nn.Module:
    """An onnx ModelProto -> a PyTorch module computing the same graph (``onnx2torch``), opset
    upgraded first and ``auto_pad`` SAME written out (``explicit_same_padding``). Raises whatever
    onnx's converter or onnx2torch raise for what they cannot do."""
    from onnx2torch import convert  # the onnx extra

    with warnings.catch_warnings(), _asymmetric_resize_converter():
        # onnx2torch warns where PyTorch's resize may differ from ONNX's; the import checks the result
        # against ONNX Runtime instead.
        warnings.simplefilter("ignore", UserWarning)
        net = convert(explicit_same_padding(upgraded(model))).eval()
    # Raised on every Slice forward by onnx2torch's indexing with a list (its code, not ours).
    warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
    _own_storage(net)
    return net


def _own_storage(net: nn.Module) -> None:
    """Give every parameter and buffer a fresh, dense buffer: onnx2torch keeps some constants as
    broadcast views or empty tensors with stride 0, which code hashing the weights byte by byte cannot
    read."""
    with torch.no_grad():
        for module in net.modules():
            for table in (module._parameters, module._buffers):
                for name, t in table.items():
                    if t is not None and (0 in t.stride() or not t.is_contiguous()):
                        fresh = torch.empty(t.shape, dtype=t.dtype).copy_(t)
                        table[name] = nn.Parameter(fresh, requires_grad=t.requires_grad) \
                            if isinstance(t, nn.Parameter) else fresh


class AsymmetricLinearResize(nn.Module):
    """ONNX ``Resize`` in mode linear with coordinate_transformation_mode asymmetric: what tf2onnx writes
    for TensorFlow 1's ``tf.image.resize_images`` / ``resize_bilinear`` defaults (AnimeGANv3's
    upsampling, net/generator.py). Output pixel j reads input position j / scale, its neighbours
    clamped to the border; PyTorch's interpolate has no such mode (onnx2torch maps it to half-pixel)."""

    def forward(self, x: Tensor, roi: Tensor | None = None, scales: Tensor | None = None,
                sizes: Tensor | None = None) -> Tensor:
        # [B, C, H, W] -> [B, C, H', W'], one spatial axis at a time
        for axis in range(2, x.dim()):
            n = x.shape[axis]
            if sizes is not None and sizes.numel():
                out = int(sizes[axis])
                scale = out / n
            else:
                scale = float(scales[axis])
                out = int(n * scale)
            pos = torch.arange(out, device=x.device, dtype=torch.float32) / scale
            low = pos.floor().clamp(max=n - 1)
            weight = (pos - low).clamp(0, 1)
            i0 = low.long()
            i1 = (i0 + 1).clamp(max=n - 1)
            shape = [1] * x.dim()
            shape[axis] = out
            a, b = x.index_select(axis, i0), x.index_select(axis, i1)
            x = a + (b - a) * weight.view(shape).to(x.dtype)
        return x


@contextlib.contextmanager
def _asymmetric_resize_converter():
    """onnx2torch's Resize converters, with linear-asymmetric resizes given to ``AsymmetricLinearResize``,
    for the time of one conversion (onnx2torch has no public way to override one converter)."""
    from onnx2torch.node_converters import registry  # the onnx extra
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node  # the onnx extra

    keys = [k for k in registry._CONVERTER_REGISTRY if k.operation_type == "Resize" and k.version >= 11]
    originals = {k: registry._CONVERTER_REGISTRY[k] for k in keys}

    def wrap(original):
        def convert(node, graph):
            attrs = node.attributes
            if attrs.get("mode") == "linear" and attrs.get("coordinate_transformation_mode") == "asymmetric":
                return OperationConverterResult(torch_module=AsymmetricLinearResize(),
                                                onnx_mapping=onnx_mapping_from_node(node))
            return original(node, graph)

        return convert

    try:
        for k, original in originals.items():
            registry._CONVERTER_REGISTRY[k] = wrap(original)
        yield
    finally:
        registry._CONVERTER_REGISTRY.update(originals)


def explicit_same_padding(model: Any) -> Any:
    """A copy of ``model`` whose convolutions and pools with ``auto_pad`` SAME_UPPER / SAME_LOWER (what
    tf2onnx writes for TensorFlow's padding="SAME" when the sides are unknown; onnx2torch refuses it)
    carry explicit ``pads`` instead.

    SAME pads a side of length n by (ceil(n / s) - 1) * s + k_eff - n in all, which is k_eff - s when n
    is a multiple of the stride s: true here wherever the graph downsamples no further than the
    convention's multiple, and checked against ONNX Runtime on probes whose sides are odd multiples
    of it, so a graph where it is false is caught at import.
    """
    from onnx import helper  # the onnx extra

    out = type(model)()
    out.CopyFrom(model)
    weights = {t.name: list(t.dims) for t in out.graph.initializer}
    for node in out.graph.node:
        if node.op_type not in ("Conv", "MaxPool", "AveragePool", "LpPool"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode not in ("SAME_UPPER", "SAME_LOWER"):
            continue
        kernel = attrs.get("kernel_shape") or (weights.get(node.input[1],
                                                           [])[2:] if len(node.input) > 1 else [])
        if not kernel:
            continue  # unknown kernel: left for onnx2torch to refuse
        strides = attrs.get("strides") or [1] * len(kernel)
        dilations = attrs.get("dilations") or [1] * len(kernel)
        begin, end = [], []
        for k, s, d in zip(kernel, strides, dilations):
            total = max((k - 1) * d + 1 - s, 0)
            first = total // 2 if mode == "SAME_UPPER" else total - total // 2
            begin.append(first)
            end.append(total - first)
        kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.append(helper.make_attribute("pads", begin + end))
    return out


def wrap_onnx_graph(model: Any, convention: OnnxConvention, *, input_name: str, output_name: str) -> Any:
    """A ModelProto taking and returning our tensors ("image" [B, 3, H, W] in [-1, 1], RGB ->
    "translated", same), made of ``model`` (opset upgraded) between ONNX nodes that apply
    ``convention``: the minimum side (edge padding, cropped back), channel order, range and layout."""
    import onnx  # the onnx extra
    from onnx import TensorProto, compose, helper, numpy_helper

    core = upgraded(model)
    opset = max(opset_of(core), CONVERT_OPSET)
    core = compose.add_prefix(core, "foreign/")

    def const(name: str, values, dtype=np.int64):
        return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)

    nodes = [
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Slice", ["shape", "two", "four"], ["hw"]),
        helper.make_node("Sub", ["min_side", "hw"], ["short"]),
        helper.make_node("Max", ["short", "zero2"], ["need"]),
        helper.make_node("Div", ["need", "two2"], ["before"]),
        helper.make_node("Sub", ["need", "before"], ["after"]),
        helper.make_node("Concat", ["zero2", "before", "zero2", "after"], ["pads"], axis=0),
        helper.make_node("Pad", ["image", "pads"], ["padded"], mode="edge"),
    ]
    x = "padded"
    if convention.channels == "bgr":
        nodes.append(helper.make_node("Gather", [x, "reverse"], ["flipped"], axis=1))
        x = "flipped"
    if convention.value_range == "0,1":
        nodes += [helper.make_node("Add", [x, "one_f"], ["shifted"]),
                  helper.make_node("Mul", ["shifted", "half_f"], ["unit"])]
        x = "unit"
    if convention.layout == "nhwc":
        nodes.append(helper.make_node("Transpose", [x], ["nhwc"], perm=[0, 2, 3, 1]))
        x = "nhwc"
    nodes.append(helper.make_node("Identity", [x], ["to_foreign"]))
    inits = [const("two", [2]), const("four", [4]), const("min_side", [convention.min_side] * 2),
             const("zero2", [0, 0]), const("two2", [2, 2]), const("reverse", [2, 1, 0]),
             const("one_f", 1.0, np.float32), const("half_f", 0.5, np.float32)]
    dims = ["batch", 3, "height", "width"]
    pre = helper.make_model(
        helper.make_graph(nodes, "to_foreign",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info("to_foreign", TensorProto.FLOAT, None)], inits),
        opset_imports=[helper.make_opsetid("", opset)], ir_version=core.ir_version)

    post_nodes = []
    y = "from_foreign"
    if convention.layout == "nhwc":
        post_nodes.append(helper.make_node("Transpose", [y], ["nchw"], perm=[0, 3, 1, 2]))
        y = "nchw"
    if convention.value_range == "0,1":
        post_nodes += [helper.make_node("Mul", [y, "two_f"], ["doubled"]),
                       helper.make_node("Sub", ["doubled", "one_f"], ["signed"])]
        y = "signed"
    if convention.channels == "bgr":
        post_nodes.append(helper.make_node("Gather", [y, "reverse"], ["rgb"], axis=1))
        y = "rgb"
    post_nodes += [
        helper.make_node("Add", ["crop_before", "crop_hw"], ["crop_end"]),
        helper.make_node("Slice", [y, "crop_before", "crop_end", "axes23"], ["translated"]),
    ]
    post_inits = [const("two_f", 2.0, np.float32), const("one_f", 1.0, np.float32),
                  const("reverse", [2, 1, 0]), const("axes23", [2, 3])]
    post = helper.make_model(
        helper.make_graph(
            post_nodes, "from_foreign",
            [helper.make_tensor_value_info("from_foreign", TensorProto.FLOAT, None),
             helper.make_tensor_value_info("crop_before", TensorProto.INT64, [2]),
             helper.make_tensor_value_info("crop_hw", TensorProto.INT64, [2])],
            [helper.make_tensor_value_info("translated", TensorProto.FLOAT, dims)], post_inits),
        opset_imports=[helper.make_opsetid("", opset)], ir_version=core.ir_version)

    _prune(pre)
    _prune(post)
    pre = _expose(pre, ["before", "hw"])
    merged = compose.merge_models(pre, core, io_map=[("to_foreign", "foreign/" + input_name)],
                                  outputs=["foreign/" + output_name, "before", "hw"])
    merged = compose.merge_models(merged, compose.add_prefix(post, "post/"),
                                  io_map=[("foreign/" + output_name, "post/from_foreign"),
                                          ("before", "post/crop_before"), ("hw", "post/crop_hw")])
    # The one input and output keep plain names: "image" -> "translated", as our exports have.
    _rename_io(merged, "post/translated", "translated")
    # merge_models repeats the default domain once per part; ONNX Runtime's quantizer wants it once.
    versions: dict[str, int] = {}
    for o in merged.opset_import:
        versions[o.domain] = max(versions.get(o.domain, 0), o.version)
    del merged.opset_import[:]
    merged.opset_import.extend(helper.make_opsetid(d, v) for d, v in versions.items())
    onnx.checker.check_model(merged)
    return merged


def _expose(model: Any, names: list[str]) -> Any:
    from onnx import TensorProto, helper  # the onnx extra

    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.INT64, [2]))
    return model


def _rename_io(model: Any, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
    for out in model.graph.output:
        if out.name == old:
            out.name = new


def _prune(model: Any) -> None:
    """Drop the constants no node of ``model`` reads (the convention left them out)."""
    used = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
