"""``--eval-every``: the evaluation inside the training loop. ``TrainingEvaluator`` loads and
featurises the real test images once and returns flat scalar records for ``log.jsonl`` /
``metrics.jsonl`` / TensorBoard, with the value to select ``checkpoints/best`` by.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclegan.config import Config
from cyclegan.data import find_images, resolve_domains
from cyclegan.devices import resolve_device
from cyclegan.errors import EvaluationError
from cyclegan.evaluate.classifier import DomainScorer, build_domain_scorer
from cyclegan.evaluate.scores import (
    DIRECTIONS,
    evaluate_generators,
    extract_features,
    load_test_images,
    try_inception,
)
from cyclegan.jsonfile import has_type
from cyclegan.metrics.inception import FeatureExtractor, Features


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
        if (isinstance(rec, dict) and rec.get("selection_metric") == metric
                # "x", true: skipped
                and has_type(rec.get("selection_value"), float) and is_improvement(rec, best)):
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
    ``classifier`` (default ``train.eval_classifier``) adds ``target_share_*`` and ``classifier_fd_*``
    from the domain classifier, trained on the run's training images or loaded from the cache here;
    below ``classifier_min_accuracy`` (default ``train.classifier_min_accuracy``) it raises.
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
        classifier: bool | None = None,
        classifier_min_accuracy: float | None = None,
        echo=lambda msg: None,
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
        self.domain_scorer: DomainScorer | None = None
        if cfg.train.eval_classifier if classifier is None else classifier:
            self.domain_scorer = build_domain_scorer(
                cfg, self.images, device=self.device, echo=echo,
                min_accuracy=(cfg.train.classifier_min_accuracy if classifier_min_accuracy is None
                              else classifier_min_accuracy))
        self.inception_error: str | None = None
        if extractor is None and use_inception:
            extractor, self.inception_error = try_inception(
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
            "eval_classifier": self.domain_scorer.describe() if self.domain_scorer is not None else None,
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
            domain_scorer=self.domain_scorer,
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
