"""Model files: read any generator artefact back and run it, whatever format it was saved in.

One entry point, ``load_any_generator``, takes a run folder (its newest checkpoint), a checkpoint
folder, a safetensors export (folder or file), an ``.onnx`` file or a TorchScript file and returns a
``LoadedGenerator``: a module (or ``OnnxGenerator`` session) with the generator calling convention
(float [B, 3, H, W] in [-1, 1] -> same) plus its ``ModelInfo`` (direction, size multiple, config).
``ModelInfo`` is also the JSON document every export format records (written by ``cyclegan.export``).
``model_memory_guard`` turns a generator too large to build into one line naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from cyclegan import networks
from cyclegan.checkpoint import (
    GENERATOR_FOR_DIRECTION,
    file_sha256,
    load_checkpoint_config,
    load_generator,
    load_into,
    resolve_checkpoint,
    verify_sha256_sidecar,
)
from cyclegan.config import Config, config_from_dict
from cyclegan.errors import CheckpointError, CycleGANError, first_line
from cyclegan.networks.foreign import ForeignGenerator, OnnxConvention, convert_onnx_graph
from cyclegan.sources import resolve_source
from cyclegan.torchfile import is_torch_save_file
from cyclegan.version import __version__

__all__ = [
    "EXPORTED_WEIGHTS",
    "FOREIGN_GRAPH",
    "FOREIGN_INFO",
    "FOREIGN_WRAPPED",
    "INT8_METADATA_KEY",
    "METADATA_KEY",
    "TORCHSCRIPT_EXTRA",
    "TORCHSCRIPT_SUFFIXES",
    "LoadedGenerator",
    "ModelInfo",
    "OnnxGenerator",
    "load_any_generator",
    "load_safetensors_file",
    "model_memory_guard",
]

# Where each format keeps its ModelInfo JSON, and the names and suffixes the loader recognises.
METADATA_KEY = "cyclegan"
INT8_METADATA_KEY = "cyclegan_int8"  # an int8 model's quantization report (cyclegan.quantize)
TORCHSCRIPT_EXTRA = "cyclegan.json"
EXPORTED_WEIGHTS = "generator.safetensors"
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
# A folder written by ``cyclegan import onnx``: the publisher's graph as given, the same graph behind our
# convention (ONNX Runtime's file), and foreign.json (convention, backend, hashes;
# cyclegan.importers.onnx_foreign).
FOREIGN_GRAPH = "foreign.onnx"
FOREIGN_WRAPPED = "generator.onnx"
FOREIGN_INFO = "foreign.json"


@dataclass(frozen=True)
class ModelInfo:
    """What a reader needs besides the weights; serialised as the format's JSON metadata."""

    direction: str
    size_multiple: int
    config: Config | None
    format: str = "checkpoint"

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": self.format,
                "version": __version__,
                "direction": self.direction,
                "size_multiple": self.size_multiple,
                "config": self.config.to_dict() if self.config is not None else None,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, where: Path) -> ModelInfo:
        try:
            doc = json.loads(text)
            config = config_from_dict(doc["config"]) if doc.get("config") is not None else None
            return cls(
                direction=str(doc["direction"]),
                size_multiple=int(doc["size_multiple"]),
                config=config,
                format=str(doc.get("format", "?")),
            )
        # hostile nesting, [1, 2]
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise CheckpointError(
                f"{where}: unreadable cyclegan metadata ({type(e).__name__}: {e})") from None
        except CycleGANError as e:
            raise CheckpointError(f"{where}: invalid config in metadata ({e})") from None


@dataclass
class LoadedGenerator:
    """A generator ready to run: an ``nn.Module`` (checkpoint, safetensors, TorchScript) or an
    ``OnnxGenerator``; ``kind`` says which file it came from."""

    model: nn.Module | OnnxGenerator
    info: ModelInfo
    kind: str  # "checkpoint" | "safetensors" | "torchscript" | "onnx" | "foreign" (import onnx, in PyTorch)
    path: Path


# ---------------------------------------------------------------------------------------- ONNX runtime


class OnnxGenerator:
    """An ONNX Runtime session behind the generator calling convention (tensors in, tensors out)."""

    def __init__(self, *, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        """``threads``: ONNX Runtime intra-op threads (None: its default, one per physical core)."""
        try:
            import onnxruntime as ort  # the onnx extra
        except ImportError:
            raise CheckpointError(
                f"{path}: running ONNX models needs onnxruntime (pip install 'cyclegan[onnx]')"
            ) from None
        available = ort.get_available_providers()
        if device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise CheckpointError(f"{path}: --device cuda, but this onnxruntime has no CUDA provider")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device == "auto" and "CUDAExecutionProvider" in available:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device in ("auto", "cpu"):
            providers = ["CPUExecutionProvider"]
        else:
            raise CheckpointError(f"{path}: ONNX Runtime cannot run on --device {device}; use cpu or cuda")
        try:
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad files
            first = first_line(e)
            raise CheckpointError(f"{path}: not a loadable ONNX model ({first})") from None
        self.path = Path(path)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.providers = self.session.get_providers()

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def is_int8(self) -> bool:
        """Whether the file is an int8 model made by ``cyclegan.quantize`` (its report is in the metadata)."""
        return INT8_METADATA_KEY in self.metadata()

    def __call__(self, x: Tensor) -> Tensor:
        # [B, 3, H, W] float in [-1, 1] (any device) -> [B, 3, H, W] float32 on x's device
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (y,) = self.session.run([self.output_name], {self.input_name: arr})
        return torch.from_numpy(y).to(x.device)


# --------------------------------------------------------------------------------------------- loading

# How PyTorch (CPU allocator, CUDA caching allocator, MPS) and Python say an allocation failed.
_ALLOCATION_FAILURES = ("not enough memory", "out of memory", "defaultcpuallocator", "failed to allocate",
                        "cannot allocate memory", "can't allocate")


def _allocation_failure(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    return isinstance(error, RuntimeError) and any(s in str(error).lower() for s in _ALLOCATION_FAILURES)


@contextlib.contextmanager
def model_memory_guard(where: str | os.PathLike) -> Iterator[None]:
    """Building or loading a generator that does not fit in memory -> one CheckpointError naming ``where``.

    A config.json asking for a huge network (ngf=131072 is ~1 TB of weights) otherwise ends in a
    50-line allocator traceback. Other errors pass through unchanged: they are bugs, not bad input.
    """
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        if not _allocation_failure(e):
            raise
        raise CheckpointError(
            f"{where}: not enough memory to build its generator ({first_line(e, type(e).__name__)}); "
            "check model.generator (ngf, n_blocks) in its config"
        ) from None


def _single_direction(info: ModelInfo, requested: str | None, path: Path) -> None:
    if requested is not None and requested != info.direction:
        raise CheckpointError(
            f"{path}: holds only the {info.direction} generator, not {requested}"
        )


def _load_torchscript(path: Path, device: torch.device) -> tuple[nn.Module, ModelInfo]:
    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        with model_memory_guard(path), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still works
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - torch.jit raises RuntimeError and others for foreign files
        if is_torch_save_file(path):  # e.g. the CycleGAN authors' latest_net_G_A.pth
            raise CheckpointError(
                f"{path}: PyTorch weights (a state dict), not a model file; convert it first with "
                f"cyclegan import official|cut|animeganv2 {path} --out FOLDER, then use FOLDER") from None
        raise CheckpointError(f"{path}: not a loadable TorchScript file ({type(e).__name__})") from None
    if not extra[TORCHSCRIPT_EXTRA]:
        raise CheckpointError(f"{path}: TorchScript file without cyclegan metadata; export it with cyclegan "
                              "export")
    return module.eval(), ModelInfo.from_json(extra[TORCHSCRIPT_EXTRA], where=path)


def load_safetensors_file(path: Path, device: torch.device) -> tuple[nn.Module, ModelInfo]:
    """A ``.safetensors`` generator (an export's, or one taken out of a checkpoint folder) -> (eval
    module on ``device``, its ModelInfo); its hashes are checked as a checkpoint's are."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt weights file ({e})") from None
    if METADATA_KEY not in meta:
        # A generator file taken out of a checkpoint: its config sits next to it and its name says
        # which direction it translates.
        directions = {v: k for k, v in GENERATOR_FOR_DIRECTION.items()}
        directions |= {f"{v}_ema": k for k, v in GENERATOR_FOR_DIRECTION.items()}  # moving averages
        if path.stem not in directions or not (path.parent / "config.json").is_file():
            raise CheckpointError(
                f"{path}: no cyclegan metadata and no config.json next to it; export it with cyclegan export"
            )
        cfg = load_checkpoint_config(path.parent)
        net = networks.build_generator(cfg.model.generator)
        info = ModelInfo(direction=directions[path.stem], size_multiple=int(net.size_multiple), config=cfg)
    else:
        info = ModelInfo.from_json(meta[METADATA_KEY], where=path)
        if info.config is None:
            raise CheckpointError(f"{path}: metadata has no config; cannot rebuild the generator")
        net = networks.build_generator(info.config.model.generator)
    load_into(net, path.parent, path.stem)
    return net.to(device).eval(), info


def load_any_generator(
    path: str | Path,
    *,
    direction: str | None = None,
    device: str | torch.device = "cpu",
    ema: bool = True,
    threads: int | None = None,
) -> LoadedGenerator:
    """Rebuild one generator from whatever ``path`` is.

    A run directory (its newest checkpoint) or checkpoint directory: ``direction`` picks G_A
    (a2b, the default) or G_B. An exported generator (safetensors folder or file, ``.onnx``,
    TorchScript ``.pt``) translates one fixed direction; asking for the other one is an error.
    ``device`` is a torch device; for ONNX the strings "auto"/"cpu"/"cuda" choose the provider and
    ``threads`` its intra-op threads. ``pretrained:NAME`` and ``hf:OWNER/REPO`` are resolved first
    (``cyclegan.sources``).
    """
    path = resolve_source(path, direction=direction)
    if direction is not None and direction not in GENERATOR_FOR_DIRECTION:
        raise CheckpointError(f"direction {direction!r}: choose from a2b, b2a")
    if not path.exists():
        raise CheckpointError(f"{path}: no such run, checkpoint or model file")
    with model_memory_guard(path):
        return _load_any(path, direction=direction, device=device, ema=ema, threads=threads)


def _load_any(
    path: Path, *, direction: str | None, device: str | torch.device, ema: bool, threads: int | None
) -> LoadedGenerator:
    if path.is_dir():
        if (path / FOREIGN_INFO).is_file():
            return _load_foreign(path, direction=direction, device=device, threads=threads)
        if (path / EXPORTED_WEIGHTS).is_file():
            net, info = load_safetensors_file(path / EXPORTED_WEIGHTS, torch.device(device))
            _single_direction(info, direction, path)
            return LoadedGenerator(model=net, info=info, kind="safetensors", path=path)
        ckpt = resolve_checkpoint(path)
        net, cfg = load_generator(ckpt, direction=direction or "a2b", device=device, ema=ema)
        info = ModelInfo(direction=direction or "a2b", size_multiple=int(net.size_multiple), config=cfg)
        return LoadedGenerator(model=net, info=info, kind="checkpoint", path=ckpt)
    suffix = path.suffix.lower()
    if suffix == ".onnx" or suffix in TORCHSCRIPT_SUFFIXES:
        verify_sha256_sidecar(path)
    if suffix == ".onnx":
        runner = OnnxGenerator(path=path, device=str(device), threads=threads)
        meta = runner.metadata()
        if METADATA_KEY not in meta:
            raise CheckpointError(f"{path}: ONNX model without cyclegan metadata; export it with cyclegan "
                                  "export")
        info = ModelInfo.from_json(meta[METADATA_KEY], where=path)
        _single_direction(info, direction, path)
        return LoadedGenerator(model=runner, info=info, kind="onnx", path=path)
    if suffix == ".safetensors":
        net, info = load_safetensors_file(path, torch.device(device))
        _single_direction(info, direction, path)
        return LoadedGenerator(model=net, info=info, kind="safetensors", path=path)
    if suffix in TORCHSCRIPT_SUFFIXES:
        net, info = _load_torchscript(path, torch.device(device))
        _single_direction(info, direction, path)
        return LoadedGenerator(model=net, info=info, kind="torchscript", path=path)
    raise CheckpointError(
        f"{path}: unknown model file type {suffix or '(none)'}; expected a run or checkpoint folder, "
        ".onnx, .safetensors or TorchScript .pt"
    )


def _load_foreign(path: Path, *, direction: str | None, device: str | torch.device,
                  threads: int | None) -> LoadedGenerator:
    """A folder of ``cyclegan import onnx``: its files checked against the hashes foreign.json records,
    then the graph converted to PyTorch again (backend torch) or run by ONNX Runtime (backend onnxruntime)."""
    try:
        doc = json.loads((path / FOREIGN_INFO).read_text())
        convention = OnnxConvention.from_dict(doc["convention"])
        backend, hashes = str(doc["backend"]), dict(doc["sha256"])
    except (ValueError, KeyError, TypeError, RecursionError, CheckpointError) as e:
        raise CheckpointError(
            f"{path / FOREIGN_INFO}: unreadable ({first_line(e, type(e).__name__)})") from None
    for name in (FOREIGN_GRAPH, FOREIGN_WRAPPED):
        if not (path / name).is_file() or file_sha256(path / name) != hashes.get(name):
            raise CheckpointError(
                f"{path / name}: missing or changed since it was imported (SHA-256 differs)")
    info = ModelInfo(direction="a2b", size_multiple=convention.multiple, config=None, format="onnx-import")
    _single_direction(info, direction, path)
    if backend == "onnxruntime":
        runner = OnnxGenerator(path=path / FOREIGN_WRAPPED, device=str(device), threads=threads)
        return LoadedGenerator(model=runner, info=info, kind="onnx", path=path / FOREIGN_WRAPPED)
    if backend != "torch":
        raise CheckpointError(f"{path / FOREIGN_INFO}: unknown backend {backend!r}")
    try:
        import onnx  # the onnx extra

        graph = convert_onnx_graph(onnx.load(str(path / FOREIGN_GRAPH), load_external_data=False))
    except ImportError:
        raise CheckpointError(f"{path}: running an imported ONNX model in PyTorch needs onnx and onnx2torch "
                              "(pip install 'cyclegan[onnx]')") from None
    except Exception as e:  # noqa: BLE001 - onnx2torch and the version converter raise many types
        raise CheckpointError(f"{path / FOREIGN_GRAPH}: no longer converts to PyTorch "
                              f"({type(e).__name__}: {first_line(e, 'no detail')})") from None
    net = ForeignGenerator(net=graph, convention=convention)
    # ONNX Runtime's file for --precision auto / int8 (cyclegan.runtime)
    net.onnx_graph = path / FOREIGN_WRAPPED
    if str(device) != "auto":
        net = net.to(device)
    return LoadedGenerator(model=net.eval(), info=info, kind="foreign", path=path)
