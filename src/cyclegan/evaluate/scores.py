"""The scores of one evaluation: test images loaded at the checkpoint's size, translated both ways,
and compared (FID, KID, IS, GMS against the real target images; cycle L1, PSNR, SSIM against the
source). ``evaluate_generators`` is the whole computation; the workflow around it is in
``checkpoints.py`` (a saved checkpoint) and ``during_training.py`` (``--eval-every``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from cyclegan.data import find_images
from cyclegan.errors import EvaluationError, ImageLoadError, InceptionUnavailableError
from cyclegan.image import load_image, pil_to_uint8
from cyclegan.metrics.fid import fid_from_features
from cyclegan.metrics.generate import translate_uint8
from cyclegan.metrics.gms import average_gms, gms
from cyclegan.metrics.inception import FeatureExtractor, Features, InceptionFeatureExtractor
from cyclegan.metrics.isc import inception_score
from cyclegan.metrics.kid import kernel_inception_distance
from cyclegan.metrics.reconstruction import cycle_l1, psnr, ssim

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


def check_test_images(images: Mapping[str, torch.Tensor]) -> None:
    """EvaluationError unless both test domains hold at least 2 images (a covariance needs two)."""
    for d in ("A", "B"):
        if d not in images or images[d].shape[0] < 2:
            n = 0 if d not in images else images[d].shape[0]
            raise EvaluationError(f"test domain {d} has {n} usable image(s); evaluation needs at least 2")


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
    domain_scorer: Callable[[torch.Tensor, str], dict] | None = None,
) -> dict:
    """Both directions -> {"a2b": {...}, "b2a": {...}, "summary": {...}}.

    ``generators`` maps "G_A" (A->B) and "G_B" (B->A) to modules (their device is used);
    ``images`` maps "A" / "B" to uint8 [N, 3, S, S] real test images. Without ``extractor`` only the
    reconstruction scores are computed. ``real_features`` ("A"/"B" -> Features) skips re-featurising
    the real images (the training hook caches them). KID subsets default to min(1000, N/2) images of
    the smaller set, so its std is meaningful on ~100-image test splits; KID is unbiased in the
    subset size, so this changes the spread, not the expected value. ``progress`` shows a bar on
    stderr over the images featurised and translated (a CPU evaluation can take minutes).
    ``domain_scorer(translations, target domain)`` adds its scores to each direction (the domain
    classifier's, ``evaluate.classifier.DomainScorer``).
    """
    if "G_A" not in generators:
        raise EvaluationError("evaluate_generators needs generator G_A (and G_B for a two-sided model)")
    # A one-sided model (CUT / FastCUT) has only G_A: a2b is scored, with no cycle reconstruction.
    directions = {d: v for d, v in DIRECTIONS.items() if v[2] in generators}
    check_test_images(images)
    real_features = dict(real_features or {})
    to_featurise = [d for d in ("A", "B") if extractor is not None and d not in real_features]
    total = sum(int(images[d].shape[0]) for d in to_featurise)
    total += sum(int(images[v[0]].shape[0]) for v in directions.values())
    bar = tqdm(total=total, unit="img", desc="evaluate", dynamic_ncols=True, file=sys.stderr,
               disable=not progress)
    try:
        for d in to_featurise:
            real_features[d] = extract_features(extractor, images[d], batch_size=batch_size,
                                                on_batch=bar.update)
        result = _score_directions(generators, directions, images, extractor, real_features, batch_size,
                                   kid_subsets, kid_subset_size, is_splits, seed, bar, domain_scorer)
    finally:
        bar.close()

    summary = {}
    for key in ("fid", "kid_mean", "is_mean", "gms", "cycle_l1", "psnr", "ssim", "target_share",
                "classifier_fd"):
        vals = [result[d][key] for d in directions if key in result[d]]
        if vals and len(vals) == len(directions):
            # "Avg GMS" (cyclegan.metrics.gms) is this mean for gms
            mean = average_gms(vals) if key == "gms" else float(np.mean(vals))
            summary[f"{key.removesuffix('_mean')}_avg"] = mean
    result["summary"] = summary
    return result


def _score_directions(generators, directions, images, extractor, real_features, batch_size, kid_subsets,
                      kid_subset_size, is_splits, seed, bar, domain_scorer=None) -> dict:
    """evaluate_generators' per-direction scores; ``bar`` advances by each batch translated."""
    result: dict = {}
    for direction, (src, tgt, fwd, bwd) in directions.items():
        l1s, psnrs, ssims, fake_feats, fakes = [], [], [], [], []
        for real in images[src].split(batch_size):  # [b, 3, S, S] uint8
            fake = translate_uint8(generators[fwd], real, batch_size=batch_size)
            if bwd in generators:
                rec = translate_uint8(generators[bwd], fake, batch_size=batch_size)
                l1s.append(cycle_l1(real, rec))
                psnrs.append(psnr(real, rec))
                ssims.append(ssim(real, rec))
            if extractor is not None:
                fake_feats.append(extractor(fake))
            if domain_scorer is not None:
                fakes.append(fake)
            bar.update(real.shape[0])
        scores: dict = {
            "source": src,
            "target": tgt,
            "n_source": int(images[src].shape[0]),
            "n_target": int(images[tgt].shape[0]),
        }
        if l1s:
            scores.update(cycle_l1=_mean(l1s), psnr=_mean(psnrs), ssim=_mean(ssims))
        if domain_scorer is not None:
            scores.update(domain_scorer(torch.cat(fakes), tgt))
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


def load_domain(folder: Path, name: str, *, size: int, max_images: int | None) -> tuple[torch.Tensor, list]:
    files = find_images(folder)
    if not files:
        raise EvaluationError(f"{folder}: no test images for domain {name}")
    images, skipped = load_test_images(files, size=size, max_images=max_images)
    return images, skipped


def try_inception(
    inception_weights: Path | None, device: torch.device
) -> tuple[FeatureExtractor | None, str | None]:
    try:
        return InceptionFeatureExtractor(inception_weights, device=device), None
    except InceptionUnavailableError as e:
        return None, str(e)
