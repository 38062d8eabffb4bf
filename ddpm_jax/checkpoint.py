"""Checkpoints with Orbax: the train state and the input pipeline's position, saved together per step.

A checkpoint holds three items: `packed`, the state's arrays concatenated into one buffer per dtype; `layout`,
the JSON that undoes it (`pack` / `unpack`); and `data`, the pipeline position; optionally a fourth, `info`, JSON
saved with them (the best checkpoint's step and FID, `train_eval`). Orbax's cost is per array, so a
state of hundreds of small arrays written as a few buffers takes a fraction of the time and CPU (the digits run:
~12x less). Checkpoints of the earlier per-array layout (item `state`) still restore.

Writes are asynchronous: `Checkpointer.save` blocks while the state is packed into host memory, then Orbax writes
it in a background thread into `<step>.orbax-checkpoint-tmp-*` and renames that to `<step>` once complete (the
next save, `wait` and `close` wait for it; SIGTERM in training waits too; training skips a checkpoint that falls
due while one is written, see `busy`). So a kill mid-write leaves the earlier checkpoints intact and a temporary
directory that is ignored, and removed when the next `Checkpointer` opens the directory (in the background; its
`close` waits for the removal). A write that fails (a full disk) raises `CheckpointWriteError` at the next save,
`wait` or `close`, naming the intact checkpoint to resume from.

Restoring without a step takes the newest checkpoint that restores: a newer one whose data cannot be read
(garbled, truncated) is skipped with a `SkippedCheckpointWarning` that names its step and the reason. The run's
config beside the checkpoints is `ddpm_jax.runs`' to write and check.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import threading
import time
import warnings
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src import asyncio_utils

from ddpm_jax import parallel


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, lost permissions); the earlier ones are intact."""


class SkippedCheckpointWarning(UserWarning):
    """A newer checkpoint did not restore, and an older one was used."""


class Checkpointer:
    """Orbax CheckpointManager over `directory`: keeps the last `max_to_keep` steps; writes in the background
    unless async_save=False. Opening it removes the temporary directories of interrupted writes."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True,
            cleanup_tmp_directories=True,
        )
        _quiet_failure_noise()
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._writing = None  # the step of the write in flight
        self._failed = False  # a failed write was reported: the manager is unusable

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def busy(self) -> bool:
        """Whether a write is in flight on any process (a `save` now would first wait for it)."""
        return parallel.any_process(not self._failed and self._manager.is_saving_in_progress())

    def save(self, step: int, state: Any, data_state: dict, info: dict | None = None) -> None:
        """Copy `state` (a pytree of arrays) to host memory, packed (`pack`), and start writing it with the
        pipeline position (and `info`, JSON, when given: part of the same atomic checkpoint) at `step`, after
        waiting for the write in flight (at most one is). Returns once the copy is done; CheckpointWriteError if
        this or the previous write failed."""
        self.wait()
        buffers, layout = pack(state)
        self._writing = int(step)
        extra = {} if info is None else dict(info=ocp.args.JsonSave(dict(info)))
        try:
            self._manager.save(
                int(step),
                args=ocp.args.Composite(packed=ocp.args.StandardSave(buffers),
                                        layout=ocp.args.JsonSave(dict(leaves=layout)),
                                        data=ocp.args.JsonSave(dict(data_state)), **extra),
                force=True,
            )
        except (OSError, ValueError) as e:
            raise self._write_error(e) from None

    def wait(self) -> None:
        """Block until the write in flight is complete; CheckpointWriteError if it failed."""
        if self._failed:
            return
        try:
            self._manager.wait_until_finished()
        except (OSError, ValueError) as e:
            raise self._write_error(e) from None
        self._writing = None

    def _write_error(self, cause: Exception) -> CheckpointWriteError:
        self._failed = True
        intact = [s for s in self._manager.all_steps() if s != self._writing]
        resume = (f"the checkpoint of step {max(intact)} is intact: free space (or fix the cause) and rerun to "
                  "resume from it" if intact else "no earlier checkpoint was written")
        return CheckpointWriteError(f"could not write the checkpoint of step {self._writing} in {self.directory}: "
                                    f"{type(cause).__name__}: {cause}. Stopping; {resume}.")

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
        """(state, data_state) at `step` (default: the newest that restores), with the structure and dtypes of
        `like`."""
        restored, _ = _restore_newest(self._manager, lambda s: _restore_step(self._manager, s, like), step,
                                      self.directory)
        return restored

    def info(self, step: int | None = None) -> dict | None:
        """The `info` saved with the checkpoint of `step` (default: the newest), None if none was (or there is no
        checkpoint)."""
        step = self.latest_step() if step is None else step
        if step is None or not os.path.isdir(os.path.join(self.directory, str(step), "info")):
            return None
        return dict(self._manager.restore(step, args=ocp.args.Composite(info=ocp.args.JsonRestore()))["info"])

    def set_aside_newer_than(self, step: int) -> None:
        """Rename the checkpoints after `step` (those that did not restore) to `<step>.unreadable-<time>`, so the
        run can write those steps again; nothing is deleted."""
        newer = [s for s in self._manager.all_steps() if s > step]
        if newer and parallel.is_lead_process():
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for s in newer:
                target = os.path.join(self.directory, f"{s}.unreadable-{stamp}")
                os.rename(os.path.join(self.directory, str(s)), target)
                warnings.warn(f"set the checkpoint of step {s} aside as {target}.", SkippedCheckpointWarning)
        parallel.barrier("ddpm_jax set_aside_newer_than")
        self._manager.reload()

    def close(self) -> None:
        """Wait for the write in flight (CheckpointWriteError if it failed) and for the removal of interrupted
        writes' temporary directories, then stop Orbax's threads: nothing of this Checkpointer outlives it."""
        try:
            self.wait()
            # Orbax starts that removal in a thread when the manager opens and awaits it only before a save.
            self._manager._maybe_await_cleanup_tmp_directory()
        finally:
            if self._failed:
                # A failed write reports its first error while the other items of that checkpoint may still be
                # written, each in a thread of its own: let them end, or the next Checkpointer on this directory
                # removes the temporary directory while they still write into it.
                _ORBAX_OPERATIONS.wait_for_none(_SETTLE_TIMEOUT_S)
            try:
                self._manager.close()
            except (OSError, ValueError):
                if not self._failed:  # else: the failed write again, already reported
                    raise


def restore_params(workdir: str, *, ema: bool = True, step: int | None = None,
                   checkpoints: str = "checkpoints") -> tuple[Any, int]:
    """(params, step) of a run's checkpoint at `step` (default: the newest that restores) in WORKDIR/`checkpoints`
    ("best": the best checkpoint, `train_eval`): the EMA params, or the raw ones. Reads only: the temporary
    directory of a write in flight is left alone."""
    directory = os.path.abspath(os.path.join(workdir, checkpoints))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoint in {directory}: train first (python -m ddpm_jax train ...).")
    _quiet_failure_noise()
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    try:
        (state, _), step = _restore_newest(manager, lambda s: _restore_step(manager, s, None), step, directory)
    finally:
        manager.close()
    return state["ema_params" if ema else "params"], step


# ---------------------------------------------------------------- the packed layout


def pack(state: Any) -> tuple[dict, list]:
    """(buffers, layout): every array of `state` copied to host memory and concatenated, flattened, into one 1-D
    buffer per dtype ({"float32": [n], "uint32": [m], ...}), and the layout to undo it: per leaf (in the order of
    `jax.tree_util.tree_flatten_with_path`) its path names, dtype, shape and offset in its buffer.

    Orbax's cost per saved array dominates small-array checkpoints: the digits run's 584 arrays (11.5 MiB) take
    ~12x the time and CPU of the same bytes as one array (docs/performance.md), so a checkpoint is written as a
    few buffers. The trainer hands over the whole state on each host (pmap replicates it; the sharded layout
    gathers its shards first), so a checkpoint does not depend on the layout or device count that wrote it."""
    leaves, treedef = jax.tree_util.tree_flatten(state)
    arrays = [np.asarray(leaf) for leaf in leaves]
    layout, groups = _layout(treedef, tuple((a.shape, a.dtype.str) for a in arrays))
    buffers = {dtype: np.concatenate([arrays[i].reshape(-1) for i in members]) for dtype, members in groups.items()}
    return buffers, layout


@functools.lru_cache(maxsize=16)
def _layout(treedef, leaves: tuple) -> tuple[list, dict]:
    """`pack`'s layout for a tree of `treedef` whose leaves have these (shape, dtype str), and the leaf indices
    of each dtype's buffer in order. Cached: a training run packs the same structure at every checkpoint."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(treedef.unflatten(range(len(leaves))))[0]]
    layout, groups, sizes = [], {}, {}
    for i, (path, (shape, dtype_str)) in enumerate(zip(paths, leaves)):
        dtype = np.dtype(dtype_str).name
        offset = sizes.get(dtype, 0)
        sizes[dtype] = offset + math.prod(shape)
        groups.setdefault(dtype, []).append(i)
        layout.append(dict(path=[_key_name(k) for k in path], dtype=dtype, shape=list(shape), offset=offset))
    return layout, groups


def unpack(buffers: dict, layout: list, like: Any = None) -> Any:
    """The state `pack` was given: with `like`, its pytree structure (its leaves' paths, shapes and dtypes must
    match the layout, else ValueError naming the first that does not); without, nested dicts of the path names."""
    leaves = [np.asarray(buffers[e["dtype"]][e["offset"]:e["offset"] + math.prod(e["shape"])]).reshape(e["shape"])
              for e in layout]
    if like is None:
        tree = {}
        for entry, leaf in zip(layout, leaves):
            *parents, last = entry["path"]
            node = tree
            for name in parents:
                node = node.setdefault(name, {})
            node[last] = leaf
        return tree
    expected, treedef = jax.tree_util.tree_flatten_with_path(like)
    if len(layout) != len(expected):
        raise ValueError(f"the checkpoint does not fit this state: it holds {len(layout)} arrays; this state has "
                         f"{len(expected)}.")
    for i, (path, leaf) in enumerate(expected):
        want = dict(path=[_key_name(k) for k in path], dtype=np.asarray(leaf).dtype.name, shape=list(np.shape(leaf)))
        got = {k: layout[i][k] for k in want}
        if got != want:
            raise ValueError(f"the checkpoint does not fit this state: its array {i} is {got}, expected {want}.")
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _key_name(key) -> str:
    """A pytree path entry as a name: a dict key, an attribute or a sequence index."""
    for field in ("key", "name", "idx"):
        if hasattr(key, field):
            return str(getattr(key, field))
    return str(key)


def _restore_step(manager, step: int, like: Any) -> tuple[Any, dict]:
    """(state, data_state) of the checkpoint at `step`: packed, or in the per-array layout of checkpoints
    written before the packed one (restored as they were)."""
    if os.path.isdir(os.path.join(str(manager.directory), str(step), "layout")):
        args = ocp.args.Composite(packed=ocp.args.StandardRestore(), layout=ocp.args.JsonRestore(),
                                  data=ocp.args.JsonRestore())
        restored = manager.restore(step, args=args)
        buffers = {k: np.asarray(v) for k, v in restored["packed"].items()}
        return unpack(buffers, list(restored["layout"]["leaves"]), like), dict(restored["data"])
    abstract = None if like is None else jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), like)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                            data=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["data"])


def _restore_newest(manager, restore_one: Callable[[int], Any], step: int | None, directory: str) -> tuple[Any, int]:
    """(restore_one(step), step) for the given step, else for the newest step whose restore succeeds, with a
    SkippedCheckpointWarning for each newer one (its step and why). ValueError when none restores,
    FileNotFoundError when there is none (or not `step`)."""
    steps = sorted(manager.all_steps(), reverse=True)
    if step is not None and step not in steps:
        raise FileNotFoundError(f"no checkpoint of step {step} in {directory}; steps there: "
                                f"{', '.join(map(str, sorted(steps))) or 'none'}.")
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {directory}: train first (python -m ddpm_jax train ...).")
    failures = []
    for s in [step] if step is not None else steps:
        try:
            result = restore_one(s)
        except Exception as e:  # noqa: BLE001 - whatever keeps a checkpoint from restoring is reported below
            failures.append(f"the checkpoint of step {s} does not restore ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:400]})")
            continue
        for failure in failures:
            warnings.warn(f"{failure}: skipped, restoring step {s} instead.", SkippedCheckpointWarning, stacklevel=3)
        return result, int(s)
    left = "" if step is not None else "; no older checkpoint is left to try"
    raise ValueError(f"in {directory}: {'; '.join(failures)}{left}.")


# What Orbax logs (ERROR, with tracebacks, once per thread) when a background write fails: the failure is raised
# once, as a CheckpointWriteError, instead.
_WRITE_FAILURE_LOGS = ("raised an exception", "in background save thread", "Save Finalize thread")

# How long a failed Orbax operation waits for its sibling reads and writes to settle before its loop is closed.
_SETTLE_TIMEOUT_S = 120.0


def _quiet_failure_noise() -> None:
    """Keep a failed write or restore to one clear message: settle Orbax's event loops (`_settle_siblings`) and
    drop the ERROR logs Orbax writes for a failed background write from every thread."""
    if not getattr(asyncio_utils.run_sync, "settles_siblings", False):
        asyncio_utils.run_sync = _settling(asyncio_utils.run_sync)
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _OrbaxWriteFailureFilter) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxWriteFailureFilter())


class _Operations:
    """How many Orbax operations (`run_sync` calls, on any thread) are running, and a wait for none."""

    def __init__(self):
        self._count, self._changed = 0, threading.Condition()

    def __enter__(self):
        with self._changed:
            self._count += 1

    def __exit__(self, *exc):
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    def wait_for_none(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._count == 0, timeout)


_ORBAX_OPERATIONS = _Operations()


def _settling(run_sync: Callable) -> Callable:
    """Orbax's `run_sync(coro)`, with `coro` run through `_settle_siblings` and counted in _ORBAX_OPERATIONS."""
    def run_sync_settled(coro):
        with _ORBAX_OPERATIONS:
            return run_sync(_settle_siblings(coro))

    run_sync_settled.settles_siblings = True
    return run_sync_settled


async def _settle_siblings(coro):
    """Await `coro`; if it raises, first wait for the other tasks of this event loop, then re-raise.

    Orbax reads and writes every array of a checkpoint as concurrent tasks under one `asyncio.gather`, on a fresh
    event loop that it closes as soon as the gather returns. When one array fails (a garbled file, a full disk),
    the gather raises at once while the other arrays' TensorStore operations are still in flight. Closing the
    loop then leaves them behind: a task that completes later calls into the closed loop ("RuntimeError: Event
    loop is closed", printed at exit by the TensorStore thread), and one that completed but whose result nobody
    read is logged when it is garbage-collected ("Task exception was never retrieved"). Which of the two, and
    whether either, depends on thread timing. Waiting here for those siblings, and reading their results, lets
    the loop close with nothing pending."""
    try:
        return await coro
    except BaseException:
        siblings = asyncio.all_tasks() - {asyncio.current_task()}
        if siblings:
            done, _ = await asyncio.wait(siblings, timeout=_SETTLE_TIMEOUT_S)
            for task in done:
                if not task.cancelled():
                    task.exception()  # read: the failure that matters is the one raised below
        raise


class _OrbaxWriteFailureFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and "orbax" in record.pathname
                    and any(m in record.getMessage() for m in _WRITE_FAILURE_LOGS))
