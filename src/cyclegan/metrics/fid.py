"""Frechet distance between Gaussians fitted to feature sets (FID, Heusel et al. 2017).

    FID = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))

The trace of the matrix square root is computed from the eigenvalues of the symmetric PSD matrix
S_1^(1/2) S_2 S_1^(1/2), which is similar to S_1 S_2 and so has the same spectrum. Unlike a general
``sqrtm`` this stays real and stable when the covariances are singular, which they always are on
CycleGAN test splits (120-140 images against 2048 feature dimensions).
"""

from __future__ import annotations

import numpy as np

__all__ = ["feature_statistics", "fid_from_features", "frechet_distance"]


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, D] features -> (mean [D], unbiased covariance [D, D]), both float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must have shape [N, D], got {list(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via its eigendecomposition (rounding negatives to 0)."""
    w, v = np.linalg.eigh((m + m.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu_1: np.ndarray, sigma_1: np.ndarray, mu_2: np.ndarray, sigma_2: np.ndarray
) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu_1, sigma_1) and N(mu_2, sigma_2).

    mu: [D], sigma: [D, D] symmetric positive semi-definite.
    """
    mu_1, mu_2 = np.atleast_1d(np.asarray(mu_1, np.float64)), np.atleast_1d(np.asarray(mu_2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma_1, np.float64)), np.atleast_2d(np.asarray(sigma_2, np.float64))
    d = mu_1.shape[0]
    if mu_2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu {list(mu_1.shape)} / {list(mu_2.shape)}, "
            f"sigma {list(s1.shape)} / {list(s2.shape)}"
        )
    root_1 = _psd_sqrt(s1)
    middle = root_1 @ s2 @ root_1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu_1 - mu_2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    # Rounding can push identical distributions a hair below zero; the distance itself cannot be.
    return max(value, 0.0)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two feature sets ([N, D] and [M, D])."""
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))
