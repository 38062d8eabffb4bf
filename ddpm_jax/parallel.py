"""Everything about devices: the distributed runtime, the data-parallel axis, the two ways a train step runs on
devices (`Pmap`, `Sharded`), replication, sharding, and the one loop that maps a computation over N items on all
devices of either layout (`map_sharded`, with a per-device function compiled by `layout.map`: pmapped, or jitted
over the mesh with the params split along FSDP, for sampling and bits/dim).

This is the only module that calls JAX's device and process APIs (`jax.pmap`, `jax.jit` with shardings,
`jax.local_devices`, `jax.process_count`, `multihost_utils`, ...); the rest of the package asks it.

Two layouts of a training run (`make_layout`, chosen by config.train.parallelism):

- `Pmap`: plain data parallelism, params replicated on every device (a leading device axis), each device a slice
  of the batch, gradients and metrics averaged with `lax.pmean` over the axis named `AXIS`.
- `Sharded`: `jax.jit` over a `Mesh` with axes (DATA, FSDP): the batch split over both, every array of the train
  state split along FSDP on its largest axis that divides (`fsdp_spec`; small ones replicated), and the step body
  sees the global batch, XLA doing the reductions. With fsdp = 1 it is data parallelism under jit; with fsdp > 1
  each device holds 1/fsdp of the params, EMA and optimizer state (FSDP / ZeRO-3, as maxdiffusion does).

A step body is written once for both: it runs its collectives through `layout.axis` (a `DataAxis`), which is
pmap's named axis under `Pmap` and the identity under `Sharded`.

With several processes (TPU pod slices, GPU clusters), `initialize_distributed` starts JAX's runtime first; each
process then feeds its local devices, and the same step reduces over the devices of all processes (device d of
process p has axis index p * local_device_count + d, in both layouts).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"
DATA, FSDP = AXIS, "fsdp"  # the mesh axes of `Sharded`: the batch over both, the train state over FSDP
MIN_SHARDED_SIZE = 1024  # arrays with fewer elements stay replicated under FSDP (biases, norms, scalars)


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
    layout: "Pmap | Sharded | None" = None,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """Map a computation over items 0..N-1 on all devices, in rounds; every process gets every output.

    The devices are `layout`'s: a `Pmap` (default: `Pmap(devices)`, all devices of all processes) or a `Sharded`
    mesh (all its devices, both axes; `devices` must then be None). Each round hands min(`per_device_batch`,
    ceil(N / devices)) items (default: the latter, one round) to each device: `round_fn(index)` gets int32 `index`
    [local devices, per_device_batch], the global item indices of this process's devices, and returns a pytree of
    arrays [local devices, per_device_batch, ...], or global ones [devices, per_device_batch, ...] (typically a
    function made with `layout.map`). The last round is padded with indices >= N (take items at `index % N`); their
    outputs are dropped. Returns the pytree of numpy outputs [N, ...], gathered across processes.
    `progress(done, N)` is called after each round.
    """
    if num_items < 1:
        raise ValueError(f"the number of items must be a positive integer, got {num_items}.")
    n_dev, first, local = layout_of(devices, layout).rows()
    distributed = jax.process_count() > 1
    if per_device_batch is not None and per_device_batch < 1:
        raise ValueError(f"per_device_batch must be a positive integer, got {per_device_batch}.")
    per_device = min(per_device_batch or num_items, math.ceil(num_items / n_dev))
    per_round = per_device * n_dev
    rows = np.arange(per_round, dtype=np.int32).reshape(n_dev, per_device)[first:first + local]
    outputs = []
    for r in range(math.ceil(num_items / per_round)):
        out = round_fn(rows + np.int32(r * per_round))
        if distributed:
            out = multihost_utils.process_allgather(out, tiled=True)
        outputs.append(jax.tree_util.tree_map(lambda x: np.asarray(x).reshape((per_round,) + x.shape[2:]), out))
        if progress:
            progress(min((r + 1) * per_round, num_items), num_items)
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:num_items], *outputs)


def layout_of(devices: Sequence | None = None, layout: "Pmap | Sharded | None" = None) -> "Pmap | Sharded":
    """`layout`, or without one `Pmap(devices)` (default: all devices of all processes); ValueError given both."""
    if layout is None:
        return Pmap(None if devices is None else tuple(devices))  # validates devices against the process count
    if devices is not None:
        raise ValueError("give devices or a layout, not both.")
    return layout


# ---------------------------------------------------------------- the layouts of a training run


@dataclasses.dataclass(frozen=True)
class DataAxis:
    """The collectives a step body runs over the data axis. `name` = AXIS: pmap's named axis, the body seeing one
    device's slice of the batch; None: the body sees the global batch (under jit with shardings), so there is
    nothing to reduce by hand (index 0, size 1, mean and gather the identity) and XLA partitions the work."""

    name: str | None

    def index(self):
        """This slice's position on the axis (int32 [])."""
        return jax.lax.axis_index(self.name) if self.name else 0

    def size(self):
        """The number of slices the global batch is split into."""
        return jax.lax.psum(1, self.name) if self.name else 1

    def mean(self, tree):
        """The mean of `tree` over the slices."""
        return jax.lax.pmean(tree, self.name) if self.name else tree

    def gather(self, x):
        """x [B_slice, ...] of every slice, concatenated: [B, ...]."""
        return jax.lax.all_gather(x, self.name, tiled=True) if self.name else x


PER_DEVICE = DataAxis(AXIS)  # pmap: each step body one device's slice
GLOBAL = DataAxis(None)  # jit with shardings: the step body the whole batch


@dataclasses.dataclass(frozen=True)
class Pmap:
    """`jax.pmap` over `devices` (None: all devices of all processes): the state replicated, a leading device axis
    on every array; batches [devices, steps, B_dev, ...]."""

    devices: tuple | None = None
    axis = PER_DEVICE
    placed_axis = 0  # `map`'s in_axis of a pytree placed with `put_state` (a leading device axis)

    def __post_init__(self):
        object.__setattr__(self, "devices", pmap_devices(self.devices))

    @property
    def local_devices(self) -> list:
        return list(self.devices or jax.local_devices())

    def compile(self, fn: Callable) -> Callable:
        """pmap of fn(state, batches) over the devices, the state donated."""
        return pmap(fn, devices=self.devices, donate_argnums=(0,))

    def rows(self) -> tuple[int, int, int]:
        """(devices, first, local): the devices a `map`ped function spans, and this process's rows of them."""
        first = first_local_device_index() if jax.process_count() > 1 else 0
        return global_device_count(self.devices), first, len(self.local_devices)

    def map(self, fn: Callable, in_axes) -> Callable:
        """pmap of fn (one device's share of the items) over the devices: arguments with in_axis 0 and the outputs
        [local devices, ...]; a pytree placed with `put_state` goes in with in_axis `placed_axis`."""
        return pmap(fn, in_axes=in_axes, devices=self.devices)

    def put_state(self, tree):
        """A host pytree replicated on the devices."""
        return replicate(tree, self.local_devices)

    def host(self, tree):
        """The host (numpy) copy of a placed pytree."""
        return unreplicate(tree)

    def put_batches(self, batches: Sequence):
        """K host batches of this process (leaves [local devices, B_dev, ...]) -> leaves [devices, K, B_dev, ...]."""
        return jax.tree_util.tree_map(lambda *xs: np.stack(xs, axis=1), *batches)

    def scalars(self, metrics: dict) -> dict:
        """The step's metrics (one copy per device) as floats."""
        return {name: float(v[0]) for name, v in jax.device_get(metrics).items()}

    def check_batch(self, batch_size: int) -> None:
        """ValueError unless a global batch of `batch_size` splits evenly over the devices."""
        _check_batch(batch_size, global_device_count(self.devices), "the devices of the pmap")

    def describe(self) -> str:
        return f"pmap over {global_device_count(self.devices)} devices"


@dataclasses.dataclass(frozen=True)
class Sharded:
    """`jax.jit` over `mesh` (axes DATA, FSDP): the global batch [steps, B, ...] split over both axes, each array of
    the state split along FSDP (`fsdp_spec`), replicated along DATA. Every process feeds its rows of the batch."""

    mesh: Mesh
    min_sharded_size: int = MIN_SHARDED_SIZE
    axis = GLOBAL
    placed_axis = None  # `map`'s in_axis of a pytree placed with `put_state` (broadcast, split along FSDP)

    @property
    def local_devices(self) -> list:
        return list(self.mesh.local_devices)

    def state_shardings(self, tree):
        """The NamedSharding of each array of `tree` (arrays or ShapeDtypeStructs)."""
        fsdp = self.mesh.shape[FSDP]
        return jax.tree_util.tree_map(
            lambda x: NamedSharding(self.mesh, fsdp_spec(np.shape(x), fsdp, self.min_sharded_size)), tree)

    def batch_sharding(self) -> NamedSharding:
        """Batches [steps, B, ...]: B split over DATA x FSDP (device i of the mesh, in row-major order, row block i)."""
        return NamedSharding(self.mesh, PartitionSpec(None, (DATA, FSDP)))

    def jit(self, fn: Callable, state) -> Callable:
        """jax.jit of fn(state, batches) -> (state, metrics) for a state shaped like `state`: in and out with the
        state's shardings (donated), batches with `batch_sharding`, metrics replicated."""
        shardings = self.state_shardings(state)
        return jax.jit(fn, in_shardings=(shardings, self.batch_sharding()),
                       out_shardings=(shardings, NamedSharding(self.mesh, PartitionSpec())), donate_argnums=(0,))

    def compile(self, fn: Callable) -> Callable:
        """fn(state, batches) compiled with `jit` for the state it is called with (once per state structure); its
        `lower(state, batches)` lowers it (as a pmapped function's does), e.g. for `memory_analysis()`."""
        jitted = {}

        def get(state):
            key = jax.tree_util.tree_structure(state), tuple(np.shape(x) for x in jax.tree_util.tree_leaves(state))
            if key not in jitted:
                jitted[key] = self.jit(fn, state)
            return jitted[key]

        def call(state, batches):
            return get(state)(state, batches)

        call.lower = lambda state, batches: get(state).lower(state, batches)
        return call

    def rows(self) -> tuple[int, int, int]:
        """(devices, first, local): all devices of the mesh (row i of a `map`ped argument on its i-th device in
        row-major order), and the rows of this process's devices."""
        mine = [i for i, d in enumerate(self.mesh.devices.flat) if d.process_index == jax.process_index()]
        if mine != list(range(mine[0], mine[0] + len(mine))):
            raise ValueError("this process's devices are not contiguous in the mesh (make it with make_mesh).")
        return self.mesh.size, mine[0], len(mine)

    def row_sharding(self) -> NamedSharding:
        """Arrays [devices, ...] of `map`: row i on the mesh's device i (row-major), i.e. split over DATA x FSDP."""
        return NamedSharding(self.mesh, PartitionSpec((DATA, FSDP)))

    def map(self, fn: Callable, in_axes) -> Callable:
        """fn, a function of one device's share of the items (the one `Pmap.map` pmaps), jitted over the mesh as
        `jax.vmap` over a leading axis of all its devices, split over both mesh axes (`row_sharding`).

        Arguments with in_axis 0 are this process's rows [local devices, ...] (as `map_sharded` gives them);
        those with in_axis None are broadcast, and placed with `state_shardings` (the large arrays, the params,
        split along FSDP; the rest replicated) unless already so: place the params once with `put_state` (in_axis
        `placed_axis`). Returns the outputs [devices, ...] as global arrays with `row_sharding` (`map_sharded`
        gathers them). The returned function's `lower(*args)` lowers it for such arguments."""
        in_axes = tuple(in_axes)
        rows = self.row_sharding()
        jitted = jax.jit(jax.vmap(fn, in_axes=in_axes), out_shardings=rows)

        def put_rows(x):
            x = np.asarray(x)
            return jax.make_array_from_process_local_data(rows, x, (self.mesh.size,) + x.shape[1:])

        def place(args):
            return [jax.tree_util.tree_map(put_rows, a) if axis == 0 else
                    jax.tree_util.tree_map(_place, a, self.state_shardings(a)) for a, axis in zip(args, in_axes)]

        def call(*args):
            return jitted(*place(args))

        call.lower = lambda *args: jitted.lower(*place(args))
        return call

    def put_state(self, tree):
        """A host pytree placed with `state_shardings` (each process supplies the pieces of its devices)."""
        def put(x, sharding):
            x = np.asarray(x)
            # A copy per shard: a view of host memory placed zero-copy on a CPU device and then donated to the step
            # would let XLA write into (and free) memory numpy owns.
            return jax.make_array_from_callback(x.shape, sharding, lambda index: np.array(x[index], copy=True))

        return jax.tree_util.tree_map(put, tree, self.state_shardings(tree))

    def host(self, tree):
        """The whole of a placed pytree as host numpy arrays, on every process (gathered leaf by leaf)."""
        if jax.process_count() > 1:
            return multihost_utils.process_allgather(tree, tiled=True)
        return jax.tree_util.tree_map(np.asarray, tree)

    def put_batches(self, batches: Sequence):
        """K host batches of this process (leaves [local devices, B_dev, ...], as the pipeline gives them) -> global
        arrays [K, B, ...] with `batch_sharding`."""
        sharding = self.batch_sharding()
        processes = jax.process_count()

        def put(*xs):
            local = np.stack([x.reshape((-1,) + x.shape[2:]) for x in xs])
            return jax.make_array_from_process_local_data(
                sharding, local, (local.shape[0], local.shape[1] * processes) + local.shape[2:])

        return jax.tree_util.tree_map(put, *batches)

    def scalars(self, metrics: dict) -> dict:
        return {name: float(v) for name, v in jax.device_get(metrics).items()}

    def check_batch(self, batch_size: int) -> None:
        """ValueError unless a global batch of `batch_size` splits evenly over the mesh (both of its axes)."""
        _check_batch(batch_size, self.mesh.size,
                     f"the mesh of data={self.mesh.shape[DATA]} x fsdp={self.mesh.shape[FSDP]} devices (the batch "
                     "is split over both axes)")

    def describe(self) -> str:
        return f"jit over a mesh of data={self.mesh.shape[DATA]} x fsdp={self.mesh.shape[FSDP]} devices"


def _place(x, sharding: NamedSharding):
    """x as a global array with `sharding`: itself if it has it already (or an equivalent one)."""
    if isinstance(x, jax.Array):
        if x.sharding.is_equivalent_to(sharding, x.ndim):
            return x
        if jax.process_count() == 1 or not x.is_fully_addressable:
            return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def _check_batch(batch_size: int, devices: int, over: str) -> None:
    if batch_size < 1 or batch_size % devices:
        raise ValueError(f"a global batch of {batch_size} (config.train.batch_size) does not divide over {over}: "
                         f"use a positive multiple of {devices}.")


PARALLELISMS = ("pmap", "sharded")


def make_layout(parallelism: str = "pmap", mesh: dict | None = None, devices: Sequence | None = None) -> Pmap | Sharded:
    """The layout of a run: "pmap" (`Pmap`) or "sharded" (`Sharded` over `make_mesh(mesh, devices)`) over `devices`
    (default: all devices of all processes)."""
    if parallelism == "pmap":
        return Pmap(None if devices is None else tuple(devices))
    if parallelism == "sharded":
        return Sharded(make_mesh(mesh, devices))
    raise ValueError(f"unknown parallelism {parallelism!r} (config.train.parallelism); use one of "
                     f"{', '.join(map(repr, PARALLELISMS))}.")


def make_mesh(shape: dict | None = None, devices: Sequence | None = None) -> Mesh:
    """A Mesh of `devices` (default: all devices of all processes, in JAX's order, so each process's devices are
    contiguous rows of the batch) with axes (DATA, FSDP) of sizes shape = dict(data=D, fsdp=F); one of them may
    be -1 (all the devices the other leaves). Default: every device on DATA."""
    sizes = check_mesh_shape(shape)
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    free = [k for k, v in sizes.items() if v == -1]
    if free:
        (other,) = set(sizes) - set(free)
        if n % sizes[other]:
            raise ValueError(f"a mesh with {other}={sizes[other]} does not divide the {n} devices: use a divisor "
                             f"of {n} for {other} (config.train.mesh.{other}).")
        sizes[free[0]] = n // sizes[other]
    if sizes[DATA] * sizes[FSDP] != n:
        raise ValueError(f"a mesh of data={sizes[DATA]} x fsdp={sizes[FSDP]} = {sizes[DATA] * sizes[FSDP]} devices "
                         f"does not match the {n} devices: data x fsdp must equal {n} (config.train.mesh; set one "
                         "of them to -1 for the rest).")
    return Mesh(np.array(devices).reshape(sizes[DATA], sizes[FSDP]), (DATA, FSDP))


def check_mesh_shape(shape: dict | None) -> dict:
    """dict(data=D, fsdp=F) of a mesh shape (missing axes: data -1, fsdp 1), or ValueError naming what is wrong: an
    axis other than data and fsdp, a size that is not a positive integer or -1, or two -1s."""
    sizes = dict(data=-1, fsdp=1)
    sizes.update(shape or {})
    if set(sizes) != {DATA, FSDP}:
        raise ValueError(f"a mesh (config.train.mesh) has the axes {DATA!r} and {FSDP!r}, got {sorted(sizes)}.")
    bad = [v for v in sizes.values() if isinstance(v, bool) or not isinstance(v, int) or (v < 1 and v != -1)]
    if bad or list(sizes.values()).count(-1) > 1:
        raise ValueError(f"mesh sizes (config.train.mesh) must be positive integers, one of them may be -1 (the rest "
                         f"of the devices); got data={sizes[DATA]!r}, fsdp={sizes[FSDP]!r}.")
    return sizes


def fsdp_spec(shape: Sequence[int], fsdp: int, min_size: int = MIN_SHARDED_SIZE) -> PartitionSpec:
    """How an array of `shape` is split over `fsdp` devices: along its largest axis whose size `fsdp` divides (the
    first of equal ones); replicated (PartitionSpec()) when fsdp is 1, the array has fewer than `min_size`
    elements, or no axis divides."""
    if fsdp == 1 or math.prod(shape) < min_size:
        return PartitionSpec()
    divisible = [i for i, n in enumerate(shape) if n % fsdp == 0]
    if not divisible:
        return PartitionSpec()
    axis = max(divisible, key=lambda i: shape[i])
    return PartitionSpec(*[FSDP if i == axis else None for i in range(len(shape))])
