"""Samplers: ancestral (Ho et al. 2020, alg. 2) and DDIM (Song et al. 2021), each ONE compiled `lax.scan`.

Randomness is per sample: sample i of a call draws from fold_in(rng, first_index + i), its x_T from
fold_in(that, T) and its step-t noise from fold_in(that, t). A sample is therefore the same whatever the
batch it is drawn in or the number of devices (see `sample_sharded`).

Pass `model_fn` as a `jax.tree_util.Partial` (`functional.bind(unet.apply, params)`) so that params are
traced inputs: each sampler then compiles once per shape and setting, whatever the params.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.tree_util import Partial

from ddpm_jax import diffusion, functional, parallel
from ddpm_jax.keys import example_keys, per_example
from ddpm_jax.diffusion import PREDICTIONS, VARIANCES, check_choice
from ddpm_jax.schedules import Schedule

SPACINGS = ("uniform", "trailing")
SAMPLERS = ("ancestral", "ddim")


class Trajectory(NamedTuple):
    """Saved states of a reverse process: x_t and pred_x0 [K, B, H, W, C] at timesteps t [K] (noisiest first)."""

    x_t: jnp.ndarray
    pred_x0: jnp.ndarray
    t: jnp.ndarray


def ddim_timesteps(num_timesteps: int, num_steps: int, spacing: str = "uniform") -> np.ndarray:
    """The increasing timesteps a DDIM sampler visits: int32 [S].

    "uniform": range(0, T, T // num_steps), as the DDIM paper (S may exceed num_steps when it does not divide
    T). "trailing": round(T - k T / num_steps) - 1 for k < num_steps, which starts at t = T - 1 (Lin et al.
    2024, for zero-terminal-SNR schedules).
    """
    check_choice("timestep spacing", spacing, SPACINGS)
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_timesteps}] (the schedule's T), got {num_steps}.")
    if spacing == "uniform":
        return np.arange(0, num_timesteps, num_timesteps // num_steps, dtype=np.int32)
    return np.round(np.arange(num_timesteps, 0, -num_timesteps / num_steps)).astype(np.int32)[::-1] - 1


def _per_sample_normal(keys, step, shape):
    """Standard normal [B, *shape[1:]], sample i drawn from fold_in(keys[i], step)."""
    return per_example(lambda k: jax.random.normal(jax.random.fold_in(k, step), shape[1:], jnp.float32), keys)


def _initial_noise(keys, x_T, shape, num_timesteps):
    if x_T is None:
        return _per_sample_normal(keys, num_timesteps, shape)
    if x_T.shape != tuple(shape):
        raise ValueError(f"x_T has shape {x_T.shape}; expected {tuple(shape)}.")
    return x_T.astype(jnp.float32)


def _reverse_loop(step_fn, x_init, ts, trajectory_steps: int):
    """Run step_fn(x, i) -> (x_next, pred_x0) over loop indices i in one `lax.scan`.

    Returns (x_final, Trajectory or None); the trajectory keeps the input x and pred_x0 at `trajectory_steps`
    evenly spaced loop indices (the first and the last included).
    """
    n = len(ts)
    slots = np.full((n,), -1, np.int32)
    if trajectory_steps:
        saved = np.unique(np.round(np.linspace(0, n - 1, min(trajectory_steps, n))).astype(np.int32))
        slots[saved] = np.arange(len(saved))
        buffers = (jnp.zeros((len(saved),) + x_init.shape), jnp.zeros((len(saved),) + x_init.shape))
    else:
        buffers = ()

    def body(carry, xs):
        x, bufs = carry
        i, slot = xs
        x_next, pred_x0 = step_fn(x, i)
        if trajectory_steps:
            bufs = jax.lax.cond(
                slot >= 0,
                lambda b: (b[0].at[slot].set(x), b[1].at[slot].set(pred_x0)),
                lambda b: b,
                bufs,
            )
        return (x_next, bufs), None

    (x, bufs), _ = jax.lax.scan(body, (x_init, buffers), (jnp.arange(n), jnp.asarray(slots)))
    if not trajectory_steps:
        return x, None
    return x, Trajectory(x_t=bufs[0], pred_x0=bufs[1], t=jnp.asarray(ts[slots >= 0]))


# ---------------------------------------------------------------- ancestral sampling


@functools.partial(
    jax.jit, static_argnames=("shape", "prediction", "variance", "clip_denoised", "trajectory_steps")
)
def _ancestral(model_fn, sched, rng, x_T, first_index, shape, prediction, variance, clip_denoised, trajectory_steps):
    T = sched.num_timesteps
    keys = example_keys(rng, shape[0], first_index)
    ts = np.arange(T - 1, -1, -1, dtype=np.int32)

    def step(x, i):
        t_scalar = jnp.asarray(ts)[i]
        t = jnp.full((shape[0],), t_scalar, jnp.int32)
        out = diffusion.p_mean_variance(
            sched, model_fn(x, t), x, t, prediction=prediction, variance=variance, clip_denoised=clip_denoised
        )
        noise = _per_sample_normal(keys, t_scalar, shape)
        # No noise at t = 0 (Ho alg. 2, line 4): the sample is the mean.
        x_prev = out["mean"] + jnp.where(t_scalar > 0, jnp.exp(0.5 * out["log_variance"]), 0.0) * noise
        return x_prev, out["pred_x0"]

    return _reverse_loop(step, _initial_noise(keys, x_T, shape, T), ts, trajectory_steps)


def ancestral_sample(
    model_fn: Callable,
    sched: Schedule,
    rng,
    shape,
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip_denoised: bool = True,
    x_T=None,
    first_index: int = 0,
    trajectory_steps: int = 0,
):
    """Ho et al. alg. 2: x_{t-1} = mu_theta(x_t, t) + sigma_t z for t = T-1 .. 0, no noise at the last step.

    Args:
      model_fn: model_fn(x_t [B,H,W,C], t [B]) -> [B,H,W,C] (or 2C channels for variance="learned_range").
      shape: (B, H, W, C) of the samples.
      x_T: start from this noise [B,H,W,C] instead of drawing it.
      first_index: global index of sample 0 (its randomness is fold_in(rng, first_index + i)).
      trajectory_steps: K > 0 also returns a `Trajectory` of K evenly spaced steps.
    Returns:
      x_0 float32 [B,H,W,C], or (x_0, Trajectory) when trajectory_steps > 0.
    """
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("variance", variance, VARIANCES)
    x, trajectory = _ancestral(
        functional.as_pytree(model_fn), sched, rng, x_T, jnp.int32(first_index),
        tuple(shape), prediction, variance, clip_denoised, trajectory_steps,
    )
    return (x, trajectory) if trajectory_steps else x


# ---------------------------------------------------------------- DDIM


def _alpha_bar(sched: Schedule, t):
    """alpha_bar at t [B], with alpha_bar = 1 where t = -1 (the end of a DDIM trajectory)."""
    return jnp.where(t >= 0, sched.alphas_cumprod[jnp.maximum(t, 0)], 1.0)


def _prediction_channels(model_output, x_t):
    """The prediction part of a model output: all of it, or the first C of 2C channels (learned variance)."""
    channels = x_t.shape[-1]
    if model_output.shape[-1] == 2 * channels:
        return model_output[..., :channels]
    if model_output.shape != x_t.shape:
        raise ValueError(f"model output has shape {model_output.shape}; expected {x_t.shape} or 2C channels.")
    return model_output


def ddim_step(
    sched: Schedule, model_output, x_t, t, t_prev, noise, eta=0.0, *, prediction: str = "eps",
    clip_denoised: bool = True,
):
    """One DDIM update from t to t_prev < t (Song et al. eq. 12; t_prev = -1 means alpha_bar = 1).

    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma noise, with
    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev) (eq. 16). eta = 1 gives the
    ancestral step with the posterior variance; the learned-variance channels of a 2C output are ignored.
    Shapes: x_t, noise [B,H,W,C]; t, t_prev int32 [B]. Returns (x_prev, pred_x0).
    """
    pred = _prediction_channels(model_output, x_t)
    x0, eps = diffusion.x0_and_eps(sched, pred, x_t, t, prediction, clip_denoised)
    abar_t = diffusion._at(sched.alphas_cumprod, t, x_t)
    abar_prev = diffusion._at(_alpha_bar(sched, t_prev), jnp.arange(t.shape[0]), x_t)
    sigma = eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))
    direction = jnp.sqrt(jnp.maximum(1.0 - abar_prev - sigma**2, 0.0)) * eps
    return jnp.sqrt(abar_prev) * x0 + direction + sigma * noise, x0


@functools.partial(
    jax.jit,
    static_argnames=("shape", "num_steps", "prediction", "clip_denoised", "spacing", "trajectory_steps"),
)
def _ddim(
    model_fn, sched, rng, x_T, first_index, eta, shape, num_steps, prediction, clip_denoised, spacing,
    trajectory_steps,
):
    T = sched.num_timesteps
    keys = example_keys(rng, shape[0], first_index)
    seq = ddim_timesteps(T, num_steps, spacing)
    ts, ts_prev = seq[::-1], np.concatenate([[-1], seq[:-1]])[::-1].astype(np.int32)

    def step(x, i):
        t = jnp.full((shape[0],), jnp.asarray(ts)[i], jnp.int32)
        t_prev = jnp.full((shape[0],), jnp.asarray(ts_prev)[i], jnp.int32)
        noise = _per_sample_normal(keys, t[0], shape)
        return ddim_step(
            sched, model_fn(x, t), x, t, t_prev, noise, eta, prediction=prediction, clip_denoised=clip_denoised
        )

    return _reverse_loop(step, _initial_noise(keys, x_T, shape, T), ts, trajectory_steps)


def ddim_sample(
    model_fn: Callable,
    sched: Schedule,
    rng,
    shape,
    *,
    num_steps: int = 50,
    eta: float = 0.0,
    prediction: str = "eps",
    clip_denoised: bool = True,
    x_T=None,
    spacing: str = "uniform",
    first_index: int = 0,
    trajectory_steps: int = 0,
):
    """DDIM sampling (Song et al. 2021) over `ddim_timesteps(T, num_steps, spacing)`, last step to alpha_bar = 1.

    eta = 0 is deterministic given x_T; eta = 1 with num_steps = T is ancestral sampling with
    fixed_small variance. Other arguments and the return value as `ancestral_sample`; eta is traced (no
    recompilation per eta).
    """
    check_choice("prediction", prediction, PREDICTIONS)
    ddim_timesteps(sched.num_timesteps, num_steps, spacing)  # validates num_steps and spacing
    x, trajectory = _ddim(
        functional.as_pytree(model_fn), sched, rng, x_T, jnp.int32(first_index), jnp.float32(eta),
        tuple(shape), num_steps, prediction, clip_denoised, spacing, trajectory_steps,
    )
    return (x, trajectory) if trajectory_steps else x


@functools.partial(jax.jit, static_argnames=("num_steps", "prediction", "spacing"))
def _ddim_invert(model_fn, sched, x0, num_steps, prediction, spacing):
    seq = ddim_timesteps(sched.num_timesteps, num_steps, spacing)
    seq_prev = np.concatenate([[-1], seq[:-1]]).astype(np.int32)
    batch = x0.shape[0]

    def step(x, ts):
        t_from, t_to = (jnp.full((batch,), s, jnp.int32) for s in ts)
        # The model is evaluated at the level being moved to (as in DDIM inversion practice): eps(x, t_to).
        _, eps = diffusion.x0_and_eps(sched, _prediction_channels(model_fn(x, t_to), x), x, t_to, prediction)
        abar_from = diffusion._at(_alpha_bar(sched, t_from), jnp.arange(batch), x)
        abar_to = diffusion._at(sched.alphas_cumprod, t_to, x)
        x0_pred = (x - jnp.sqrt(1.0 - abar_from) * eps) / jnp.sqrt(abar_from)
        return jnp.sqrt(abar_to) * x0_pred + jnp.sqrt(1.0 - abar_to) * eps, None

    x_T, _ = jax.lax.scan(step, x0.astype(jnp.float32), (jnp.asarray(seq_prev), jnp.asarray(seq)))
    return x_T


def ddim_invert(
    model_fn: Callable, sched: Schedule, x0, *, num_steps: int = 50, prediction: str = "eps",
    spacing: str = "uniform",
):
    """DDIM inversion: x_0 [B,H,W,C] -> x_T along the deterministic (eta = 0) path, visiting the timesteps of
    `ddim_sample` in reverse order. `ddim_sample(..., x_T=ddim_invert(...), eta=0, clip_denoised=False)` with
    the same steps returns x_0 up to the discretization error of the ODE.
    """
    check_choice("prediction", prediction, PREDICTIONS)
    ddim_timesteps(sched.num_timesteps, num_steps, spacing)
    return _ddim_invert(functional.as_pytree(model_fn), sched, x0, num_steps, prediction, spacing)


# ---------------------------------------------------------------- conditioning and many devices


def _guided(model_fn, labels, guidance_scale, null_label, x_t, t):
    channels = x_t.shape[-1]
    both = model_fn(
        jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]),
        jnp.concatenate([labels, jnp.full_like(labels, null_label)]),
    )
    cond, uncond = jnp.split(both, 2)
    guided = uncond[..., :channels] + guidance_scale * (cond[..., :channels] - uncond[..., :channels])
    return jnp.concatenate([guided, cond[..., channels:]], axis=-1)


def classifier_free_guidance(model_fn: Callable, labels, guidance_scale, null_label: int) -> Partial:
    """model_fn(x_t, t) = uncond + s (cond - uncond) (Ho & Salimans 2022, eq. 6 with s = 1 + w).

    `model_fn(x_t, t, y)` is a class-conditional model whose label `null_label` means "no class"; labels int32
    [B]. s = 1 is the conditional model, s = 0 the unconditional one. Learned-variance channels are taken from
    the conditional output. Both passes run as one batch of 2B.
    """
    return Partial(_guided, functional.as_pytree(model_fn), jnp.asarray(labels, jnp.int32),
                   jnp.float32(guidance_scale), jnp.int32(null_label))


def with_labels(model_fn, labels, x_t, t):
    """model_fn(x_t, t, labels) as a model of (x_t, t): bind with `Partial(with_labels, model_fn, labels)`."""
    return model_fn(x_t, t, labels)


def _device_sampler(sampler: str, options: dict):
    """sample(model_fn, sched, rng, first_index, labels, guidance_scale) for one device's batch."""
    check_choice("sampler", sampler, SAMPLERS)
    options = dict(options)
    null_label = options.pop("null_label", None)
    sample_fn = ancestral_sample if sampler == "ancestral" else ddim_sample

    def sample(model_fn, sched, rng, first_index, labels, guidance_scale):
        if labels is not None:
            if null_label is None:
                model_fn = Partial(with_labels, model_fn, labels)
            else:
                model_fn = classifier_free_guidance(model_fn, labels, guidance_scale, null_label)
        return sample_fn(model_fn, sched, rng, first_index=first_index, **options)

    return sample


def sample_sharded(
    model_fn: Callable,
    sched: Schedule,
    rng,
    num_samples: int,
    image_shape,
    *,
    sampler: str = "ddim",
    labels=None,
    guidance_scale: float = 1.0,
    null_label: int | None = None,
    per_device_batch: int | None = None,
    devices=None,
    progress: Callable[[int, int], None] | None = None,
    **sampler_options,
):
    """Draw `num_samples` images [N, H, W, C] with `sampler` across `devices` via pmap (default: all local
    devices, and with several processes all devices of all processes, every process receiving all samples).

    Sample i draws its randomness from fold_in(rng, i), so the same rng gives the same images on any number of
    devices. `labels` int32 [N] condition a model_fn(x_t, t, y); with `null_label` they are guided with
    `guidance_scale` (classifier-free guidance). Rounds of `per_device_batch` samples per device (default:
    all at once) bound memory; `progress(done, total)` is called after each round. `sampler_options` go to
    `ancestral_sample` or `ddim_sample`.
    """
    distributed = devices is None and jax.process_count() > 1
    devices = devices or jax.local_devices()
    n_dev = len(devices) * (jax.process_count() if distributed else 1)  # all devices of all processes
    first_device = parallel.first_local_device_index() if distributed else 0
    per_device = per_device_batch or math.ceil(num_samples / n_dev)
    per_round = per_device * n_dev
    rounds = math.ceil(num_samples / per_round)
    if labels is not None:
        labels = np.asarray(labels, np.int32)
        if labels.shape != (num_samples,):
            raise ValueError(f"labels must have shape ({num_samples},) (one per sample), got {labels.shape}.")
        labels = np.resize(labels, rounds * per_round)  # padding samples reuse labels, then are dropped
    options = dict(sampler_options, shape=(per_device,) + tuple(image_shape))
    if null_label is not None:
        options["null_label"] = null_label
    pmapped = _pmapped_sampler(sampler, tuple(sorted(options.items())), None if distributed else tuple(devices),
                               labels is not None)
    model_fn = functional.as_pytree(model_fn)
    local = slice(first_device, first_device + len(devices))  # this process's devices
    out = []
    for r in range(rounds):
        first = (r * per_round + per_device * np.arange(n_dev, dtype=np.int32))[local]
        round_labels = None if labels is None else labels[r * per_round:(r + 1) * per_round].reshape(n_dev, -1)[local]
        x = pmapped(model_fn, sched, rng, first, round_labels, jnp.float32(guidance_scale))
        if distributed:  # every process gets every sample
            x = multihost_utils.process_allgather(x, tiled=True)
        out.append(np.asarray(x).reshape((per_round,) + tuple(image_shape)))
        if progress:
            progress(min((r + 1) * per_round, num_samples), num_samples)
    return np.concatenate(out)[:num_samples]


@functools.lru_cache(maxsize=32)
def _pmapped_sampler(sampler: str, options: tuple, devices: tuple, has_labels: bool):
    sample = _device_sampler(sampler, dict(options))
    in_axes = (None, None, None, 0, 0 if has_labels else None, None)
    return parallel.pmap(sample, in_axes=in_axes, devices=devices)
