"""Checkpoints with Orbax: the train state and the input pipeline's position, saved together per step.

Saves are asynchronous and atomic (Orbax writes into a temporary directory and renames it when complete), so
a crash or kill mid-save leaves the previous checkpoints intact and the half-written one ignored. The run's
config is written beside them (config.json), and a restart with an incompatible config is refused.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ddpm_jax import configs
from ddpm_jax.files import atomic_write

CONFIG_FILE = "config.json"


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


def write_atomic(path: str, text: str) -> None:
    """Write a text file atomically (see `files.atomic_write`)."""
    with atomic_write(path) as f:
        f.write(text)


def check_or_save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Save the config beside the checkpoints, or check that the one there is compatible.

    Raises ValueError naming the differing fields when `workdir` holds a run of another model or process
    (config.model, config.diffusion, config.data.source); other fields (steps, logging, batch size) may change.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        with open(path) as f:
            saved = configs.from_json(f.read())
        diff = configs.incompatibilities(saved, config)
        if diff:
            details = "; ".join(f"{k}: saved {_get(saved, k)!r}, now {_get(config, k)!r}" for k in diff)
            raise ValueError(
                f"workdir {workdir!r} holds a run with an incompatible config ({details}). "
                "Use a new --workdir, or the saved config."
            )
    write_atomic(path, configs.to_json(config))


def load_saved_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} the workdir of a training run?")
    with open(path) as f:
        return configs.from_json(f.read())


def _get(config, dotted: str):
    value = config.to_dict()
    for name in dotted.split("."):
        if not isinstance(value, dict) or name not in value:
            return None
        value = value[name]
    return value


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
