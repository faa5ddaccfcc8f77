"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), mean and std over splits.

As in the original code, the images are cut into ``splits`` contiguous parts in their given order,
the score is computed on each part with that part's own marginal p(y), and the mean and standard
deviation of the per-part scores are reported (openai/improved-gan, inception_score/model.py).
"""

from __future__ import annotations

import numpy as np

__all__ = ["inception_score"]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def inception_score(logits: np.ndarray, *, splits: int = 10) -> tuple[float, float, int]:
    """[N, C] class logits -> (mean, std, splits used). Uses min(splits, N) splits, so N >= 1."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 1:
        raise ValueError(f"logits must have shape [N, C] with N >= 1, got {list(z.shape)}")
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    log_p = _log_softmax(z)  # log p(y|x), [N, C]
    n_splits = min(splits, z.shape[0])
    scores = []
    for part in np.array_split(log_p, n_splits):
        p = np.exp(part)
        log_marginal = np.log(p.mean(axis=0, keepdims=True))  # log p(y) of this split, [1, C]
        kl = (p * (part - log_marginal)).sum(axis=1)  # KL(p(y|x) || p(y)) per image, [n]
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores)), n_splits
