"""Checkpoints with Orbax: the train state and the input pipeline's position, saved together per step.

Saves are asynchronous and atomic (Orbax writes into a temporary directory and renames it when complete), so
a crash or kill mid-save leaves the previous checkpoints intact and the half-written one ignored. The run's config
beside them is `ddpm_jax.runs`' to write and check.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    """Orbax CheckpointManager over `directory`: keeps the last `max_to_keep` steps."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict) -> None:
        """Start saving `state` (a host pytree of arrays) and the pipeline position at `step`."""
        state = jax.tree_util.tree_map(np.asarray, state)
        self._manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data_state))),
            force=True,
        )

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
        """(state, data_state) at `step` (default: the latest), with the structure and dtypes of `like`."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError("no checkpoint to restore")
        abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), like)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()),
        )
        return restored["state"], dict(restored["data"])

    def wait(self) -> None:
        """Block until pending asynchronous saves are complete."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def restore_params(workdir: str, *, ema: bool = True, step: int | None = None) -> tuple[Any, int]:
    """(params, step) from the latest (or `step`'s) checkpoint of a run: the EMA params, or the raw ones."""
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    manager = ocp.CheckpointManager(directory)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory}: train first (python -m ddpm_jax train ...).")
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    manager.close()
    return restored["state"]["ema_params" if ema else "params"], int(step)
