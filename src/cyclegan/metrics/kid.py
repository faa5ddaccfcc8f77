"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", sec. 4 / appendix).

KID is the unbiased estimate of the squared maximum mean discrepancy between two feature sets under
the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets so that the
spread across subsets gives a standard deviation. Unlike FID it is unbiased in the number of images,
which matters on test splits of ~100 images.
"""

from __future__ import annotations

import numpy as np

__all__ = ["kernel_inception_distance", "mmd2_unbiased", "polynomial_kernel"]


def polynomial_kernel(
    x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> np.ndarray:
    """[N, D] x [M, D] -> [N, M] Gram matrix (gamma * x.y + coef0)^degree; gamma defaults to 1 / D."""
    g = 1.0 / x.shape[1] if gamma is None else gamma
    return (g * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD^2 from Gram matrices [m, m], [n, n], [m, n]: diagonals (k(x, x)) are left out."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD needs at least 2 samples per set, got {m} and {n}")
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float(sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * k_xy.sum() / (m * n))


def kernel_inception_distance(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    n_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float, int]:
    """KID between feature sets [N, D] and [M, D] -> (mean, std over subsets, subset size used).

    Each subset draws ``min(subset_size, N, M)`` vectors from each set without replacement. When that
    is the whole of both sets every subset is the same and the std is 0.
    """
    x, y = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be [N, D] and [M, D], got {list(x.shape)} and {list(y.shape)}")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")
    size = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    values = np.empty(n_subsets)
    for i in range(n_subsets):
        xs = x[rng.choice(x.shape[0], size, replace=False)]
        ys = y[rng.choice(y.shape[0], size, replace=False)]
        values[i] = mmd2_unbiased(polynomial_kernel(xs, xs), polynomial_kernel(ys, ys),
                                  polynomial_kernel(xs, ys))
    return float(values.mean()), float(values.std()), size
