"""``cyclegan evaluate``: score a run or checkpoint on a test split and write ``eval.json``."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cyclegan.checkpoint import load_generator, resolve_checkpoint
from cyclegan.config import Config
from cyclegan.data import resolve_domains
from cyclegan.devices import resolve_device
from cyclegan.errors import EvaluationError
from cyclegan.evaluate.classifier import DEFAULT_MIN_ACCURACY, build_domain_scorer
from cyclegan.evaluate.scores import EVAL_SCHEMA, evaluate_generators, load_domain, try_inception
from cyclegan.fileio import write_json_atomic
from cyclegan.metrics.inception import FeatureExtractor
from cyclegan.modelfile import EXPORTED_WEIGHTS, load_any_generator, model_memory_guard
from cyclegan.sources import resolve_source
from cyclegan.version import __version__


def resolve_test_folders(
    cfg: Config, *, dataroot: Path | None, test_a: Path | None, test_b: Path | None
) -> tuple[Path, Path]:
    if test_a or test_b:
        if not (test_a and test_b):
            raise EvaluationError("--test-a and --test-b go together: give both folders")
        return Path(test_a), Path(test_b)
    data = cfg.data
    if dataroot is not None:
        data = dataclasses.replace(data, dataroot=str(dataroot), data_a=None, data_b=None)
    elif not data.dataroot:
        raise EvaluationError(
            "no test images: the checkpoint was trained from --data-a/--data-b, so give --dataroot DIR "
            "(with testA/testB) or --test-a DIR --test-b DIR"
        )
    return resolve_domains(data, "test")


def default_out(ckpt: Path) -> Path:
    if ckpt.parent.name == "checkpoints":  # <run>/checkpoints/<name>
        run = ckpt.parent.parent
        return run / ("eval.json" if ckpt.name == "latest" else f"eval_{ckpt.name}.json")
    return ckpt.parent / f"{ckpt.name}.eval.json"


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    dataroot: str | os.PathLike | None = None,
    test_a: str | os.PathLike | None = None,
    test_b: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    extractor: FeatureExtractor | None = None,
    inception_weights: str | os.PathLike | None = None,
    use_inception: bool = True,
    image_size: int | None = None,
    max_images: int | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 16,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    is_splits: int = 10,
    seed: int = 0,
    echo: Callable[[str], None] = lambda msg: None,
    progress: bool = False,
    classifier: bool = False,
    classifier_min_accuracy: float = DEFAULT_MIN_ACCURACY,
) -> dict:
    """Evaluate a run or checkpoint directory on a test split, write ``eval.json`` atomically, return it.

    Test folders: ``test_a``/``test_b``, else ``dataroot``'s testA/testB, else the dataroot saved in the
    checkpoint's config. ``extractor`` overrides the feature network (tests inject a random one);
    otherwise the Inception weights are looked up (``inception_weights`` or the torch hub cache) unless
    ``use_inception`` is False. ``out`` defaults to ``<run>/eval.json`` (``eval_<name>.json`` for a
    checkpoint other than ``latest``). The result's ``inception_error`` says why FID/KID/IS are absent.
    Unreadable test images are left out, listed in the result and reported through ``echo``;
    ``progress`` shows a bar on stderr. ``classifier`` adds the domain-classification score
    (``evaluate.classifier``: a small CNN trained on the training images of ``dataroot`` or of the
    checkpoint's config, cached; refused below ``classifier_min_accuracy`` held-out accuracy).
    """
    start = time.perf_counter()
    ckpt = resolve_checkpoint(resolve_source(checkpoint))
    dev = resolve_device(device)
    g_a, g_b, cfg = _load_generators(ckpt, dev)
    test = _load_test_images(cfg, dataroot=dataroot, test_a=test_a, test_b=test_b,
                             size=image_size or cfg.data.crop_size, max_images=max_images, echo=echo)
    echo(f"evaluate: {len(test.images['A'])} test-A and {len(test.images['B'])} test-B images at "
         f"{test.size}x{test.size} on {dev}")
    # Before any translation: a classifier below the accuracy threshold refuses the whole evaluation.
    scorer = None
    if classifier:
        scorer = build_domain_scorer(cfg, test.images, dataroot=Path(dataroot) if dataroot else None,
                                     min_accuracy=classifier_min_accuracy, device=dev, echo=echo)
    extractor, inception_error = _feature_extractor(extractor, use_inception=use_inception,
                                                    inception_weights=inception_weights, device=dev,
                                                    echo=echo)
    scores = evaluate_generators(
        {"G_A": g_a, **({"G_B": g_b} if g_b is not None else {})},
        images=test.images,
        extractor=extractor,
        batch_size=batch_size,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        is_splits=is_splits,
        seed=seed,
        progress=progress,
        domain_scorer=scorer,
    )
    record = {
        "schema": EVAL_SCHEMA,
        "cyclegan_version": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "checkpoint": str(ckpt),
        **_step_and_epoch(ckpt),
        "generator": cfg.model.generator.name,
        "data": {
            "test_a": str(test.folder_a),
            "test_b": str(test.folder_b),
            "image_size": test.size,
            "resize": "bicubic to image_size x image_size",
            "skipped": [f"{p} ({why})" for p, why in test.skipped],
        },
        "features": extractor.provenance() if extractor is not None else None,
        "inception_error": inception_error,
        "classifier": scorer.describe() if scorer is not None else None,
        **scores,
        "seconds": round(time.perf_counter() - start, 3),
    }
    out_path = Path(out) if out else default_out(ckpt)
    write_json_atomic(out_path, record)
    record["out"] = str(out_path)
    return record


def _load_generators(ckpt: Path, device: torch.device) -> tuple[nn.Module, nn.Module | None, Config]:
    """(G_A, G_B or None, config) of a checkpoint folder or a safetensors export (a2b only)."""
    with model_memory_guard(ckpt):
        if (ckpt / EXPORTED_WEIGHTS).is_file():  # a safetensors export or import: one generator, one way
            loaded = load_any_generator(ckpt, device=device)
            if loaded.info.direction != "a2b" or loaded.info.config is None:
                raise EvaluationError(f"{ckpt}: holds only the {loaded.info.direction} generator; evaluate "
                                      "scores a2b (A -> B) and, for a checkpoint with both, b2a")
            return loaded.model, None, loaded.info.config
        g_a, cfg = load_generator(ckpt, direction="a2b", device=device)
        # One-sided models (CUT / FastCUT) have no B -> A generator: only a2b is scored.
        if cfg.model.kind != "cyclegan":
            return g_a, None, cfg
        return g_a, load_generator(ckpt, direction="b2a", device=device)[0], cfg


@dataclass(frozen=True)
class _TestImages:
    folder_a: Path
    folder_b: Path
    size: int
    images: dict[str, torch.Tensor]  # "A" / "B" -> uint8 [N, 3, size, size]
    skipped: list[tuple[Path, str]]  # unreadable files and why


def _load_test_images(
    cfg: Config, *, dataroot: str | os.PathLike | None, test_a: str | os.PathLike | None,
    test_b: str | os.PathLike | None, size: int, max_images: int | None, echo: Callable[[str], None],
) -> _TestImages:
    """The test split, resized to ``size``; unreadable images are left out and reported through ``echo``."""
    folder_a, folder_b = resolve_test_folders(
        cfg,
        dataroot=Path(dataroot) if dataroot else None,
        test_a=Path(test_a) if test_a else None,
        test_b=Path(test_b) if test_b else None,
    )
    images_a, skipped_a = load_domain(folder_a, "A", size=size, max_images=max_images)
    images_b, skipped_b = load_domain(folder_b, "B", size=size, max_images=max_images)
    skipped = skipped_a + skipped_b
    if skipped:
        names = "; ".join(f"{p} ({why})" for p, why in skipped)
        echo(f"warning: skipped {len(skipped)} unreadable image(s): {names}")
    return _TestImages(folder_a=folder_a, folder_b=folder_b, size=size, images={"A": images_a, "B": images_b},
                       skipped=skipped)


def _feature_extractor(
    extractor: FeatureExtractor | None, *, use_inception: bool, inception_weights: str | os.PathLike | None,
    device: torch.device, echo: Callable[[str], None],
) -> tuple[FeatureExtractor | None, str | None]:
    """The given extractor, else Inception when wanted and found; with the reason when there is none."""
    if extractor is not None:
        return extractor, None
    if not use_inception:
        return None, "Inception metrics disabled (--no-inception)"
    extractor, error = try_inception(Path(inception_weights) if inception_weights else None, device)
    if error:
        echo("evaluate: no Inception network, so no FID/KID/IS; computing the reconstruction metrics")
    return extractor, error


def _step_and_epoch(ckpt: Path) -> dict[str, int | None]:
    try:
        meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}  # meta.json is informational; the weights and config are what matter
    if not isinstance(meta, dict):
        meta = {}
    return {"step": meta.get("step"), "epoch": meta.get("epoch")}
