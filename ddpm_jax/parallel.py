"""Everything about devices: the distributed runtime, the data-parallel axis, pmap, replication, sharding.

The strategy is plain data parallelism: params replicated on every device, each device a slice of the batch,
gradients and metrics averaged with `lax.pmean` over the axis named `AXIS`. With several processes (TPU pod
slices, GPU clusters), `initialize_distributed` starts JAX's runtime first; each process then feeds its local
devices, and the same pmap reduces over the devices of all processes (device d of process p has axis index
p * local_device_count + d).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, cpu_collectives: str | None = None) -> None:
    """Start JAX's distributed runtime; call once, before anything touches devices.

    With no arguments JAX detects the cluster (TPU pod slices, SLURM, Open MPI); otherwise give all three:
    the coordinator's host:port (process 0's), the number of processes and this one's id. `cpu_collectives`
    ("gloo") enables cross-process collectives for CPU devices (tests, CPU clusters).
    """
    given = [coordinator_address, num_processes, process_id]
    if any(v is not None for v in given) and not all(v is not None for v in given):
        raise ValueError("give all of coordinator_address, num_processes and process_id, or none (auto-detect).")
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def first_local_device_index() -> int:
    """The axis index of this process's first device: process_index * local_device_count."""
    return jax.process_index() * jax.local_device_count()


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
