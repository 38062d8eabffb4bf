"""A run directory: its saved config (written, read and compared here) and everything loaded from it.

    workdir/config.json        the run's config (`save_or_check_config`, `load_config`)
    workdir/checkpoints/       Orbax checkpoints (`ddpm_jax.checkpoint`)
    workdir/best/              the checkpoint of the best FID during training (`train_eval`; config.train.keep_best)
    workdir/posthoc_ema/       post-hoc EMA snapshots and reconstructions (`posthoc_ema`; config.train.posthoc_ema)
    workdir/train.lock         held by the train process writing the run (`lock_workdir`), with its PID
    workdir/distill.json       a progressive-distillation chain instead: its rounds, each a run (`distill_run`)

    run = runs.load_run("runs/digits")           # config, model, schedule, EMA params of the newest checkpoint
    run = runs.load_run("runs/x", sigma_rel=0.07)   # the post-hoc EMA of sigma_rel 0.07 (`python -m ddpm_jax ema`)
    run = runs.load_run("runs/x", best=True)     # the EMA params of the best checkpoint by FID
    x0 = sampling.ddim_sample(run.model_fn, run.sched, rng, (8,) + run.image_shape())
    images = runs.sample(run.config, run.params, rng, 64, run.image_shape())   # the config's sampler, all devices
    forecasts = runs.forecast(run.config, run.params, rng, 20)                  # a series run's test windows

A distilled student (config.distill, `distill_run`) is a run too; it samples with its own sampler over the levels
it was distilled for (`sampler_options`), and a chain's workdir resolves to one of its rounds (`resolve_workdir`).
A latent diffusion run also holds its first stage (workdir/autoencoder/, see `latent`): `run.codec` decodes the
model's samples, of shape `run.model_shape()`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from typing import Any, NamedTuple, Sequence

import ml_collections
import numpy as np

from ddpm_jax import (checkpoint, config_schema, configs, data, distillation, forecasting, functional, latent,
                      posthoc_ema, processes, sampling, schedules, series, validation)
from ddpm_jax.files import check_writable, write_text
from ddpm_jax.models.unet import UNet

CONFIG_FILE = "config.json"
BEST_DIR = "best"  # the best checkpoint by FID (written by `train_eval`)
LOCK_FILE = "train.lock"
CHAIN_FILE = "distill.json"  # a progressive-distillation chain: {"rounds": {steps: round workdir}} (`distill_run`)
# Sections whose change makes a checkpoint mean something else (another model shape, another process, EMAs of
# other lengths, another teacher or student).
COMPATIBILITY_KEYS = ("model", "diffusion", "data.source", "data.window", "autoencoder",
                      "train.posthoc_ema.sigma_rels", "distill")


class Run(NamedTuple):
    """A trained run, loaded: its config (with any overrides), U-Net, schedule, params and their step, and for latent
    diffusion the first stage (`latent.Codec`; else None)."""

    workdir: str
    config: ml_collections.ConfigDict
    model: UNet
    sched: schedules.Schedule
    params: Any
    step: int
    codec: latent.Codec | None = None

    @property
    def model_fn(self):
        """model_fn(x_t, t[, y]) over the params, as a pytree (`functional.bind`)."""
        return functional.bind(self.model.apply, self.params)

    def image_shape(self) -> tuple[int, ...]:
        """(H, W, C) of the run's data, (context + horizon, C) for a series (reads the data source's metadata)."""
        return configs.data_shape(self.config)

    def check_images(self, command: str) -> None:
        """ValueError naming the `forecast` command when the run was trained on a series, not on images."""
        if len(self.image_shape()) != 3:
            raise ValueError(f"{command} works on image runs; {self.workdir!r} was trained on the series "
                             f"{self.config.data.source!r}: forecast with `python -m ddpm_jax forecast --workdir "
                             f"{self.workdir}`.")

    def model_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of what the diffusion model generates: the latent shape of a latent run, else the images'."""
        shape = self.image_shape()
        return shape if self.codec is None else self.codec.model.latent_shape(shape)


def load_run(workdir: str, *, ema: bool = True, step: int | None = None, overrides: Sequence[str] = (),
             sigma_rel: float | None = None, best: bool = False, num_steps: int | None = None) -> Run:
    """The run in `workdir`: its saved config with `overrides` ("--config.sample.num_steps=20") applied and
    validated, the model and schedule it builds, and its params: the EMA (or raw, ema=False) params of `step`'s
    checkpoint, or of the newest one that restores (`checkpoint.restore_params`); with `best`, those of the best
    checkpoint by FID (WORKDIR/best, `train_eval`); with `sigma_rel`, the post-hoc EMA of that sigma_rel at `step`
    (a snapshot's; default the newest) that `python -m ddpm_jax ema` wrote (`posthoc_ema.load_reconstruction`).
    A progressive-distillation chain's workdir loads its round of `num_steps` (`resolve_workdir`)."""
    workdir = resolve_workdir(workdir, num_steps)
    if sum((sigma_rel is not None, best, not ema)) > 1:
        raise ValueError("choose one of the params to load: the raw params (ema=False, --raw-params), a post-hoc EMA "
                         "(sigma_rel, --sigma-rel) or the best checkpoint (best, --best).")
    config = configs.apply_overrides(load_config(workdir), overrides)
    config_schema.validate_config(config, training=False)
    if sigma_rel is not None:
        params, step = posthoc_ema.load_reconstruction(workdir, sigma_rel, step)
    elif best:
        if not os.path.isdir(os.path.join(workdir, BEST_DIR)):
            raise FileNotFoundError(f"no best checkpoint in {workdir!r} ({os.path.join(workdir, BEST_DIR)}): it is "
                                    "kept by training with config.train.keep_best = True and eval_every > 0.")
        params, step = checkpoint.restore_params(workdir, ema=True, step=step, checkpoints=BEST_DIR)
    else:
        params, step = checkpoint.restore_params(workdir, ema=ema, step=step)
    autoencoder = configs.create_autoencoder(config)
    codec = None if autoencoder is None else latent.load_codec(workdir, autoencoder)
    return Run(workdir, config, configs.create_model(config), configs.create_schedule(config, params), params, step,
               codec)


def resolve_workdir(workdir: str, num_steps: int | None = None) -> str:
    """`workdir` itself, or, for a progressive-distillation chain (WORKDIR/distill.json), the workdir of its round
    whose student samples in `num_steps` steps (None: the fewest of the rounds finished)."""
    path = os.path.join(workdir, CHAIN_FILE)
    if not os.path.exists(path):
        return workdir
    with open(path) as f:
        rounds = {int(n): name for n, name in json.load(f)["rounds"].items()}
    if not rounds:
        raise ValueError(f"the progressive-distillation chain in {workdir!r} has no finished round yet: rerun "
                         "`python -m ddpm_jax distill` with the same arguments to resume it.")
    if num_steps is None:
        num_steps = min(rounds)
    if num_steps not in rounds:
        raise ValueError(f"the progressive-distillation chain in {workdir!r} holds students of "
                         f"{', '.join(str(n) for n in sorted(rounds, reverse=True))} steps, each sampling in the "
                         f"steps it was distilled for; got {num_steps} steps.")
    return os.path.join(workdir, rounds[num_steps])


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config saved in a run directory."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} the workdir of a training run?")
    with open(path) as f:
        return configs.from_json(f.read())


def prepare_workdir(workdir: str) -> None:
    """Create the run directory, or check an existing one: ValueError if it is a file or cannot be written."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir!r} is a file, not a directory: give a new directory, or an earlier "
                         "run's to resume it.")
    purpose = "training writes its config, checkpoints and logs there"
    check_writable(workdir, purpose)
    os.makedirs(workdir, exist_ok=True)
    check_writable(os.path.join(workdir, "checkpoints"), purpose)


@contextlib.contextmanager
def lock_workdir(workdir: str):
    """Hold workdir/train.lock while training: a second train process on the same workdir gets a ValueError
    naming the first one's PID, instead of both writing checkpoints. The lock is an flock, which the OS releases
    when its holder exits, however it exits: a lock file left by a killed process (a dead PID) is taken over."""
    path = os.path.join(workdir, LOCK_FILE)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise ValueError(f"workdir {workdir!r} is in use by another train process (PID {holder}, in {path}): two "
                         "runs in one workdir would overwrite each other's checkpoints. Wait for it to finish or "
                         "stop it, or use another --workdir.") from None
    try:
        f.truncate(0)
        f.write(f"{os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield
    finally:
        f.truncate(0)
        f.close()


def save_or_check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Save the config in the run directory, or check that the one there is compatible.

    Raises ValueError naming the differing fields when `workdir` holds a run of another model or process
    (config.model, config.diffusion, config.data.source and .window, config.autoencoder); other fields (steps,
    logging, batch size) may change.
    The config of a run that wrote no checkpoint yet (one stopped by an error) is replaced.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path) and _has_checkpoints(workdir):
        saved = load_config(workdir)
        diff = incompatibilities(saved, config)
        if diff:
            details = "; ".join(f"{k}: saved {_get(saved, k)!r}, now {_get(config, k)!r}" for k in diff)
            raise ValueError(
                f"workdir {workdir!r} holds a run with an incompatible config ({details}). "
                "Use a new --workdir, or the saved config."
            )
    write_text(path, configs.to_json(config))


def _has_checkpoints(workdir: str) -> bool:
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def incompatibilities(saved: ml_collections.ConfigDict, current: ml_collections.ConfigDict) -> list[str]:
    """Dotted names of the fields in COMPATIBILITY_KEYS where the two configs differ (post-hoc EMA's sigma_rels
    count as None where it is off: the train state holds its EMAs, so it cannot be switched on or off mid-run)."""
    flat_saved, flat_now = _flatten(saved.to_dict()), _flatten(current.to_dict())
    for flat in (flat_saved, flat_now):
        flat.setdefault("train.posthoc_ema.sigma_rels", None)
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


# ---------------------------------------------------------------- sampling and forecasting a run


def sampler_options(config: ml_collections.ConfigDict, sampler: str | None = None, num_steps: int | None = None,
                    spacing: str | None = None, eta: float | None = None) -> dict:
    """The sampler and its keyword arguments (`sampling.sample`'s) from explicit values, else config.sample; a
    distilled student's own (`distilled_sampler_options`)."""
    s, d = config.sample, config.diffusion
    validation.check_sampler_settings(num_steps, eta)
    if config.get("distill", None) is not None:
        return distilled_sampler_options(config, sampler, num_steps, spacing, eta)
    own = sampler is None or sampler == s.sampler  # the config's settings belong to its own sampler
    sampler = sampler or s.sampler
    validation.check_choice("sampler", sampler, sampling.SAMPLERS)
    options = dict(sampler=sampler, prediction=d.prediction, clip_denoised=s.clip_denoised)
    if sampler == "ancestral":
        return dict(options, variance=d.variance)
    options.update(num_steps=num_steps if num_steps is not None else (s.num_steps if own else None),
                   spacing=spacing if spacing is not None else (s.get("spacing", None) if own else None))
    if sampler == "ddim":
        options["eta"] = eta if eta is not None else (s.eta if own else 0.0)
    elif eta:
        raise ValueError(f"eta is DDIM's; sampler {sampler!r} takes none (got eta={eta}).")
    return options


def distilled_sampler_options(config: ml_collections.ConfigDict, sampler: str | None = None,
                              num_steps: int | None = None, spacing: str | None = None,
                              eta: float | None = None) -> dict:
    """A distilled student's sampler (config.sample.sampler) over the levels it was distilled for, as
    `sampler_options` gives them (with `timesteps`): progressive, "ddim" with eta 0 over config.distill.timesteps,
    only in config.distill.steps steps; consistency, "consistency" (`distillation.consistency_sampler`, resolved
    by `sample`) in 1 .. num_levels steps (default config.sample.num_steps) on its discretization
    (`distillation.consistency_sampling_times`), x0 unclipped. Another sampler, a spacing or an eta is refused."""
    d, name = config.distill, config.sample.sampler
    if sampler not in (None, name) or spacing is not None or eta:
        raise ValueError(f"a {d.method}-distilled student samples with {name!r} over the levels it was distilled "
                         f"for: it takes no other sampler, spacing or eta (got sampler {sampler!r}, spacing "
                         f"{spacing!r}, eta {eta!r}).")
    options = dict(sampler=name, prediction=config.diffusion.prediction, spacing=None)
    if d.method == "progressive":
        if num_steps not in (None, d.steps):
            raise ValueError(f"this student was distilled for {d.steps} steps (DDIM over the levels of its round of "
                             f"progressive distillation); got {num_steps} steps. Sample it in {d.steps}, or use the "
                             "chain's round for the other count.")
        return dict(options, clip_denoised=config.sample.clip_denoised, num_steps=int(d.steps), eta=0.0,
                    timesteps=tuple(d.timesteps))
    num_steps = config.sample.num_steps if num_steps is None else num_steps
    process = configs.create_schedule(config)
    times = distillation.consistency_sampling_times(distillation.consistency_times(process, d.num_levels),
                                                    num_steps, processes.is_process(process))
    return dict(options, clip_denoised=False, num_steps=int(num_steps), timesteps=times)


def balanced_labels(num_samples: int, num_classes: int) -> np.ndarray:
    """The labels a class-conditional run samples with when none are given: sample i of class i mod num_classes,
    int32 [num_samples]."""
    return np.arange(num_samples, dtype=np.int32) % num_classes


def sample(
    config: ml_collections.ConfigDict,
    params,
    rng,
    num_samples: int,
    image_shape: Sequence[int],
    *,
    sampler: str | None = None,
    num_steps: int | None = None,
    spacing: str | None = None,
    eta: float | None = None,
    labels=None,
    guidance_scale: float = 1.0,
    progress=None,
    layout=None,
) -> np.ndarray:
    """`num_samples` images [N, H, W, C] in [-1, 1] from U-Net params, on all devices of the run's layout
    (`configs.create_layout`: pmap, or a "sharded" run's mesh with the params split along FSDP as in training), or
    of `layout`.

    Sampler settings default to config.sample (its num_steps, spacing and eta apply when `sampler` is the
    config's sampler; other samplers default to their own, see `sampling.sampler_timesteps`); `labels` [N]
    condition a class-conditional model (default for such a model: balanced, sample i of class i mod
    num_classes), or tokens [N, L] a text-conditional one (default: the empty prompt), guided with `guidance_scale` (classifier-free guidance; 1 = plain conditional, one model
    call per step). Every argument is checked before anything compiles.
    """
    validation.check_count("num_samples", num_samples)
    model = configs.create_model(config)
    sched = configs.create_schedule(config, params)
    options = sampler_options(config, sampler, num_steps, spacing, eta)
    sampler = options.pop("sampler")
    if sampler == "consistency":
        num_levels = config.distill.num_levels
        sampler = distillation.consistency_sampler(distillation.sigma_min(sched, num_levels),
                                                   distillation.sigma_data(sched))
    conditional = model.null_label is not None
    if labels is not None and not conditional:
        raise ValueError("labels were given but the model is unconditional (config.model.num_classes is None).")
    if model.num_classes is not None:
        if labels is None:
            labels = balanced_labels(num_samples, model.num_classes)
        validation.check_labels(labels, model.num_classes, "sampling")
    validation.check_guidance(guidance_scale, conditional, labels is not None)
    return sampling.sample_sharded(
        functional.bind(model.apply, params),
        sched,
        rng,
        num_samples,
        tuple(image_shape),
        sampler=sampler,
        labels=labels,
        guidance_scale=guidance_scale,
        null_label=model.null_label if conditional and guidance_scale != 1 else None,
        per_device_batch=config.sample.get("per_device_batch", None),
        layout=configs.create_layout(config) if layout is None else layout,
        progress=progress,
        **options,
    )


def forecast(
    config: ml_collections.ConfigDict,
    params,
    rng,
    num_samples: int,
    *,
    sampler: str | None = None,
    num_steps: int | None = None,
    spacing: str | None = None,
    eta: float | None = None,
    resample: int = 1,
) -> dict:
    """Forecasts of every test window of a series run (config.data.source "series:NAME", config.data.window), by
    inpainting the horizon (`forecasting.forecast`; sampler settings as `sample`, `resample` RePaint's U).

    Returns dict(context float64 [N, L, C], target [N, H, C], samples [N, S, H, C], all in the data's units, and
    period: config.data.period, the season of the seasonal-naive baseline, 0 if none).
    """
    validation.check_count("num_samples", num_samples)
    kind, name = data.parse_source(config.data.source)
    if kind != "series" or config.data.get("window", None) is None:
        raise ValueError(f"forecast needs a run trained on a series (config.data.source 'series:NAME' and "
                         f"config.data.window); this run's source is {config.data.source!r}")
    window = configs.data_options(config)["window"]
    windows = series.load_windows(name, "test", **window)
    length, horizon = window["context"], window["horizon"]
    model = configs.create_model(config)
    scaled = forecasting.forecast(functional.bind(model.apply, params), configs.create_schedule(config, params), rng,
                                  windows.scaled[:, :length], horizon=horizon, num_samples=num_samples,
                                  resample=resample, **sampler_options(config, sampler, num_steps, spacing, eta))
    return dict(context=windows.values[:, :length], target=windows.values[:, length:],
                samples=scaled * windows.scale[:, None] + windows.loc[:, None], period=config.data.get("period", 0))
