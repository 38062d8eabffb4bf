"""Kernel Inception Distance (Binkowski et al. 2018).

The unbiased estimate of the squared MMD with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged
over `num_subsets` random subsets of `subset_size` samples drawn without replacement from each set, as in the
authors' code, TF-GAN, clean-fid and torch-fidelity:

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
              - 2 sum_{i, j} k(x_i, y_j) / m^2.

Returns the mean and standard deviation over the subsets (torch-fidelity's kid_mean / kid_std; clean-fid reports
the mean). The estimate is unbiased, so it can be slightly negative when both sets come from one distribution.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["kid", "mmd2_unbiased"]


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: Any, y: Any) -> float:
    """Unbiased MMD^2 between two equal-size sets [m, d] with the KID kernel (x.y / d + 1)^3, float64."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError(f"mmd2_unbiased needs two sets of the same size >= 2, got {x.shape} and {y.shape}.")
    k_xx = _polynomial_kernel(x, x)
    k_yy = _polynomial_kernel(y, y)
    k_xy = _polynomial_kernel(x, y)
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid(features1: Any, features2: Any, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance between two feature sets [N1, D] and [N2, D].

    Args:
      features1, features2: features (e.g. Inception pool3) of the two sample sets.
      num_subsets: number of random subset pairs.
      subset_size: samples per subset, drawn without replacement; must not exceed N1 or N2 (no silent clamping:
        pass a smaller subset_size for small sets).
      seed: seed of the numpy Generator that draws the subsets (same seed, same subsets).

    Returns:
      (mean, std) of the unbiased MMD^2 over the subsets, in float64. Often reported x 1e3.
    """
    f1 = np.asarray(features1, dtype=np.float64)
    f2 = np.asarray(features2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must be [N1, D] and [N2, D] with the same D, got {f1.shape} and {f2.shape}.")
    if not (np.all(np.isfinite(f1)) and np.all(np.isfinite(f2))):
        raise ValueError("features contain NaN or inf.")
    if not isinstance(num_subsets, (int, np.integer)) or num_subsets < 1:
        raise ValueError(f"num_subsets must be a positive integer, got {num_subsets!r}.")
    if not isinstance(subset_size, (int, np.integer)) or subset_size < 2:
        raise ValueError(f"subset_size must be an integer >= 2, got {subset_size!r}.")
    if subset_size > min(f1.shape[0], f2.shape[0]):
        raise ValueError(f"subset_size={subset_size} exceeds the number of samples ({f1.shape[0]} and "
                         f"{f2.shape[0]}); pass subset_size <= {min(f1.shape[0], f2.shape[0])}.")
    rng = np.random.default_rng(seed)
    mmds = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        x = f1[rng.choice(f1.shape[0], subset_size, replace=False)]
        y = f2[rng.choice(f2.shape[0], subset_size, replace=False)]
        mmds[i] = mmd2_unbiased(x, y)
    return float(np.mean(mmds)), float(np.std(mmds))
