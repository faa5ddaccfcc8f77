"""How a translator's generator runs: the runtime choice, as a step of its own.

``choose_backend`` takes a loaded generator (an ``nn.Module``, eager or TorchScript, or a callable such
as ``cyclegan.modelfile.OnnxGenerator``) and ``TranslateOptions`` and decides what executes it:

- ``precision`` fp32 | bf16 | fp16: PyTorch on ``device`` at that precision, as asked;
- ``auto``: ``cyclegan.runtime.choose_runtime`` probes for the fastest path within tolerance of fp32
  (a checked int8 model made earlier, bf16 autocast, an ONNX Runtime export, else fp32); this may
  export and cache an ONNX model, so it is the slow part of making a translator;
- ``int8``: ``cyclegan.runtime.int8_runtime`` quantizes (or reads the cached quantized model),
  checks it against fp32 on calibration images and refuses it when it is over ``int8_limits``;
- a callable runs as it is (ONNX Runtime files: fp32, or int8 for an int8 export or when asked).

``Translator`` calls it when not handed a ``Backend``; calling it yourself lets a program report or
reuse the choice (``backend.runtime.line()``) before translating anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from cyclegan.devices import resolve_device
from cyclegan.errors import TranslateError
from cyclegan.modelfile import OnnxGenerator
from cyclegan.runtime import CallableRunner, RuntimeChoice, TorchRunner, choose_runtime, int8_runtime
from cyclegan.translate.options import TranslateOptions
from cyclegan.translate.tiling import input_stat_norms

if TYPE_CHECKING:
    from cyclegan.config import Config

__all__ = ["Backend", "choose_backend"]


@dataclass(frozen=True, kw_only=True)
class Backend:
    """The runtime chosen for one generator and the runners that carry it out.

    ``runner`` runs whole (untiled) passes: PyTorch, or an ONNX Runtime session. ``tile_runner`` runs
    tiles: always the eager PyTorch module when there is one, because only an eager module's instance
    norms can be given the whole image's statistics (``norms``, empty for callables).
    """

    runtime: RuntimeChoice
    device: torch.device  # where input tensors go (the CPU for callables: they move data themselves)
    runner: TorchRunner | CallableRunner
    tile_runner: TorchRunner | CallableRunner
    norms: list[nn.Module]


def choose_backend(
    model: nn.Module | Callable[[Tensor], Tensor],
    *,
    size_multiple: int,
    options: TranslateOptions,
    device: str | torch.device = "auto",
    config: Config | None = None,
    direction: str | None = None,
    source: str | None = None,
) -> Backend:
    """The runtime for ``model`` under ``options`` on ``device`` (see the module docstring).

    ``size_multiple`` sizes the probe and calibration inputs; ``config`` and ``direction`` find the
    default int8 calibration images (the training images of the direction's source domain);
    ``source`` names the model in errors. ONNX Runtime sessions made here use PyTorch's current
    thread count (``torch.get_num_threads()``).
    """
    if isinstance(model, nn.Module):
        return _module_backend(model, size_multiple=size_multiple, options=options, device=device,
                               config=config, direction=direction)
    return _callable_backend(model, size_multiple=size_multiple, options=options, config=config,
                             direction=direction, source=source)


def _module_backend(
    model: nn.Module, *, size_multiple: int, options: TranslateOptions, device: str | torch.device,
    config: Config | None, direction: str | None,
) -> Backend:
    precision = options.precision
    # int8 exists only in ONNX Runtime on the CPU, so "auto" means the CPU there.
    dev = resolve_device("cpu" if precision == "int8" and device == "auto" else device)
    session = None
    if precision == "int8":
        if dev.type != "cpu":
            raise TranslateError(f"precision=int8 runs on the CPU (ONNX Runtime), not {dev.type}; "
                                 "use device=cpu (or auto)")
        runtime, session = int8_runtime(
            model, size_multiple=size_multiple, config=config, direction=direction,
            calibration=options.calibration, limits=options.int8_limits, threads=torch.get_num_threads(),
        )
    elif precision == "auto":
        # channels_last / compile are PyTorch options, so asking for them keeps PyTorch.
        runtime, session = choose_runtime(
            model, dev, size_multiple, allow_onnx=not (options.channels_last or options.compile),
            threads=torch.get_num_threads(),
        )
    else:
        runtime = RuntimeChoice("torch", precision, "as requested")
    # int8 exists only in ONNX Runtime: tiles run the module in fp32.
    amp = "fp32" if runtime.precision == "int8" else runtime.precision
    torch_runner = TorchRunner(module=model, device=dev, precision=amp,
                               channels_last=options.channels_last, compile=options.compile)
    return Backend(runtime=runtime, device=dev, runner=CallableRunner(session) if session else torch_runner,
                   tile_runner=torch_runner, norms=input_stat_norms(model))


def _callable_backend(
    model: Callable[[Tensor], Tensor], *, size_multiple: int, options: TranslateOptions,
    config: Config | None, direction: str | None, source: str | None,
) -> Backend:
    precision = options.precision
    onnx = isinstance(model, OnnxGenerator)
    int8_file = onnx and model.is_int8
    if precision not in ("auto", "fp32", "int8") or (precision == "int8" and not onnx):
        raise TranslateError(f"{source or 'this model'}: precision={precision} needs a PyTorch model; "
                             "ONNX Runtime runs the file as it is (fp32, or int8 for an int8 export)")
    if precision == "int8" and not int8_file:  # an fp32 .onnx: quantized like a module
        runtime, model = int8_runtime(
            model.path, size_multiple=size_multiple, config=config, direction=direction,
            calibration=options.calibration, limits=options.int8_limits, threads=torch.get_num_threads(),
        )
    else:
        backend = "onnxruntime" if onnx else "callable"
        runtime = RuntimeChoice(backend, "int8" if int8_file else "fp32", "the model's own runtime")
    runner = CallableRunner(model)
    # The callable moves data itself (ONNX Runtime takes host arrays), so tensors stay on the CPU.
    return Backend(runtime=runtime, device=torch.device("cpu"), runner=runner, tile_runner=runner, norms=[])
