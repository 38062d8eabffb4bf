"""Frechet distance between Gaussians, and running feature statistics.

FID (Heusel et al. 2017) is the Frechet distance between two Gaussians fitted to network features:

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2).

The reference implementations (TTUR, pytorch-fid) compute `tr sqrt(S1 S2)` with `scipy.linalg.sqrtm` of the
non-symmetric product `S1 @ S2`, which can return complex values or NaNs when the product is (near) singular,
e.g. when there are fewer samples than feature dimensions, and then retry with `S + 1e-6 I`. Here the trace is
computed from a symmetric matrix with the same eigenvalues:

    A = S1^{1/2}                     (eigh of S1, tiny negative eigenvalues clipped to 0)
    tr sqrt(S1 S2) = tr sqrt(A S2 A) = sum_i sqrt(lambda_i(A S2 A))

`A S2 A` is symmetric positive semi-definite, so `eigvalsh` gives real eigenvalues (negatives are round-off and
are clipped). `S1 S2 = A (A S2)` and `A S2 A` have the same eigenvalues, so on well-conditioned inputs this
agrees with the reference route to round-off, and it stays finite and real on rank-deficient ones. (On
rank-deficient inputs both routes carry the same small error: an exactly-zero eigenvalue computed as +-eps
contributes sqrt(eps); e.g. two identical 2048-d covariances of rank 999 give about -0.01 instead of 0, with
traces of 4e5.)

`RunningStats` accumulates the mean and covariance of features in batches, in float64, with memory independent
of the number of samples (Chan et al.'s pairwise update of the mean and the centred scatter matrix, which is the
running-sums method without its cancellation), and saves them as .npz with the name of the feature network.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ddpm_jax.files import atomic_write

__all__ = ["frechet_distance", "RunningStats", "load_stats"]


def _check_gaussian(mu: Any, sigma: Any, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1:
        raise ValueError(f"mu{which} must be a 1-D mean vector [D], got shape {mu.shape}.")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise ValueError(f"sigma{which} must be a [D, D] = [{d}, {d}] covariance matching mu{which}, "
                         f"got shape {sigma.shape}.")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"mu{which} / sigma{which} contain NaN or inf.")
    return mu, sigma


def _sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (eigenvalues below 0 from round-off are clipped)."""
    sigma = 0.5 * (sigma + sigma.T)
    w, v = np.linalg.eigh(sigma)
    w = np.clip(w, 0.0, None)
    return (v * np.sqrt(w)) @ v.T


def trace_sqrt_product(sigma1: Any, sigma2: Any) -> float:
    """tr sqrt(sigma1 @ sigma2) for symmetric PSD matrices, in float64, via eigvalsh(S1^{1/2} S2 S1^{1/2})."""
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    a = _sqrt_psd(s1)
    m = a @ (0.5 * (s2 + s2.T)) @ a
    m = 0.5 * (m + m.T)
    ev = np.linalg.eigvalsh(m)
    return float(np.sum(np.sqrt(np.clip(ev, 0.0, None))))


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Args:
      mu1, mu2: means, shape [D].
      sigma1, sigma2: covariances, shape [D, D] (symmetric PSD; e.g. `np.cov(features, rowvar=False)`).

    Returns:
      A Python float, |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr sqrt(sigma1 sigma2). It is the FID when the
      Gaussians are fitted to Inception pool3 features. Can be very slightly negative (round-off) for identical
      inputs.
    """
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "1")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"The two Gaussians have different dimensions: {mu1.shape[0]} vs {mu2.shape[0]} "
                         "(were the statistics computed with the same feature network?).")
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


class RunningStats:
    """Mean and covariance of features, accumulated batch by batch in float64.

    State: count n, mean mu [D] and the centred scatter matrix M = sum_i (x_i - mu)(x_i - mu)^T [D, D]; a batch
    is merged with Chan et al.'s update (M += M_b + d d^T n n_b / (n + n_b), d = mu_b - mu), which equals the
    running-sums formula (sum x x^T - n mu mu^T) without its cancellation. Memory is O(D^2) whatever the number
    of samples.

    Usage::

        stats = RunningStats(feature_network="fid_inception_v3")
        for batch in batches:
            stats.update(features_of(batch))     # [B, D]
        mu, sigma = stats.mean(), stats.cov()    # sigma: unbiased (ddof=1), as np.cov(features, rowvar=False)
        stats.save("cifar10_train.npz")
    """

    def __init__(self, feature_network: str, dim: int | None = None):
        if not isinstance(feature_network, str) or not feature_network:
            raise ValueError("RunningStats needs a non-empty feature_network name (e.g. 'fid_inception_v3'), "
                             f"got {feature_network!r}.")
        self.feature_network = feature_network
        self.count = 0
        self._dim = dim
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    @property
    def dim(self) -> int | None:
        return self._dim

    def update(self, features: Any) -> "RunningStats":
        """Adds a batch of features [B, D] (any float dtype; converted to float64). Returns self."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must have shape [B, D], got {x.shape}.")
        if self._dim is not None and x.shape[1] != self._dim:
            raise ValueError(f"features have dimension {x.shape[1]}, but these statistics have dimension "
                             f"{self._dim}.")
        if not np.all(np.isfinite(x)):
            raise ValueError("features contain NaN or inf.")
        nb = x.shape[0]
        if nb == 0:
            return self
        self._dim = x.shape[1]
        mean_b = x.mean(axis=0)
        xc = x - mean_b
        m2_b = xc.T @ xc
        self._merge(nb, mean_b, m2_b)
        return self

    def _merge(self, nb: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        if self.count == 0:
            self.count, self._mean, self._m2 = nb, mean_b.copy(), m2_b.copy()
            return
        n = self.count + nb
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (nb / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (self.count * nb / n)
        self.count = n

    def merge(self, other: "RunningStats") -> "RunningStats":
        """Adds the samples summarized by `other` (e.g. statistics of another host/shard). Returns self."""
        if other.feature_network != self.feature_network:
            raise ValueError(f"Cannot merge statistics of feature network {other.feature_network!r} into "
                             f"{self.feature_network!r}.")
        if other.count == 0:
            return self
        if self._dim is not None and other.dim != self._dim:
            raise ValueError(f"Cannot merge statistics of dimension {other.dim} into dimension {self._dim}.")
        self._dim = other.dim
        self._merge(other.count, other._mean, other._m2)
        return self

    def mean(self) -> np.ndarray:
        """Feature mean [D], float64."""
        if self.count < 1:
            raise ValueError("RunningStats.mean() needs at least one sample; none were added.")
        return self._mean.copy()

    def cov(self) -> np.ndarray:
        """Unbiased feature covariance [D, D] (ddof=1, as np.cov(features, rowvar=False)), float64."""
        if self.count < 2:
            raise ValueError(f"RunningStats.cov() needs at least 2 samples, got {self.count}.")
        c = self._m2 / (self.count - 1)
        return 0.5 * (c + c.T)

    def save(self, path: str | os.PathLike) -> None:
        """Writes mu, sigma, count and feature_network to `path` (.npz), atomically (temp file + rename)."""
        path = os.fspath(path)
        if not path.endswith(".npz"):
            raise ValueError(f"Statistics are saved as .npz; the path must end in '.npz', got {path!r}.")
        mu, sigma = self.mean(), self.cov()
        with atomic_write(path, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma, count=np.int64(self.count), feature_network=np.array(self.feature_network))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunningStats":
        """Reads statistics written by `save` (further updates continue from them)."""
        path = os.fspath(path)
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("mu", "sigma", "count", "feature_network") if k not in f.files]
            if missing:
                raise ValueError(f"{path} is not a RunningStats file: missing {missing} (has {f.files}). "
                                 "Statistics files hold mu, sigma, count and feature_network; files from other "
                                 "tools (e.g. pytorch-fid's mu/sigma .npz) name no feature network and are not "
                                 "accepted.")
            mu = np.asarray(f["mu"], np.float64)
            sigma = np.asarray(f["sigma"], np.float64)
            count = int(f["count"])
            name = str(f["feature_network"])
        _check_gaussian(mu, sigma, "")
        if count < 2:
            raise ValueError(f"{path} holds statistics of {count} samples; at least 2 are needed.")
        stats = cls(name, dim=mu.shape[0])
        stats.count = count
        stats._mean = mu
        stats._m2 = sigma * (count - 1)
        return stats


def load_stats(path: str | os.PathLike, feature_network: str | None = None) -> RunningStats:
    """`RunningStats.load(path)`, checking that the file was made with `feature_network` when one is given."""
    stats = RunningStats.load(path)
    if feature_network is not None and stats.feature_network != feature_network:
        raise ValueError(f"{os.fspath(path)} holds statistics of feature network {stats.feature_network!r}, "
                         f"not {feature_network!r}; FIDs between different feature networks are meaningless.")
    return stats
