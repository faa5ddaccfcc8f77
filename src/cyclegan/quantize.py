"""int8 generators: ONNX Runtime static quantization, calibrated on the source domain and checked image by
image.

An fp32 ONNX generator (``cyclegan.export``) becomes an int8 one in five steps:

1. Calibration images: up to ``DEFAULT_CALIBRATION_IMAGES`` training images of the domain the
   direction translates from (the run's ``data.dataroot``/``data_a``/``data_b``, or any folder or
   ``.npz`` given as ``--calibration``), evenly spaced over the sorted list, scaled so the shorter
   side is the training crop size and centre-cropped to a square: the scale the generator learned.
2. Ranges: ONNX Runtime's percentile calibrator, the ``CALIBRATION_PERCENTILE`` th percentile of
   every activation tensor: min/max ranges lose precision to rare outliers, lower percentiles clip
   rare strong activations into blotches (the comparison on a trained ResNet-9 is on the
   documentation's Benchmarks page). The calibrator is
   fed one image at a time: given all at once it holds every intermediate tensor of every image
   (about 0.5 GB per 256-pixel image for ResNet-9).
3. ``equalize_for_norm``: every convolution read only by an instance norm gets zero-mean output
   channels of equal spread (exact: the norm ignores both), so one 8-bit range fits all of them.
4. ``quantize_static``: QDQ format, int8 weights per output channel, uint8 activations (ONNX
   Runtime's advice for x86 CPUs with VNNI; 7-bit weights (``reduce_range``) on x86 without it).
   Kept in fp32 (``fp32_nodes``): the first and the last convolution and the output's Tanh (the
   image enters and leaves through them, where 256 levels are the whole precision budget), every
   ConvTranspose (ONNX Runtime has no int8 kernel for it on CPU, so quantizing around it only adds
   rounding), and whatever sits only between
   fp32 nodes. The residual blocks, 88% of ResNet-9's multiply-adds, run in int8.
5. The image-level check (``ImageCheck``): the calibration images translated by the fp32 and the
   int8 model, compared as 8-bit images: worst-image PSNR, mean and largest level difference.
   ``Int8Limits`` holds the limits (defaults chosen from trained generators; see the Benchmarks page).

The int8 file keeps the fp32 file's ``cyclegan`` metadata (``ModelInfo``) and adds the check under
``cyclegan_int8`` (``modelfile.INT8_METADATA_KEY``), so ``--precision auto`` can tell a checked
model from an unchecked one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import platform
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from cyclegan.checkpoint import sidecar_path, write_sha256_sidecar
from cyclegan.config import Config
from cyclegan.data import find_images, resolve_domains
from cyclegan.errors import CycleGANError, DataError, ExportError, ImageLoadError, first_line
from cyclegan.export import check_destination, export_module
from cyclegan.fileio import temp_sibling
from cyclegan.image import load_image, to_uint8
from cyclegan.modelfile import INT8_METADATA_KEY, METADATA_KEY, ModelInfo, OnnxGenerator
from cyclegan.npz import ArrayImages

__all__ = [
    "CALIBRATION_PERCENTILE",
    "DEFAULT_CALIBRATION_IMAGES",
    "DEFAULT_LIMITS",
    "Calibration",
    "ImageCheck",
    "Int8ExportResult",
    "Int8Limits",
    "Int8Report",
    "calibration_for",
    "equalize_for_norm",
    "export_int8",
    "fp32_nodes",
    "load_calibration",
    "quantize_onnx",
    "read_int8_report",
]

DEFAULT_CALIBRATION_IMAGES = 16
DEFAULT_CALIBRATION_SIZE = 256  # when the model records no training crop size
CALIBRATION_PERCENTILE = 99.999
# Changes whenever the recipe above changes, so cached int8 models made the old way are not reused.
RECIPE = "qdq-u8s8-perchannel-pct99.999-eq-v2"
PSNR_CAP = 100.0  # identical images have infinite PSNR; JSON has no inf
EQUALIZE_MIN_VARIANCE = 1e4  # x the instance norm's epsilon; see equalize_for_norm

_CONVS = ("Conv", "ConvTranspose")
_INT8_COMPUTE = ("Conv", "MatMul", "Gemm")  # ops ONNX Runtime's CPU provider runs in int8 (QDQ fused)
_OUTPUT_SQUASH = ("Tanh", "Sigmoid")


# ------------------------------------------------------------------------------------------- check


@dataclass(frozen=True)
class Int8Limits:
    """How far the int8 model may move the calibration images from fp32 (8-bit levels, dB)."""

    min_psnr: float = 35.0  # worst image
    max_mean_levels: float = 3.0  # mean |int8 - fp32| over all pixels and channels
    max_levels: int = 48  # largest single difference

    def line(self) -> str:
        return (f"PSNR >= {self.min_psnr:g} dB, mean <= {self.max_mean_levels:g}, max <= {self.max_levels} "
                "levels")


DEFAULT_LIMITS = Int8Limits()


@dataclass(frozen=True)
class ImageCheck:
    """int8 vs fp32 on the calibration images, as 8-bit images."""

    images: int
    size: int
    psnr_min: float
    psnr_mean: float
    mean_levels: float
    max_levels: int

    def failures(self, limits: Int8Limits) -> list[str]:
        out = []
        if not self.psnr_min >= limits.min_psnr:  # also catches NaN
            out.append(f"PSNR {self.psnr_min:.1f} dB < {limits.min_psnr:g}")
        if not self.mean_levels <= limits.max_mean_levels:
            out.append(f"mean difference {self.mean_levels:.2f} levels > {limits.max_mean_levels:g}")
        if not self.max_levels <= limits.max_levels:
            out.append(f"max difference {self.max_levels} levels > {limits.max_levels}")
        return out

    def passed(self, limits: Int8Limits) -> bool:
        return not self.failures(limits)

    def line(self) -> str:
        return (f"vs fp32 on {self.images} calibration image(s) at {self.size} px: PSNR {self.psnr_min:.1f} "
                f"dB (worst image; mean {self.psnr_mean:.1f}), mean {self.mean_levels:.2f} levels, max "
                f"{self.max_levels}")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0**2 / mse))


def compare_images(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], *,
                   size: int) -> ImageCheck:
    """uint8 images (any equal shapes) -> ImageCheck of ``candidate`` against ``reference``."""
    psnrs, total, count, worst = [], 0.0, 0, 0
    for a, b in zip(reference, candidate, strict=True):
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        psnrs.append(_psnr(a, b))
        total += float(diff.sum())
        count += diff.size
        worst = max(worst, int(diff.max()))
    return ImageCheck(images=len(psnrs), size=size, psnr_min=min(psnrs), psnr_mean=float(np.mean(psnrs)),
                      mean_levels=total / max(count, 1), max_levels=worst)


# ------------------------------------------------------------------------------------- calibration


@dataclass
class Calibration:
    """The calibration images of one quantization: where from, which, at what size; decoded on demand."""

    source: Path
    items: list[Path] | ArrayImages
    size: int
    digest: str  # names, sizes, dates, size and recipe: the cache key's calibration part

    def arrays(self) -> Iterator[np.ndarray]:
        """[1, 3, S, S] float32 in [-1, 1] per usable image; unreadable files are left out."""
        for i in range(len(self.items)):
            item = self.items[i]
            try:
                img = load_image(item) if isinstance(item, Path) else item
            except ImageLoadError:
                continue
            yield _square(img, self.size)


def _square(img: Image.Image, size: int) -> np.ndarray:
    """Shorter side scaled to ``size``, centre square crop -> [1, 3, S, S] float32 in [-1, 1]."""
    img = img.convert("RGB")
    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32)
    return np.ascontiguousarray((arr / 127.5 - 1.0).transpose(2, 0, 1)[None])


def calibration_for(config: Config | None, direction: str, override: str | os.PathLike | None) -> Path:
    """The folder (or .npz) to calibrate on: ``override``, else the model's training images of the
    domain ``direction`` translates from (A for a2b, B for b2a)."""
    if override is not None:
        path = Path(override)
        if not path.exists():
            raise DataError(f"--calibration {path}: no such folder or file")
        return path
    data = config.data if config is not None else None
    if data is None or not (data.dataroot or data.data_a or data.data_b):
        raise DataError("no calibration images: this model does not record its training data; "
                        "pass --calibration DIR (images of the domain it translates from)")
    try:
        a, b = resolve_domains(config.data, "train")
    except DataError as e:
        raise DataError(f"no calibration images: the model's training data is not here ({e}); "
                        "pass --calibration DIR") from None
    return a if direction == "a2b" else b


def load_calibration(source: str | os.PathLike, *, size: int, size_multiple: int,
                     count: int = DEFAULT_CALIBRATION_IMAGES, npz_key: str | None = None) -> Calibration:
    """Pick up to ``count`` images of ``source`` (a folder, searched recursively, or an .npz of
    images), evenly spaced, at ``size`` rounded up to ``size_multiple`` (at least two multiples)."""
    if count < 1:
        raise DataError(f"calibration needs at least one image, got {count}")
    source = Path(source)
    m = max(1, int(size_multiple))
    size = max(2 * m, -(-int(size) // m) * m)
    h = hashlib.sha256(f"{RECIPE}|{size}|{count}|{_reduce_range()}|{source.resolve()}".encode())
    if source.is_file() and source.suffix.lower() == ".npz":
        arrays = ArrayImages(source, key=npz_key)
        positions = _spread(len(arrays), count)
        items: list[Path] | ArrayImages = arrays.select(positions)
        st = source.stat()
        h.update(f"|{arrays.key}|{st.st_size}|{st.st_mtime_ns}|{positions}".encode())
    else:
        files = find_images(source)
        items = [files[i] for i in _spread(len(files), count)]
        for p in items:
            st = p.stat()
            h.update(f"|{p.relative_to(source)}|{st.st_size}|{st.st_mtime_ns}".encode())
    if not len(items):
        raise DataError(f"{source}: no images to calibrate on")
    return Calibration(source=source, items=items, size=size, digest=h.hexdigest()[:16])


def _spread(n: int, count: int) -> list[int]:
    """``count`` evenly spaced positions of ``n`` (all of them when n <= count)."""
    if n <= count:
        return list(range(n))
    return sorted({int(i * n / count) for i in range(count)})


def _reduce_range() -> bool:
    """7-bit weights on x86 CPUs without VNNI, where 8-bit products can saturate (ONNX Runtime's advice)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
        return not any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    return False  # no /proc (macOS, Windows): ONNX Runtime's default


# ------------------------------------------------------------------------------------- the graph


def fp32_nodes(model) -> list[str]:
    """Names of the nodes of an ONNX ``model`` to keep in fp32 (see the module docstring, step 4)."""
    nodes = list(model.graph.node)
    convs = [n for n in nodes if n.op_type in _CONVS]
    keep = {n.name for n in nodes if n.op_type in _OUTPUT_SQUASH or n.op_type == "ConvTranspose"}
    if convs:
        keep |= {convs[0].name, convs[-1].name}
    producer = {o: n for n in nodes for o in n.output}
    # GroupNorm exports as Reshape -> InstanceNormalization over the groups -> Reshape, with one
    # scale/bias constant of group length shared by every such norm (the AnimeGANv2 generators);
    # ONNX Runtime's quantizer cannot quantize that shared constant ("shared mode is not supported for
    # weight") and CPU kernels run normalisation in fp32 anyway.
    keep |= {n.name for n in nodes if n.op_type == "InstanceNormalization"
             and n.input and n.input[0] in producer and producer[n.input[0]].op_type == "Reshape"}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # A data-movement or normalisation node whose inputs all come from fp32 nodes, or whose outputs
    # all go to them, gains nothing from int8: its Q/DQ pairs would only round.
    changed = True
    while changed:
        changed = False
        for n in nodes:
            if n.name in keep or n.op_type in _INT8_COMPUTE:
                continue
            sources = [producer[i] for i in n.input if i in producer]
            sinks = [c for o in n.output for c in consumers.get(o, [])]
            if (sources and all(s.name in keep for s in sources)) or (sinks
                                                                      and all(c.name in keep for c in sinks)):
                keep.add(n.name)
                changed = True
    return sorted(keep)


def equalize_for_norm(model, input_name: str, images: Sequence[np.ndarray], *, skip: set[str]) -> int:
    """Give every int8 convolution whose only reader is an instance norm zero-mean output channels of
    equal spread (on the calibration images), in place; returns how many were changed.

    Instance norm removes each channel's mean and divides by its spread, so a per-channel offset
    and scale of its input change nothing, except through the norm's epsilon: channels are scaled
    to a variance of ``EQUALIZE_MIN_VARIANCE`` times it, and those below it are left alone, which
    bounds the change of a normalised value by 1/(2 x 10^4) of itself. One 8-bit range then fits every
    channel of the convolution's output instead of the widest one: measured on a horse2zebra
    ResNet-9, mean difference from fp32 2.21 -> 1.96 levels, worst-image PSNR 36.9 -> 38.4 dB.
    """
    import onnx  # the onnx extra
    import onnxruntime as ort  # the onnx extra
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    targets = [n for n in graph.node if n.op_type == "Conv" and n.name not in skip and n.input[1] in inits
               and len(readers[n.input[1]]) == 1 and n.output[0] not in outputs
               and [r.op_type for r in readers.get(n.output[0], [])] == ["InstanceNormalization"]]
    if not targets:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [n.output[0] for n in targets]
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT,
                                                                 None) for k in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    means = {k: 0.0 for k in names}
    variances = {k: 0.0 for k in names}
    for x in images:
        for k, y in zip(names, session.run(names, {input_name: x})):  # [1, C, H, W] each
            means[k] = means[k] + y.mean(axis=(0, 2, 3)) / len(images)
            variances[k] = variances[k] + y.var(axis=(2, 3)).mean(axis=0) / len(images)
    for n in targets:
        k = n.output[0]
        norm = readers[k][0]
        eps = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
        # Every channel that may move goes to the spread of the widest that may not: all then fit
        # one range as well as the norm's epsilon allows.
        target = np.sqrt(EQUALIZE_MIN_VARIANCE * eps)
        std = np.sqrt(variances[k])
        scale = np.where(variances[k] >= target**2, target / np.maximum(std, 1e-30), 1.0).astype(np.float32)
        weight = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)  # [C_out, C_in, kH, kW]
        has_bias = len(n.input) > 2 and n.input[2] in inits and len(readers[n.input[2]]) == 1
        bias = numpy_helper.to_array(inits[n.input[2]]).astype(np.float32) if has_bias else np.zeros_like(
            scale)
        inits[n.input[1]].CopyFrom(numpy_helper.from_array(weight * scale[:, None, None, None], n.input[1]))
        new_bias = (scale * (bias - means[k])).astype(np.float32)  # the mean goes: the norm removes it anyway
        if has_bias:
            inits[n.input[2]].CopyFrom(numpy_helper.from_array(new_bias, n.input[2]))
        else:
            graph.initializer.append(numpy_helper.from_array(new_bias, f"{n.name}_equalized_bias"))
            del n.input[2:]
            n.input.append(f"{n.name}_equalized_bias")
    return len(targets)


# ------------------------------------------------------------------------------------ quantization


@dataclass(frozen=True)
class Int8Report:
    """What ``quantize_onnx`` did: the check, the settings, what stayed fp32; stored in the file."""

    check: ImageCheck
    calibration: dict
    settings: dict
    kept_fp32: list[str] = field(default_factory=list)
    int8_nodes: int = 0

    def to_json(self) -> str:
        return json.dumps({"check": asdict(self.check), "calibration": self.calibration,
                           "settings": self.settings,
                           "kept_fp32": self.kept_fp32, "int8_nodes": self.int8_nodes})

    @classmethod
    def from_json(cls, text: str) -> Int8Report:
        doc = json.loads(text)
        return cls(check=ImageCheck(**doc["check"]), calibration=doc["calibration"], settings=doc["settings"],
                   kept_fp32=list(doc.get("kept_fp32", [])), int8_nodes=int(doc.get("int8_nodes", 0)))


def read_int8_report(metadata: dict[str, str]) -> Int8Report | None:
    """The int8 report in an ONNX model's metadata (``OnnxGenerator.metadata()``), or None for fp32."""
    if INT8_METADATA_KEY not in metadata:
        return None
    try:
        return Int8Report.from_json(metadata[INT8_METADATA_KEY])
    except (ValueError, KeyError, TypeError):
        return None


class _Images:
    """ONNX Runtime's CalibrationDataReader protocol over numpy inputs."""

    def __init__(self, name: str, arrays: Sequence[np.ndarray]) -> None:
        self.name, self.it = name, iter(arrays)

    def get_next(self) -> dict | None:
        x = next(self.it, None)
        return None if x is None else {self.name: x}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantization tool prints progress to stdout and per-tensor notes through ``logging``."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


# ONNX Runtime's symbolic shape inference saves its half-inferred model as "sym_shape_infer_temp.onnx"
# (+ an external-data file) in the current directory when it cannot finish, e.g. for a U-Net whose
# skip additions it cannot prove equal: the user's folder would collect our litter. The pre-processing
# therefore runs with the temporary folder as the working directory; the lock keeps two quantizations
# in one process from changing directory under each other.
_CWD_LOCK = threading.Lock()


@contextlib.contextmanager
def _working_directory(folder: Path) -> Iterator[None]:
    with _CWD_LOCK:
        previous = os.getcwd()
        os.chdir(folder)
        try:
            yield
        finally:
            os.chdir(previous)


def _pre_process(fp32: Path, pre: Path, tmp: Path) -> None:
    """ORT's advised shape inference and graph clean-up. ``auto_merge`` lets symbolic inference merge
    dimensions it cannot prove equal (the skip additions of a U-Net such as White-box's generator);
    where it still fails, the step runs without symbolic inference, which quantization does not need."""
    from onnxruntime.quantization.shape_inference import quant_pre_process  # the onnx extra

    with _working_directory(tmp):
        try:
            quant_pre_process(str(fp32.resolve()), str(pre.resolve()), auto_merge=True)
        except Exception:  # noqa: BLE001 - ORT raises a bare Exception("Incomplete symbolic shape inference")
            quant_pre_process(str(fp32.resolve()), str(pre.resolve()), skip_symbolic_shape=True)


def quantize_onnx(fp32: str | os.PathLike, out: str | os.PathLike, calibration: Calibration, *,
                  threads: int | None = None) -> Int8Report:
    """Quantize the fp32 ONNX generator ``fp32`` into ``out`` and check it (nothing is refused here:
    the caller compares the report's check with its limits). Raises ExportError when it cannot."""
    try:
        import onnx  # the onnx extra
        import onnxruntime  # noqa: F401 - the onnx extra
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.calibrate import create_calibrator
    except ImportError:
        raise ExportError("int8 needs onnx and onnxruntime (pip install 'cyclegan[onnx]')") from None
    fp32, out = Path(fp32), Path(out)
    images = list(calibration.arrays())
    if not images:
        raise DataError(f"{calibration.source}: none of the {len(calibration.items)} calibration images is "
                        "readable")
    reduce_range = _reduce_range()
    with tempfile.TemporaryDirectory(prefix="cyclegan-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            with _quiet():
                _pre_process(fp32, pre, Path(tmp))
                model = onnx.load(str(pre))
                for i, node in enumerate(model.graph.node):  # nodes_to_exclude goes by name
                    node.name = node.name or f"node_{i}"
                input_name = model.graph.input[0].name
                keep = fp32_nodes(model)
                equalized = equalize_for_norm(model, input_name, images, skip=set(keep))
                onnx.save(model, str(pre))
                calibrator = create_calibrator(
                    str(pre), None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                    calibrate_method=CalibrationMethod.Percentile,
                    extra_options={"percentile": CALIBRATION_PERCENTILE, "symmetric": False},
                )
                for x in images:  # one at a time: the calibrator holds every tensor of what it is given
                    calibrator.collect_data(_Images(input_name, [x]))
                ranges = calibrator.compute_data()
                # The streamed ranges go in as per-tensor overrides; the calibration quantize_static
                # insists on running is then a single tiny image whose ranges are all overridden.
                overrides = {
                    name: [{"rmin": np.asarray(td.range_value[0], dtype=np.float32),
                            "rmax": np.asarray(td.range_value[1], dtype=np.float32)}]
                    for name, td in ranges.items()
                }
                m = _size_multiple(model)
                tiny = np.zeros((1, 3, 2 * m, 2 * m), dtype=np.float32)
                quantize_static(
                    str(pre), str(out), _Images(input_name, [tiny]), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=keep,
                    extra_options={"TensorQuantOverrides": overrides},
                )
        except CycleGANError:
            raise
        except Exception as e:  # noqa: BLE001 - the quantization tool raises many types
            raise ExportError(
                f"{fp32}: int8 quantization failed ({type(e).__name__}: {first_line(e, '')})") from None
        reference = OnnxGenerator(path=fp32, device="cpu", threads=threads)
        quantized = OnnxGenerator(path=out, device="cpu", threads=threads)
        ref_imgs, q_imgs = [], []
        for x in images:
            xt = torch.from_numpy(x)
            ref_imgs.append(to_uint8(reference(xt)).numpy())
            q_imgs.append(to_uint8(quantized(xt)).numpy())
        check = compare_images(ref_imgs, q_imgs, size=calibration.size)
        int8_nodes = sum(1 for n in onnx.load(str(pre)).graph.node if n.op_type in _INT8_COMPUTE
                         and n.name not in keep)
    report = Int8Report(
        check=check,
        calibration={"source": str(calibration.source), "images": len(images), "size": calibration.size,
                     "digest": calibration.digest},
        settings={"recipe": RECIPE, "format": "QDQ", "activations": "uint8", "weights": "int8 per channel",
                  "reduce_range": reduce_range, "percentile": CALIBRATION_PERCENTILE,
                  "equalized_convolutions": equalized},
        kept_fp32=keep, int8_nodes=int8_nodes,
    )
    _write_metadata(out, reference.metadata(), report)
    return report


def _size_multiple(model) -> int:
    meta = {p.key: p.value for p in model.metadata_props}
    with contextlib.suppress(ValueError, KeyError, TypeError, CycleGANError):
        return max(1, ModelInfo.from_json(meta[METADATA_KEY], where=Path("model")).size_multiple)
    return 4


def _write_metadata(path: Path, fp32_meta: dict[str, str], report: Int8Report) -> None:
    import onnx  # the onnx extra

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({k: v for k, v in fp32_meta.items() if k == METADATA_KEY})
    props[INT8_METADATA_KEY] = report.to_json()
    onnx.helper.set_model_props(model, props)
    model.doc_string = (model.doc_string or "cyclegan generator") + (" (int8: QDQ, ONNX Runtime static "
                                                                     "quantization)")
    onnx.save(model, str(path))


# ------------------------------------------------------------------------------------------ export


@dataclass(frozen=True)
class Int8ExportResult:
    path: Path
    report: Int8Report
    limits: Int8Limits

    def line(self) -> str:
        r = self.report
        return (f"wrote {self.path} (onnx int8: {r.int8_nodes} convolutions in int8, {len(r.kept_fp32)} "
                f"nodes kept fp32); {r.check.line()} (limits: {self.limits.line()})")


def export_int8(net: nn.Module, *, out: str | os.PathLike, info: ModelInfo, calibration: Calibration,
                limits: Int8Limits = DEFAULT_LIMITS, overwrite: bool = False, source: Path | None = None,
                threads: int | None = None) -> Int8ExportResult:
    """Export ``net`` to ONNX (checked against PyTorch), quantize it to int8 and check it against fp32
    on the calibration images; above ``limits`` raise ExportError and write nothing."""
    dest = Path(out)
    if dest.suffix.lower() != ".onnx":
        raise ExportError(f"{dest}: an int8 export is ONNX and must end in .onnx")
    check_destination(dest, "onnx", source, overwrite)
    if dest.parent != Path(""):
        dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cyclegan-int8-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_module(net, fmt="onnx", out=fp32, info=info, overwrite=True)
        tmp_out = temp_sibling(dest)
        try:
            report = quantize_onnx(fp32, tmp_out, calibration, threads=threads)
            failures = report.check.failures(limits)
            if failures:
                raise ExportError(
                    f"{dest}: the int8 model is too far from fp32 on {report.check.images} calibration "
                    "image(s) "
                    f"from {calibration.source} ({'; '.join(failures)}); nothing was written (the limits are "
                    "--int8-min-psnr, --int8-max-mean-levels and --int8-max-levels)"
                )
            sidecar_path(dest).unlink(missing_ok=True)
            os.replace(tmp_out, dest)
        finally:
            tmp_out.unlink(missing_ok=True)
    write_sha256_sidecar(dest)
    return Int8ExportResult(path=dest, report=report, limits=limits)
