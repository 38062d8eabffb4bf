"""A run directory: its saved config (written, read and compared here) and everything loaded from it.

    workdir/config.json        the run's config (`save_or_check_config`, `load_config`)
    workdir/checkpoints/       Orbax checkpoints (`ddpm_jax.checkpoint`)

    run = runs.load_run("runs/digits")           # config, model, schedule, EMA params of the latest checkpoint
    x0 = sampling.ddim_sample(run.model_fn, run.sched, rng, (8,) + run.image_shape())
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple, Sequence

import ml_collections

from ddpm_jax import checkpoint, configs, data, functional, schedules
from ddpm_jax.files import write_text
from ddpm_jax.models.unet import UNet

CONFIG_FILE = "config.json"
# Sections whose change makes a checkpoint mean something else (another model shape, another process).
COMPATIBILITY_KEYS = ("model", "diffusion", "data.source")


class Run(NamedTuple):
    """A trained run, loaded: its config (with any overrides), U-Net, schedule, params and their step."""

    workdir: str
    config: ml_collections.ConfigDict
    model: UNet
    sched: schedules.Schedule
    params: Any
    step: int

    @property
    def model_fn(self):
        """model_fn(x_t, t[, y]) over the params, as a pytree (`functional.bind`)."""
        return functional.bind(self.model.apply, self.params)

    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the run's data (reads the data source's metadata)."""
        return data.image_shape(self.config.data.source, data_dir=self.config.data.get("data_dir", None))


def load_run(workdir: str, *, ema: bool = True, step: int | None = None, overrides: Sequence[str] = ()) -> Run:
    """The run in `workdir`: its saved config with `overrides` ("--config.sample.num_steps=20") applied, the
    model and schedule it builds, and the EMA (or raw, ema=False) params of the latest checkpoint (or `step`'s)."""
    config = configs.apply_overrides(load_config(workdir), overrides)
    params, step = checkpoint.restore_params(workdir, ema=ema, step=step)
    return Run(workdir, config, configs.create_model(config), configs.create_schedule(config), params, step)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config saved in a run directory."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} the workdir of a training run?")
    with open(path) as f:
        return configs.from_json(f.read())


def save_or_check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Save the config in the run directory, or check that the one there is compatible.

    Raises ValueError naming the differing fields when `workdir` holds a run of another model or process
    (config.model, config.diffusion, config.data.source); other fields (steps, logging, batch size) may change.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        saved = load_config(workdir)
        diff = incompatibilities(saved, config)
        if diff:
            details = "; ".join(f"{k}: saved {_get(saved, k)!r}, now {_get(config, k)!r}" for k in diff)
            raise ValueError(
                f"workdir {workdir!r} holds a run with an incompatible config ({details}). "
                "Use a new --workdir, or the saved config."
            )
    write_text(path, configs.to_json(config))


def incompatibilities(saved: ml_collections.ConfigDict, current: ml_collections.ConfigDict) -> list[str]:
    """Dotted names of the fields in COMPATIBILITY_KEYS where the two configs differ."""
    flat_saved, flat_now = _flatten(saved.to_dict()), _flatten(current.to_dict())
    keys = sorted(set(flat_saved) | set(flat_now))
    return [
        k for k in keys
        if any(k == c or k.startswith(c + ".") for c in COMPATIBILITY_KEYS)
        and configs.tuples(flat_saved.get(k)) != configs.tuples(flat_now.get(k))
    ]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _get(config, dotted: str):
    value = config.to_dict()
    for name in dotted.split("."):
        if not isinstance(value, dict) or name not in value:
            return None
        value = value[name]
    return value
