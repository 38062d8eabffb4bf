"""Everything about devices: the data-parallel axis, pmap, replication and sharding of host arrays.

The strategy is plain data parallelism: params replicated on every local device, each device a slice of the
batch, gradients and metrics averaged with `lax.pmean` over the axis named `AXIS`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


def pmap(fn: Callable, *, in_axes=0, devices: Sequence | None = None, donate_argnums=()) -> Callable:
    """jax.pmap of `fn` over `devices` (default: all local devices) with the data axis named `AXIS`."""
    return jax.pmap(fn, axis_name=AXIS, in_axes=in_axes, devices=devices, donate_argnums=donate_argnums)


def replicate(tree, devices: Sequence | None = None):
    """Copy a pytree onto each device: leaves get a leading device axis, sharded one copy per device."""
    devices = list(devices or jax.local_devices())
    sharding = NamedSharding(Mesh(np.array(devices), (AXIS,)), PartitionSpec(AXIS))

    def put(x):
        x = np.asarray(x)
        return jax.device_put(np.broadcast_to(x[None], (len(devices),) + x.shape), sharding)

    return jax.tree_util.tree_map(put, tree)


def unreplicate(tree):
    """The first device's copy of a replicated pytree, as host numpy arrays (no device computation)."""

    def first(x):
        if isinstance(x, jax.Array):  # the first shard, with or without its leading device axis of 1
            return np.asarray(x.addressable_data(0)).reshape(x.shape[1:])
        return np.asarray(x[0])

    return jax.tree_util.tree_map(first, tree)


def shard(batch, num_devices: int | None = None):
    """Reshape host arrays [N, ...] to [devices, N // devices, ...]; N must divide over the devices."""
    num_devices = num_devices or jax.local_device_count()

    def split(x):
        if x.shape[0] % num_devices:
            raise ValueError(
                f"a batch of {x.shape[0]} does not divide over {num_devices} devices; "
                f"use a batch size that is a multiple of {num_devices}."
            )
        return x.reshape((num_devices, x.shape[0] // num_devices) + x.shape[1:])

    return jax.tree_util.tree_map(split, batch)
