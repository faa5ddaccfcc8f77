"""``cyclegan evaluate --reference RUN``: how closely a model reproduces another one on the test split.

For a distilled student the reference is its teacher; for an exported, int8 or ONNX model the run it
came from. Both translate the same test images (resized to the model's ``data.crop_size`` square,
bicubic, as ``evaluate`` does) and the outputs, quantised to uint8 as if saved, are compared per image:
PSNR (dB), SSIM (Wang et al. 2004) and L1 in model units ([-1, 1]), averaged per direction. Any model
format ``load_any_generator`` reads works on either side (ONNX through ONNX Runtime).

Directions: a2b, and b2a when both sides are two-sided. A distilled student's a2b is compared with
its teacher's ``distill.direction``. The record goes to ``<run>/eval_reference.json`` by default, so
the FID record ``eval.json`` of the same checkpoint is kept.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from cyclegan.config import DataConfig
from cyclegan.data import resolve_domains
from cyclegan.devices import resolve_device
from cyclegan.errors import CheckpointError, EvaluationError
from cyclegan.evaluate.checkpoints import resolve_test_folders
from cyclegan.evaluate.scores import EVAL_SCHEMA, load_domain
from cyclegan.fileio import write_json_atomic
from cyclegan.metrics.generate import translate_uint8
from cyclegan.metrics.reconstruction import cycle_l1, psnr, ssim
from cyclegan.modelfile import LoadedGenerator, load_any_generator, model_memory_guard
from cyclegan.version import __version__

SOURCE_DOMAIN = {"a2b": "A", "b2a": "B"}


class _Runner(nn.Module):
    """A loaded model of any format behind the module interface ``translate_uint8`` expects."""

    def __init__(self, loaded: LoadedGenerator) -> None:
        super().__init__()
        self.run = loaded.model
        self.size_multiple = int(loaded.info.size_multiple)

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x)


def _load(path, direction: str, device: torch.device) -> tuple[nn.Module, LoadedGenerator]:
    loaded = load_any_generator(path, direction=direction, device=device)
    model = loaded.model if isinstance(loaded.model, nn.Module) else _Runner(loaded)
    return model, loaded


def reference_scores(model: nn.Module, reference: nn.Module, images: Tensor, *, batch_size: int = 16) -> dict:
    """uint8 [N, 3, S, S] source images through both -> mean PSNR / SSIM / L1 of model vs reference."""
    psnrs, ssims, l1s = [], [], []
    for chunk in images.split(batch_size):
        ours = translate_uint8(model, chunk, batch_size=batch_size)
        theirs = translate_uint8(reference, chunk, batch_size=batch_size)
        psnrs.append(psnr(theirs, ours))
        ssims.append(ssim(theirs, ours))
        l1s.append(cycle_l1(theirs, ours))
    values = {k: torch.cat(v).double() for k, v in (("psnr", psnrs), ("ssim", ssims), ("l1", l1s))}
    # Identical outputs have infinite PSNR; the mean is then inf, which JSON cannot hold: say so instead.
    finite = torch.isfinite(values["psnr"])
    return {
        "n": int(images.shape[0]),
        "psnr": float(values["psnr"][finite].mean()) if bool(finite.any()) else None,
        "identical": int((~finite).sum()),
        "ssim": float(values["ssim"].mean()),
        "l1": float(values["l1"].mean()),
    }


def _directions(model_dirs: list[str], cfg, reference_direction: str | None) -> dict[str, str]:
    """model direction -> reference direction."""
    pairs = {d: d for d in model_dirs}
    if cfg is not None and cfg.model.kind == "distill":
        pairs["a2b"] = cfg.distill.direction
    if reference_direction is not None:
        pairs["a2b"] = reference_direction
    return pairs


def _default_out(loaded: LoadedGenerator) -> Path:
    path = Path(loaded.path)
    if path.parent.name == "checkpoints":  # <run>/checkpoints/<name>
        suffix = "" if path.name == "latest" else f"_{path.name}"
        return path.parent.parent / f"eval_reference{suffix}.json"
    return path.parent / f"{path.stem}.eval_reference.json"


def evaluate_reference(
    checkpoint: str | os.PathLike,
    reference: str | os.PathLike,
    *,
    reference_direction: str | None = None,
    dataroot: str | os.PathLike | None = None,
    test_a: str | os.PathLike | None = None,
    test_b: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    image_size: int | None = None,
    max_images: int | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 16,
    echo: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Compare ``checkpoint`` (any model file) with ``reference`` on the test split; write and return the
    record (see the module docstring). Test folders as ``evaluate_checkpoint`` finds them; only the
    source domain of each compared direction is needed."""
    start = time.perf_counter()
    dev = resolve_device(device)
    with model_memory_guard(checkpoint):
        model_a2b, loaded = _load(checkpoint, "a2b", dev)
    cfg = loaded.info.config
    two_sided = loaded.kind == "checkpoint" and cfg is not None and cfg.model.kind == "cyclegan"
    pairs = _directions(["a2b", "b2a"] if two_sided else ["a2b"], cfg, reference_direction)
    models = {"a2b": model_a2b}
    references = {}
    with model_memory_guard(reference):
        for ours, theirs in list(pairs.items()):
            try:
                references[ours] = _load(reference, theirs, dev)[0]
            except CheckpointError:
                if ours == "a2b":
                    raise
                del pairs[ours]  # the reference has no B -> A generator: compare a2b only
                echo("evaluate: the reference translates one direction; comparing a2b only")
        if "b2a" in pairs:
            models["b2a"] = _load(checkpoint, "b2a", dev)[0]
    folders = _test_folders(cfg, pairs, dataroot=dataroot, test_a=test_a, test_b=test_b)
    size = image_size or (cfg.data.crop_size if cfg is not None else None)
    if size is None:
        raise EvaluationError(f"{checkpoint}: records no training size; give --image-size")
    record: dict = {
        "schema": EVAL_SCHEMA,
        "cyclegan_version": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "checkpoint": str(loaded.path),
        "reference": str(reference),
        "data": {"image_size": size, "resize": "bicubic to image_size x image_size"},
    }
    for ours, theirs in pairs.items():
        domain = SOURCE_DOMAIN[ours]
        images, skipped = load_domain(folders[domain], domain, size=size, max_images=max_images)
        if skipped:
            echo(f"warning: skipped {len(skipped)} unreadable image(s): "
                 + "; ".join(f"{p} ({why})" for p, why in skipped))
        if images.shape[0] == 0:
            raise EvaluationError(f"{folders[domain]}: no usable test images for domain {domain}")
        echo(f"evaluate: {ours} vs reference {theirs} on {images.shape[0]} test-{domain} images at "
             f"{size}x{size} on {dev}")
        scores = reference_scores(models[ours], references[ours], images, batch_size=batch_size)
        record[ours] = {"reference_direction": theirs, "source": domain, "test_folder": str(folders[domain]),
                        "skipped": [f"{p} ({why})" for p, why in skipped], **scores}
    record["seconds"] = round(time.perf_counter() - start, 3)
    out_path = Path(out) if out else _default_out(loaded)
    write_json_atomic(out_path, record)
    record["out"] = str(out_path)
    return record


def _test_folders(cfg, pairs: dict[str, str], *, dataroot, test_a, test_b) -> dict[str, Path]:
    """Domain -> test folder, for the source domain of every compared direction."""
    needed = {SOURCE_DOMAIN[d] for d in pairs}
    if test_a or test_b:
        given = {"A": test_a, "B": test_b}
        missing = sorted(d for d in needed if not given[d])
        if missing:
            raise EvaluationError(f"--test-{missing[0].lower()}: needed to compare "
                                  f"{'a2b' if missing[0] == 'A' else 'b2a'} (domain {missing[0]} test "
                                  "images)")
        return {d: Path(given[d]) for d in needed}
    if cfg is None:
        if dataroot is None:
            raise EvaluationError("no test images: give --dataroot DIR (with testA/testB) or --test-a DIR")
        folder_a, folder_b = resolve_domains(DataConfig(dataroot=str(dataroot)), "test")
    else:
        folder_a, folder_b = resolve_test_folders(cfg, dataroot=Path(dataroot) if dataroot else None,
                                                  test_a=None, test_b=None)
    return {"A": folder_a, "B": folder_b}

