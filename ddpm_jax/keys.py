"""Layout-independent randomness: one key per example, fold_in(rng, global example index).

An example's noise, timestep and label dropout depend only on the base key and its index in the global batch
(or in the requested set of samples), never on how the batch is split over devices or hosts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def example_keys(rng, batch_size: int, first_index=0):
    """Keys [B] (as a key array of B keys): key i = fold_in(rng, first_index + i)."""
    return jax.vmap(jax.random.fold_in, (None, 0))(rng, first_index + jnp.arange(batch_size))


def per_example(sample_fn, keys):
    """Stack sample_fn(key) over the keys: e.g. per_example(lambda k: jax.random.normal(k, (H, W, C)), keys)."""
    return jax.vmap(sample_fn)(keys)
