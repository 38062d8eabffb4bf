"""Everything about devices: the distributed runtime, the data-parallel axis, pmap, replication, sharding, and
the one loop that maps a computation over N items on all devices (`map_sharded`).

This is the only module that calls JAX's device and process APIs (`jax.pmap`, `jax.local_devices`,
`jax.process_count`, `multihost_utils`, ...); the rest of the package asks it.

The strategy is plain data parallelism: params replicated on every device, each device a slice of the batch,
gradients and metrics averaged with `lax.pmean` over the axis named `AXIS`. With several processes (TPU pod
slices, GPU clusters), `initialize_distributed` starts JAX's runtime first; each process then feeds its local
devices, and the same pmap reduces over the devices of all processes (device d of process p has axis index
p * local_device_count + d).

Moving off `jax.pmap` (in maintenance mode upstream) to `jax.jit` with shardings or `shard_map` is this file's
work alone: `pmap` would become `shard_map` over a `Mesh(jax.devices(), (AXIS,))` with in/out specs
`PartitionSpec(AXIS)` for the per-device arguments and `PartitionSpec()` for the broadcast ones (`lax.pmean`
over AXIS keeps working inside it); `replicate` would place one copy with a replicated `NamedSharding` instead of
a leading device axis (and `unreplicate` drop nothing); `shard` would build a global array from the local rows
(`jax.make_array_from_process_local_data`) instead of reshaping to [devices, ...]; `map_sharded` would gather
with the output's sharding instead of `process_allgather`. Callers see the same [devices, per_device, ...]
layout only through `shard` and `map_sharded`, so they would change by dropping that leading axis.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
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


def local_devices() -> list:
    return jax.local_devices()


def local_device_count() -> int:
    return jax.local_device_count()


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_lead_process() -> bool:
    """True on process 0, the one that writes logs, samples and reports."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (nothing to wait for with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """Whether `flag` is true on any process (so all processes take the same branch; the flag itself with one)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(flag)))))


def global_device_count(devices: Sequence | None = None) -> int:
    """How many devices a `pmap` over `devices` spans: all devices of all processes, or the named ones."""
    return len(devices) if devices is not None else jax.local_device_count() * jax.process_count()


def describe_devices() -> str:
    """"8 x cpu" (this process's devices), for reports."""
    return f"{jax.local_device_count()} x {jax.devices()[0].platform}"


def pmap_devices(devices: Sequence | None = None) -> tuple | None:
    """The `devices` argument for `pmap`: None (all devices of all processes) when several processes run and no
    devices are named, else the named devices or all local ones. Naming devices needs a single process."""
    if jax.process_count() > 1:
        if devices is not None:
            raise ValueError("explicit devices are only supported in a single process; with several processes "
                             "every computation runs on all devices of all processes.")
        return None
    return tuple(devices or jax.local_devices())


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


def map_sharded(
    round_fn: Callable[[np.ndarray], Any],
    num_items: int,
    *,
    per_device_batch: int | None = None,
    devices: Sequence | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """Map a pmapped computation over items 0..N-1 on all devices, in rounds; every process gets every output.

    Each round hands min(`per_device_batch`, ceil(N / devices)) items (default: the latter, one round) to each
    device of every process: `round_fn(index)` gets int32 `index` [local devices, per_device_batch], the global item indices of
    this process's devices, and returns a pytree of arrays [local devices, per_device_batch, ...] (typically a
    function made with `pmap(..., devices=devices)`). The last round is padded with indices >= N (take items at
    `index % N`); their outputs are dropped. Returns the pytree of numpy outputs [N, ...], gathered across
    processes. `progress(done, N)` is called after each round.
    """
    if num_items < 1:
        raise ValueError(f"the number of items must be a positive integer, got {num_items}.")
    pmap_devices(devices)  # validates devices against the process count
    distributed = jax.process_count() > 1
    local = len(devices) if devices is not None else jax.local_device_count()
    n_dev = global_device_count(devices)
    if per_device_batch is not None and per_device_batch < 1:
        raise ValueError(f"per_device_batch must be a positive integer, got {per_device_batch}.")
    per_device = min(per_device_batch or num_items, math.ceil(num_items / n_dev))
    per_round = per_device * n_dev
    first = first_local_device_index() if distributed else 0
    layout = np.arange(per_round, dtype=np.int32).reshape(n_dev, per_device)[first:first + local]
    outputs = []
    for r in range(math.ceil(num_items / per_round)):
        out = round_fn(layout + np.int32(r * per_round))
        if distributed:
            out = multihost_utils.process_allgather(out, tiled=True)
        outputs.append(jax.tree_util.tree_map(lambda x: np.asarray(x).reshape((per_round,) + x.shape[2:]), out))
        if progress:
            progress(min((r + 1) * per_round, num_items), num_items)
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:num_items], *outputs)
