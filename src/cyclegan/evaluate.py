"""Evaluate translation quality on a test split, both directions: FID, KID, IS, GMS, cycle L1/PSNR/SSIM.

Protocol (comparable with published CycleGAN / CUT tables when the Inception weights are present):

- test images (``testA``/``testB`` of a dataroot, or two folders) are resized to the checkpoint's
  ``data.crop_size`` square with bicubic resampling, as the CycleGAN test script does; 256 x 256 for
  the paper's models, where horse2zebra is a no-op;
- a2b translates every test-A image with G_A and compares the outputs with the real test-B images
  (and b2a the reverse); outputs are quantised to uint8 first, exactly as if saved as PNG;
- FID / KID / IS use ``metrics.inception`` (pytorch-fid's Inception and preprocessing); IS and GMS
  are of the translated images; cycle L1 / PSNR / SSIM compare x with G_B(G_A(x)) (and the reverse).

Without the Inception weights the reconstruction scores are still computed and written; the result
records the reason in ``inception_error`` and the CLI exits non-zero.

``TrainingEvaluator`` is the same computation for ``--eval-every`` inside the training loop: it loads
and featurises the real test images once and returns flat scalar records for ``log.jsonl`` /
``metrics.jsonl`` / TensorBoard, with the value to select ``checkpoints/best`` by.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from cyclegan import __version__
from cyclegan.checkpoint import load_generator, resolve_checkpoint
from cyclegan.config import Config
from cyclegan.data import find_images, resolve_domains
from cyclegan.devices import resolve_device
from cyclegan.errors import EvaluationError, ImageLoadError, InceptionUnavailableError
from cyclegan.fileio import write_json_atomic
from cyclegan.image import load_image, pil_to_uint8
from cyclegan.metrics.fid import fid_from_features
from cyclegan.metrics.generate import translate_uint8
from cyclegan.metrics.gms import average_gms, gms
from cyclegan.metrics.inception import FeatureExtractor, Features, InceptionFeatureExtractor
from cyclegan.metrics.isc import inception_score
from cyclegan.metrics.kid import kernel_inception_distance
from cyclegan.metrics.reconstruction import cycle_l1, psnr, ssim
from cyclegan.modelfile import EXPORTED_WEIGHTS, load_any_generator, model_memory_guard

__all__ = [
    "DIRECTIONS",
    "TrainingEvaluator",
    "best_from_metrics_log",
    "evaluate_checkpoint",
    "evaluate_generators",
    "evaluate_run_during_training",
    "extract_features",
    "flatten_result",
    "is_improvement",
    "load_test_images",
]

EVAL_SCHEMA = 1

# direction -> (source domain, target domain, forward generator, backward generator)
DIRECTIONS: dict[str, tuple[str, str, str, str]] = {
    "a2b": ("A", "B", "G_A", "G_B"),
    "b2a": ("B", "A", "G_B", "G_A"),
}


def load_test_images(
    files: Sequence[Path], *, size: int, max_images: int | None = None
) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """Decode and bicubic-resize to size x size -> (uint8 [N, 3, size, size], [(skipped file, reason)])."""
    chosen = list(files)[:max_images] if max_images else list(files)
    images, skipped = [], []
    for path in chosen:
        try:
            # a --val-fraction split of an .npz domain holds decoded images, not paths
            img = path if isinstance(path, Image.Image) else load_image(path)
        except ImageLoadError as e:
            skipped.append((str(path), e.reason))
            continue
        if img.size != (size, size):
            img = img.resize((size, size), Image.BICUBIC)
        images.append(pil_to_uint8(img))
    if not images:
        return torch.empty(0, 3, size, size, dtype=torch.uint8), skipped
    return torch.stack(images), skipped


# ------------------------------------------------------------------------------------------- core


def extract_features(
    extractor: FeatureExtractor,
    images: torch.Tensor,
    *,
    batch_size: int = 50,
    on_batch: Callable[[int], None] | None = None,
) -> Features:
    """Run ``extractor`` over uint8 [N, 3, H, W] in batches -> Features with N rows.

    ``on_batch(n)`` is called after each batch of n images (a progress bar's update)."""
    parts = []
    for chunk in images.split(batch_size):
        parts.append(extractor(chunk))
        if on_batch is not None:
            on_batch(chunk.shape[0])
    logits = None if any(p.logits is None for p in parts) else np.concatenate([p.logits for p in parts])
    return Features(pool=np.concatenate([p.pool for p in parts]), logits=logits)


def _mean(values: list[torch.Tensor]) -> float:
    return float(torch.cat(values).double().mean().item())


def evaluate_generators(
    generators: Mapping[str, nn.Module],
    *,
    images: Mapping[str, torch.Tensor],
    extractor: FeatureExtractor | None = None,
    real_features: Mapping[str, Features] | None = None,
    batch_size: int = 16,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    is_splits: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Both directions -> {"a2b": {...}, "b2a": {...}, "summary": {...}}.

    ``generators`` maps "G_A" (A->B) and "G_B" (B->A) to modules (their device is used);
    ``images`` maps "A" / "B" to uint8 [N, 3, S, S] real test images. Without ``extractor`` only the
    reconstruction scores are computed. ``real_features`` ("A"/"B" -> Features) skips re-featurising
    the real images (the training hook caches them). KID subsets default to min(1000, N/2) images of
    the smaller set, so its std is meaningful on ~100-image test splits; KID is unbiased in the
    subset size, so this changes the spread, not the expected value. ``progress`` shows a bar on
    stderr over the images featurised and translated (a CPU evaluation can take minutes).
    """
    if "G_A" not in generators:
        raise EvaluationError("evaluate_generators needs generator G_A (and G_B for a two-sided model)")
    # A one-sided model (CUT / FastCUT) has only G_A: a2b is scored, with no cycle reconstruction.
    directions = {d: v for d, v in DIRECTIONS.items() if v[2] in generators}
    for d in ("A", "B"):
        if d not in images or images[d].shape[0] < 2:
            n = 0 if d not in images else images[d].shape[0]
            raise EvaluationError(f"test domain {d} has {n} usable image(s); evaluation needs at least 2")
    real_features = dict(real_features or {})
    to_featurise = [d for d in ("A", "B") if extractor is not None and d not in real_features]
    total = sum(int(images[d].shape[0]) for d in to_featurise)
    total += sum(int(images[v[0]].shape[0]) for v in directions.values())
    bar = tqdm(total=total, unit="img", desc="evaluate", dynamic_ncols=True, file=sys.stderr,
               disable=not progress)
    try:
        for d in to_featurise:
            real_features[d] = extract_features(extractor, images[d], batch_size=batch_size, on_batch=bar.update)
        result = _score_directions(generators, directions, images, extractor, real_features, batch_size,
                                   kid_subsets, kid_subset_size, is_splits, seed, bar)
    finally:
        bar.close()

    summary = {}
    for key in ("fid", "kid_mean", "is_mean", "gms", "cycle_l1", "psnr", "ssim"):
        vals = [result[d][key] for d in directions if key in result[d]]
        if vals and len(vals) == len(directions):
            # seed 004's "Avg GMS" is exactly this mean for gms
            summary[f"{key.removesuffix('_mean')}_avg"] = average_gms(vals) if key == "gms" else float(np.mean(vals))
    result["summary"] = summary
    return result


def _score_directions(generators, directions, images, extractor, real_features, batch_size, kid_subsets,
                      kid_subset_size, is_splits, seed, bar) -> dict:
    """evaluate_generators' per-direction scores; ``bar`` advances by each batch translated."""
    result: dict = {}
    for direction, (src, tgt, fwd, bwd) in directions.items():
        l1s, psnrs, ssims, fake_feats = [], [], [], []
        for real in images[src].split(batch_size):  # [b, 3, S, S] uint8
            fake = translate_uint8(generators[fwd], real, batch_size=batch_size)
            if bwd in generators:
                rec = translate_uint8(generators[bwd], fake, batch_size=batch_size)
                l1s.append(cycle_l1(real, rec))
                psnrs.append(psnr(real, rec))
                ssims.append(ssim(real, rec))
            if extractor is not None:
                fake_feats.append(extractor(fake))
            bar.update(real.shape[0])
        scores: dict = {
            "source": src,
            "target": tgt,
            "n_source": int(images[src].shape[0]),
            "n_target": int(images[tgt].shape[0]),
        }
        if l1s:
            scores.update(cycle_l1=_mean(l1s), psnr=_mean(psnrs), ssim=_mean(ssims))
        if extractor is not None:
            fake_pool = np.concatenate([f.pool for f in fake_feats])  # [N_src, D]
            real_pool = real_features[tgt].pool  # [N_tgt, D]
            scores["fid"] = fid_from_features(real_pool, fake_pool)
            size = kid_subset_size or min(1000, max(2, min(len(real_pool), len(fake_pool)) // 2))
            kid_mean, kid_std, used = kernel_inception_distance(
                real_pool, fake_pool, n_subsets=kid_subsets, subset_size=size, seed=seed
            )
            scores.update(kid_mean=kid_mean, kid_std=kid_std, kid_subset_size=used, kid_subsets=kid_subsets)
            if all(f.logits is not None for f in fake_feats):
                is_mean, is_std, splits = inception_score(
                    np.concatenate([f.logits for f in fake_feats]), splits=is_splits
                )
                scores.update(is_mean=is_mean, is_std=is_std, is_splits=splits)
                scores["gms"] = gms(fid=scores["fid"], inception_score=is_mean)
        result[direction] = scores
    return result


def _resolve_test_folders(
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


def _load_domain(folder: Path, name: str, *, size: int, max_images: int | None) -> tuple[torch.Tensor, list]:
    files = find_images(folder)
    if not files:
        raise EvaluationError(f"{folder}: no test images for domain {name}")
    images, skipped = load_test_images(files, size=size, max_images=max_images)
    return images, skipped


def _try_inception(
    inception_weights: Path | None, device: torch.device
) -> tuple[FeatureExtractor | None, str | None]:
    try:
        return InceptionFeatureExtractor(inception_weights, device=device), None
    except InceptionUnavailableError as e:
        return None, str(e)


def _default_out(ckpt: Path) -> Path:
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
) -> dict:
    """Evaluate a run or checkpoint directory on a test split, write ``eval.json`` atomically, return it.

    Test folders: ``test_a``/``test_b``, else ``dataroot``'s testA/testB, else the dataroot saved in the
    checkpoint's config. ``extractor`` overrides the feature network (tests inject a random one);
    otherwise the Inception weights are looked up (``inception_weights`` or the torch hub cache) unless
    ``use_inception`` is False. ``out`` defaults to ``<run>/eval.json`` (``eval_<name>.json`` for a
    checkpoint other than ``latest``). The result's ``inception_error`` says why FID/KID/IS are absent.
    Unreadable test images are left out, listed in the result and reported through ``echo``;
    ``progress`` shows a bar on stderr.
    """
    start = time.perf_counter()
    ckpt = resolve_checkpoint(checkpoint)
    dev = resolve_device(device)
    with model_memory_guard(ckpt):
        if (ckpt / EXPORTED_WEIGHTS).is_file():  # a safetensors export or import: one generator, one direction
            loaded = load_any_generator(ckpt, device=dev)
            if loaded.info.direction != "a2b" or loaded.info.config is None:
                raise EvaluationError(f"{ckpt}: holds only the {loaded.info.direction} generator; evaluate scores "
                                      "a2b (A -> B) and, for a checkpoint with both, b2a")
            g_a, cfg, g_b = loaded.model, loaded.info.config, None
        else:
            g_a, cfg = load_generator(ckpt, direction="a2b", device=dev)
            # One-sided models (CUT / FastCUT) have no B -> A generator: only a2b is scored.
            g_b = load_generator(ckpt, direction="b2a", device=dev)[0] if cfg.model.kind == "cyclegan" else None
    folder_a, folder_b = _resolve_test_folders(
        cfg,
        dataroot=Path(dataroot) if dataroot else None,
        test_a=Path(test_a) if test_a else None,
        test_b=Path(test_b) if test_b else None,
    )
    size = image_size or cfg.data.crop_size
    images_a, skipped_a = _load_domain(folder_a, "A", size=size, max_images=max_images)
    images_b, skipped_b = _load_domain(folder_b, "B", size=size, max_images=max_images)
    skipped = skipped_a + skipped_b
    if skipped:
        names = "; ".join(f"{p} ({why})" for p, why in skipped)
        echo(f"warning: skipped {len(skipped)} unreadable image(s): {names}")
    echo(f"evaluate: {len(images_a)} test-A and {len(images_b)} test-B images at {size}x{size} on {dev}")

    inception_error = None
    if extractor is None and use_inception:
        extractor, inception_error = _try_inception(Path(inception_weights) if inception_weights else None, dev)
        if inception_error:
            echo("evaluate: no Inception network, so no FID/KID/IS; computing the reconstruction metrics")
    elif extractor is None:
        inception_error = "Inception metrics disabled (--no-inception)"

    scores = evaluate_generators(
        {"G_A": g_a, **({"G_B": g_b} if g_b is not None else {})},
        images={"A": images_a, "B": images_b},
        extractor=extractor,
        batch_size=batch_size,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        is_splits=is_splits,
        seed=seed,
        progress=progress,
    )
    meta = {}
    try:
        meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass  # meta.json is informational; the weights and config are what matter
    record = {
        "schema": EVAL_SCHEMA,
        "cyclegan_version": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "checkpoint": str(ckpt),
        "step": meta.get("step"),
        "epoch": meta.get("epoch"),
        "generator": cfg.model.generator.name,
        "data": {
            "test_a": str(folder_a),
            "test_b": str(folder_b),
            "image_size": size,
            "resize": "bicubic to image_size x image_size",
            "skipped": [f"{p} ({why})" for p, why in skipped],
        },
        "features": extractor.provenance() if extractor is not None else None,
        "inception_error": inception_error,
        **scores,
        "seconds": round(time.perf_counter() - start, 3),
    }
    out_path = Path(out) if out else _default_out(ckpt)
    write_json_atomic(out_path, record)
    record["out"] = str(out_path)
    return record


# ------------------------------------------------------------------------------ training hook


def flatten_result(result: Mapping) -> dict[str, float]:
    """evaluate_generators' nested result -> flat scalars: ``fid_a2b``, ``ssim_b2a``, ``fid_avg``, ..."""
    flat: dict[str, float] = {}
    for direction in DIRECTIONS:
        for key, value in result.get(direction, {}).items():
            if isinstance(value, (int, float)) and not key.startswith("n_") and key not in (
                "kid_subset_size", "kid_subsets", "is_splits"
            ):
                flat[f"{key}_{direction}"] = float(value)
    flat.update({k: float(v) for k, v in result.get("summary", {}).items()})
    return flat


def is_improvement(record: Mapping, best: float | None) -> bool:
    """True when ``record["selection_value"]`` beats ``best`` (lower is better; None = no best yet)."""
    value = record.get("selection_value")
    if value is None or not math.isfinite(value):
        return False
    return best is None or value < best


def best_from_metrics_log(path: str | os.PathLike, *, metric: str) -> float | None:
    """Lowest ``selection_value`` recorded for ``metric`` in a ``metrics.jsonl`` (None if none): restores
    the best-so-far on ``--resume``. Unreadable lines (a kill mid-write) are ignored."""
    best = None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("selection_metric") == metric and is_improvement(rec, best):
            best = rec["selection_value"]
    return best


def _as_generators(models: Any) -> dict[str, nn.Module]:
    if isinstance(models, Mapping):
        return {k: models[k] for k in ("G_A", "G_B") if k in models}
    if isinstance(models, (tuple, list)) and len(models) == 2:
        return {"G_A": models[0], "G_B": models[1]}
    if hasattr(models, "G_A") and hasattr(models, "G_B"):
        return {"G_A": models.G_A, "G_B": models.G_B}
    raise TypeError("expected a CycleGAN, a mapping with G_A and G_B, or a (G_A, G_B) pair")


class TrainingEvaluator:
    """Metrics during training (``--eval-every``): build once before the loop, call at each evaluation.

    Loads the test split (or the ``files_a`` / ``files_b`` of a ``--val-fraction`` carve-out) once at
    ``cfg.data.crop_size``; tries the Inception weights once (``extractor`` overrides). Each call returns
    a flat record: ``step``, ``epoch``, ``fid_a2b`` ... ``cycle_l1_avg``, ``selection_metric`` and
    ``selection_value`` (lower is better: ``fid_avg``, or ``cycle_l1_avg`` when Inception is missing),
    and ``eval_seconds``. Constructing it raises DataError / EvaluationError when there is no test data.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        device: str | torch.device = "cpu",
        files_a: Sequence[Path] | None = None,
        files_b: Sequence[Path] | None = None,
        extractor: FeatureExtractor | None = None,
        inception_weights: str | os.PathLike | None = None,
        use_inception: bool = True,
        max_images: int | None = None,
        batch_size: int = 16,
        kid_subsets: int = 100,
        is_splits: int = 10,
    ) -> None:
        self.device = resolve_device(device)
        if (files_a is None) != (files_b is None):
            raise EvaluationError("TrainingEvaluator: give both files_a and files_b, or neither")
        if files_a is None:
            folder_a, folder_b = resolve_domains(cfg.data, "test")
            files_a, files_b = find_images(folder_a), find_images(folder_b)
            self.source = f"test split ({folder_a}, {folder_b})"
        else:
            self.source = "validation carve-out"
        size = cfg.data.crop_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, self.skipped_a = load_test_images(files_a, size=size, max_images=max_images)
            b, self.skipped_b = load_test_images(files_b, size=size, max_images=max_images)
        self.images = {"A": a, "B": b}
        for d, imgs in self.images.items():
            if imgs.shape[0] < 2:
                raise EvaluationError(
                    f"--eval-every: {self.source} has {imgs.shape[0]} usable domain-{d} image(s); need >= 2"
                )
        self.inception_error: str | None = None
        if extractor is None and use_inception:
            extractor, self.inception_error = _try_inception(
                Path(inception_weights) if inception_weights else None, self.device
            )
        elif extractor is None:
            self.inception_error = "Inception metrics disabled"
        self.extractor = extractor
        self.batch_size, self.kid_subsets, self.is_splits = batch_size, kid_subsets, is_splits
        self._real_features: dict[str, Features] | None = None

    @property
    def selection_metric(self) -> str:
        return "fid_avg" if self.extractor is not None else "cycle_l1_avg"

    @property
    def note(self) -> str:
        """One line for the log saying what ``checkpoints/best`` tracks and why."""
        if self.extractor is not None:
            return f"checkpoints/best tracks fid_avg (lowest mean FID of a2b and b2a, {self.extractor.name})"
        return f"checkpoints/best tracks cycle_l1_avg (no FID: {self.inception_error})"

    def describe(self) -> dict:
        """Fixed facts for the run's log: image counts, feature network, selection metric."""
        return {
            "eval_source": self.source,
            "eval_images_a": int(self.images["A"].shape[0]),
            "eval_images_b": int(self.images["B"].shape[0]),
            "eval_features": self.extractor.name if self.extractor is not None else None,
            "selection_metric": self.selection_metric,
            "note": self.note,
        }

    def __call__(self, models: Any, *, step: int, epoch: int) -> dict:
        start = time.perf_counter()
        generators = _as_generators(models)
        if self.extractor is not None and self._real_features is None:
            self._real_features = {
                d: extract_features(self.extractor, imgs, batch_size=self.batch_size)
                for d, imgs in self.images.items()
            }
        result = evaluate_generators(
            generators,
            images=self.images,
            extractor=self.extractor,
            real_features=self._real_features,
            batch_size=self.batch_size,
            kid_subsets=self.kid_subsets,
            is_splits=self.is_splits,
        )
        flat = flatten_result(result)
        return {
            "step": step,
            "epoch": epoch,
            **flat,
            "selection_metric": self.selection_metric,
            "selection_value": flat.get(self.selection_metric),
            "eval_seconds": round(time.perf_counter() - start, 3),
        }


def evaluate_run_during_training(
    models: Any,
    cfg: Config,
    *,
    step: int,
    epoch: int,
    evaluator: TrainingEvaluator | None = None,
    **evaluator_kwargs: Any,
) -> dict:
    """One evaluation record for the training loop (see TrainingEvaluator, which this wraps).

    Pass a ``TrainingEvaluator`` built once before the loop; without one, a new one is built per call
    (reloading the test images and the feature network each time).
    """
    evaluator = evaluator or TrainingEvaluator(cfg, **evaluator_kwargs)
    return evaluator(models, step=step, epoch=epoch)
