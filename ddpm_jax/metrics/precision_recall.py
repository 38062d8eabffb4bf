"""Improved precision and recall of Kynkaanniemi et al. 2019 (k-NN manifold estimates).

Each set's manifold is the union of balls around its samples, the radius of a ball being the distance from the
sample to its k-th nearest neighbour in the same set (the sample itself excluded; the reference takes the
(k+1)-th smallest distance including the zero self-distance, which is the same thing). Then

    precision = fraction of fake samples inside the real manifold,
    recall    = fraction of real samples inside the fake manifold,

with "inside" meaning ||x - y|| <= radius(y) for at least one y, as in the reference (which compares squared
distances). Distances are computed in blocks of rows on the default JAX device (float32 with full-precision
matmuls, squared norms expanded as |a|^2 - 2 a.b + |b|^2 and clamped at 0), so memory is O(block * N).
The reference's default k is 3.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["precision_recall", "knn_radii"]


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    aa = jnp.sum(a * a, axis=1)[:, None]
    bb = jnp.sum(b * b, axis=1)[None, :]
    ab = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(aa - 2.0 * ab + bb, 0.0)


@functools.partial(jax.jit, static_argnames=("k",))
def _kth_smallest(block: jax.Array, data: jax.Array, k: int) -> jax.Array:
    neg_topk, _ = jax.lax.top_k(-_sq_dists(block, data), k + 1)
    return -neg_topk[:, k]


@jax.jit
def _covered(block: jax.Array, data: jax.Array, radii_sq: jax.Array) -> jax.Array:
    return jnp.any(_sq_dists(block, data) <= radii_sq[None, :], axis=1)


def _blocks(n: int, block_size: int):
    for start in range(0, n, block_size):
        yield slice(start, min(start + block_size, n))


def _check(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape [N, D], got {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contain NaN or inf.")
    return x


def knn_radii(features: Any, k: int = 3, block_size: int = 1024) -> np.ndarray:
    """Squared distance from each sample [N, D] to its k-th nearest other sample: [N] float32."""
    x = _check(features, "features")
    if x.shape[0] < k + 1:
        raise ValueError(f"k={k} nearest neighbours need at least k + 1 = {k + 1} samples, got {x.shape[0]}.")
    data = jnp.asarray(x)
    return np.concatenate([np.asarray(_kth_smallest(data[s], data, k)) for s in _blocks(x.shape[0], block_size)])


def _coverage(queries: np.ndarray, support: np.ndarray, radii_sq: np.ndarray, block_size: int) -> float:
    data, radii = jnp.asarray(support), jnp.asarray(radii_sq)
    q = jnp.asarray(queries)
    inside = np.concatenate([np.asarray(_covered(q[s], data, radii)) for s in _blocks(queries.shape[0], block_size)])
    return float(np.mean(inside))


def precision_recall(real_features: Any, fake_features: Any, k: int = 3,
                     block_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of fake samples against real ones.

    Args:
      real_features: [N_real, D] features of real samples (e.g. Inception pool3, as the paper uses VGG-16 fc2;
        report which network was used).
      fake_features: [N_fake, D] features of generated samples.
      k: neighbourhood size for the radii (paper: 3).
      block_size: rows of the distance matrix computed at once.

    Returns:
      (precision, recall), floats in [0, 1].
    """
    real = _check(real_features, "real_features")
    fake = _check(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features have different dimensions: {real.shape[1]} vs {fake.shape[1]}.")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
    real_radii = knn_radii(real, k, block_size)
    fake_radii = knn_radii(fake, k, block_size)
    precision = _coverage(fake, real, real_radii, block_size)
    recall = _coverage(real, fake, fake_radii, block_size)
    return precision, recall
