"""``--classifier``: the domain-classification score (``metrics.domain_classifier``) as a workflow.

The classifier is trained on the real *training* images of the two domains (never on the test split
it then judges), once per data set: it is cached under the user cache
(``cyclegan.download.cache_dir()/domain_classifier``), keyed by a hash of the training files' names
and contents, the image size, the training settings and ``CLASSIFIER_VERSION``, and written
atomically. Nothing is downloaded, so it works offline and without pytorch-fid's weights.

Before it is used, its balanced accuracy on held-out training images must reach a threshold (0.8 by
default): a classifier that cannot tell real horses from real zebras says nothing about translations,
and the evaluation is refused with one line instead.

Per direction (A -> B): ``target_share`` (share of translated test-A images it assigns to B),
``target_share_real`` (share of real test-B images it assigns to B: the ceiling of the former),
``neither_share`` (translations it calls damaged, of neither domain: see ``metrics.domain_classifier``)
and ``classifier_fd`` (Frechet distance between its features of the translations and of the real test-B
images). Comparable only within one data set and one classifier (``classifier.key`` in the result).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from cyclegan.config import Config
from cyclegan.data import find_images, resolve_domains
from cyclegan.download import cache_dir
from cyclegan.errors import CycleGANError, EvaluationError
from cyclegan.evaluate.scores import check_test_images, load_test_images
from cyclegan.fileio import save_safetensors_atomic
from cyclegan.jsonfile import JsonFileError, check_fields
from cyclegan.metrics.domain_classifier import (
    CLASSIFIER_VERSION,
    ClassifierReport,
    ClassifierSettings,
    DomainClassifier,
    classifier_frechet_distance,
    classify,
    neither_share,
    target_share,
    train_domain_classifier,
)
from cyclegan.npz import ArrayImages

DEFAULT_MIN_ACCURACY = 0.8
# The classifier judges images of at most this size (larger test images are downscaled for it):
# the domain shows at 128 px, and training cost grows with the square of the size.
MAX_CLASSIFIER_SIZE = 128
# Training images per domain, at most (a seeded subset beyond): bounds time and memory on big sets.
MAX_TRAIN_IMAGES = 2000
# The cached classifier's report (safetensors metadata), field by field, checked before use.
REPORT_FIELDS = {f.name: float if f.type == "float" else int for f in dataclasses.fields(ClassifierReport)}
CACHE_SUBDIR = "domain_classifier"
DEFAULT_SETTINGS = ClassifierSettings()
NOTE = ("comparable only within one data set and one classifier (classifier.key); unlike FID there is no "
        "shared reference network")


def classifier_size(image_size: int) -> int:
    return min(int(image_size), MAX_CLASSIFIER_SIZE)


def training_domains(cfg: Config, dataroot: Path | None = None) -> tuple[Path, Path]:
    """The training folders (or .npz files) of the two domains: ``dataroot``'s trainA/trainB when given,
    else those saved in the checkpoint's config."""
    data = cfg.data
    if dataroot is not None:
        data = dataclasses.replace(data, dataroot=str(dataroot), data_a=None, data_b=None)
    try:
        return resolve_domains(data, "train")
    except CycleGANError as e:
        raise EvaluationError(f"--classifier needs the training images of both domains: {e}") from None


def _domain_items(path: Path, npz_key: str | None) -> list:
    """A domain's training images as paths (a folder) or decoded images (an .npz file)."""
    if path.suffix.lower() == ".npz":
        return list(ArrayImages(path, key=npz_key))
    return find_images(path)


def dataset_fingerprint(path_a: Path, path_b: Path, *,
                        npz_keys: tuple[str | None, str | None] = (None, None)) -> str:
    """SHA-256 over both domains' file names (relative to their folder) and contents: the same images
    anywhere on disk give the same key, and any change to them a new one."""
    h = hashlib.sha256()
    for name, path, key in (("A", path_a, npz_keys[0]), ("B", path_b, npz_keys[1])):
        h.update(f"domain {name}\0".encode())
        files = [path] if path.suffix.lower() == ".npz" else find_images(path)
        if path.suffix.lower() == ".npz":
            h.update(f"npz key {key}\0".encode())
        for f in files:
            rel = f.name if f == path else f.relative_to(path).as_posix()
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
            with open(f, "rb") as fh:
                h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def _subset(items: list, limit: int, seed: int) -> list:
    if len(items) <= limit:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
    return [items[i] for i in keep]


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> uint8 [N, 3, size, size], antialiased bicubic (a no-op at that size)."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bicubic", antialias=True,
                        align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


@dataclass
class TrainedClassifier:
    model: DomainClassifier
    report: ClassifierReport
    settings: ClassifierSettings
    key: str  # what the cache file is named after: version, size and a hash of data and settings
    path: Path | None  # the cache file (None: not cached)
    cached: bool  # loaded from the cache rather than trained now
    train_a: str
    train_b: str

    def provenance(self) -> dict:
        return {"version": CLASSIFIER_VERSION, "key": self.key,
                "cache_file": str(self.path) if self.path else None,
                "from_cache": self.cached, "size": self.report.size, "train_a": self.train_a,
                "train_b": self.train_b, "held_out_accuracy": self.report.accuracy, **{
                    k: v for k, v in self.report.to_dict().items() if k not in ("accuracy", "size")},
                "settings": self.settings.to_dict()}


def _read_cache(path: Path, device: torch.device) -> tuple[DomainClassifier, ClassifierReport] | None:
    """The cached classifier, or None when the file is missing or unreadable (then it is retrained)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["report"])
        check_fields(meta, path, REPORT_FIELDS, what="metadata report")
        state = load_file(str(path))
        report = ClassifierReport(**{k: meta[k] for k in REPORT_FIELDS})
        width = int(state["members.0.body.0.weight"].shape[0])
        members = len({k.split(".")[1] for k in state if k.startswith("members.")})
        model = DomainClassifier(width=width, members=members)
        model.load_state_dict(state)
    except (OSError, SafetensorError, KeyError, TypeError, ValueError, RuntimeError, RecursionError,
            JsonFileError):
        return None
    return model.to(device).eval(), report


def load_or_train_classifier(
    path_a: Path,
    path_b: Path,
    *,
    size: int,
    settings: ClassifierSettings | None = None,
    npz_keys: tuple[str | None, str | None] = (None, None),
    device: str | torch.device = "cpu",
    use_cache: bool = True,
    echo: Callable[[str], None] = lambda msg: None,
) -> TrainedClassifier:
    """The classifier for these two training domains at ``size`` px: from the cache, or trained now
    (minutes on a CPU; progress through ``echo``) and then cached."""
    device = torch.device(device)
    settings = settings or DEFAULT_SETTINGS
    fingerprint = dataset_fingerprint(path_a, path_b, npz_keys=npz_keys)
    digest = hashlib.sha256(json.dumps({"data": fingerprint, "size": size, "max_train": MAX_TRAIN_IMAGES,
                                        "settings": settings.to_dict()}, sort_keys=True).encode()).hexdigest()
    key = f"v{CLASSIFIER_VERSION}-{size}px-{digest[:20]}"
    path = cache_dir() / CACHE_SUBDIR / f"{key}.safetensors" if use_cache else None
    names = (str(path_a), str(path_b))
    if path is not None and (hit := _read_cache(path, device)) is not None:
        return TrainedClassifier(hit[0], hit[1], settings, key, path, True, *names)
    images = {}
    for name, folder, npz_key in (("A", path_a, npz_keys[0]), ("B", path_b, npz_keys[1])):
        items = _subset(_domain_items(folder, npz_key), MAX_TRAIN_IMAGES, settings.seed)
        images[name], skipped = load_test_images(items, size=size)
        if skipped:
            echo(f"classifier: skipped {len(skipped)} unreadable domain-{name} training image(s)")
        if images[name].shape[0] < 2:
            raise EvaluationError(f"{folder}: {images[name].shape[0]} usable domain-{name} training "
                                  "image(s); the domain classifier needs at least 2")
    echo(f"classifier: training on {images['A'].shape[0]} A and {images['B'].shape[0]} B images at "
         f"{size}x{size} (once per data set; cached)")
    started = time.perf_counter()
    model, report = train_domain_classifier(
        images["A"], images["B"], settings=settings, device=device,
        on_epoch=lambda m, e, n, loss: echo(f"classifier: network {m + 1}/{settings.members}, epoch {e}/{n}, "
                                            f"loss {loss:.3f}, {time.perf_counter() - started:.0f} s"),
    )
    if path is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_safetensors_atomic(state, path, metadata={"report": json.dumps(report.to_dict()),
                                                       "settings": json.dumps(settings.to_dict()),
                                                       "train_a": names[0], "train_b": names[1]})
    return TrainedClassifier(model, report, settings, key, path, False, *names)


class DomainScorer:
    """Scores translations with a trained classifier: ``scorer(fakes, target)`` -> the direction's
    ``target_share``, ``target_share_real`` and ``classifier_fd`` (``evaluate_generators``'
    ``domain_scorer``). Refuses (EvaluationError) a classifier whose held-out accuracy is below
    ``min_accuracy``. ``real`` maps "A"/"B" to the real uint8 test images of each domain."""

    def __init__(self, trained: TrainedClassifier, real: Mapping[str, torch.Tensor], *,
                 min_accuracy: float = DEFAULT_MIN_ACCURACY, batch_size: int = 64) -> None:
        acc = trained.report.accuracy
        if acc < min_accuracy:
            raise EvaluationError(
                f"domain classifier: held-out accuracy {acc:.1%} is below the required {min_accuracy:.0%} "
                f"(A {trained.report.accuracy_a:.1%}, B {trained.report.accuracy_b:.1%}; {trained.train_a} "
                f"vs {trained.train_b} at {trained.report.size} px), so its score would mean nothing; lower "
                "--classifier-min-accuracy to use it anyway"
            )
        self.trained, self.min_accuracy, self.batch_size = trained, min_accuracy, batch_size
        self.size = trained.report.size
        self._real = {d: classify(trained.model, resize_uint8(x, self.size), batch_size=batch_size)
                      for d, x in real.items()}

    def __call__(self, fakes: torch.Tensor, target: str) -> dict:
        """uint8 [N, 3, S, S] translations into domain ``target`` -> that direction's scores."""
        probs, feats = classify(self.trained.model, resize_uint8(fakes, self.size),
                                batch_size=self.batch_size)
        real_probs, real_feats = self._real[target]
        return {"target_share": target_share(probs, target),
                "target_share_real": target_share(real_probs, target),
                "neither_share": neither_share(probs),
                "classifier_fd": classifier_frechet_distance(real_feats, feats)}

    def describe(self) -> dict:
        """The ``classifier`` block of eval.json: what was used, how good it is, and the caveat."""
        return {**self.trained.provenance(), "min_accuracy": self.min_accuracy, "note": NOTE}


def build_domain_scorer(
    cfg: Config,
    real: Mapping[str, torch.Tensor],
    *,
    dataroot: Path | None = None,
    min_accuracy: float = DEFAULT_MIN_ACCURACY,
    device: str | torch.device = "cpu",
    settings: ClassifierSettings | None = None,
    echo: Callable[[str], None] = lambda msg: None,
) -> DomainScorer:
    """The scorer for a run of ``cfg``: its training domains (or ``dataroot``'s), the classifier at the
    test images' size (at most MAX_CLASSIFIER_SIZE), loaded from the cache or trained."""
    check_test_images(real)  # before minutes of classifier training, not after
    path_a, path_b = training_domains(cfg, dataroot)
    size = classifier_size(int(real["A"].shape[-1]))
    trained = load_or_train_classifier(path_a, path_b, size=size, settings=settings, device=device, echo=echo,
                                       npz_keys=(cfg.data.npz_key_a, cfg.data.npz_key_b))
    rep = trained.report
    echo(f"classifier: held-out accuracy {rep.accuracy:.1%} (A {rep.accuracy_a:.1%}, B {rep.accuracy_b:.1%}) "
         f"at {size} px{' (cached)' if trained.cached else ''}")
    return DomainScorer(trained, real, min_accuracy=min_accuracy)
