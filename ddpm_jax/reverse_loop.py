"""The ONE compiled reverse loop every sampler runs in: `run(..., sampler=spec)`, a `lax.scan` of the sampler's step.

A sampler is a `Sampler`: a step function with one signature, step(ctx, x, i, state) -> (x_next, pred_x0, state),
that moves x from level i to level i + 1 of `ctx.levels` (`schedules.Levels`, [N + 1]: the N visited levels, then
the clean end), with its defaults (steps, spacing, clipping). The loop owns everything else, once: the levels, the
denoiser (`ctx.denoise(x, i)`, the model at level i as a `denoiser.Denoised`), x_T, the per-sample randomness
(`ctx.noise(i)`), the inpainting hook (`ctx.project`), the trajectory, and one compile per shape and setting.

Randomness is per sample: sample i of a call draws from keys[i] = fold_in(rng, first_index + i) (`keys.example_keys`),
so a sample is the same whatever the batch it is drawn in or the number of devices. The draws, by index of fold_in:

  on a Schedule (T steps):        x_T: T;  step i: t_i (+ k T for RePaint's k-th extra draw);  known pixels: T + 1 + i
  on a process (N visited levels): x_T: 0;  step i: i + 1 (+ k (2N + 1));                       known pixels: N + 1 + i

(on a process, a drawn x_T is sigma(t_0) z: rectified flow eps, EDM sigma_max eps).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax import processes, schedules
from ddpm_jax.denoiser import denoiser
from ddpm_jax.keys import example_keys, per_example
from ddpm_jax.schedules import Levels


class Trajectory(NamedTuple):
    """Saved states of a reverse process: x_t and pred_x0 [K, B, H, W, C] at timesteps t [K] (noisiest first)."""

    x_t: jnp.ndarray
    pred_x0: jnp.ndarray
    t: jnp.ndarray


def no_state(x_T):
    """The state of a one-step sampler: none."""
    return ()


def one_per_step(num_steps: int) -> int:
    return num_steps


class Sampler(NamedTuple):
    """A sampler: its step over the loop's levels and its defaults (a row of `sampling.SAMPLERS`)."""

    step: Callable                     # step(ctx, x, i, state) -> (x_next, pred_x0, state): level i -> i + 1
    init: Callable = no_state          # init(x_T) -> state (a multistep solver's history)
    num_steps: int | None = 20         # default number of visited levels (None: all T, "ancestral")
    spacing: str | None = "linspace"   # default spacing on a Schedule (`schedules.SPACINGS`)
    clip_denoised: bool = False        # default clipping of x0 to [-1, 1]
    stochastic: bool = False           # draws fresh noise at every step (takes `noise`)
    discrete_only: bool = False        # a Schedule's only ("ancestral")
    nfe: Callable[[int], int] = one_per_step  # model evaluations over N steps


class Context(NamedTuple):
    """What a step reads: the process, its levels [N + 1], and the loop's denoiser, noise and known pixels."""

    process: Any                 # a `schedules.Schedule` or a `processes.Process`
    levels: Levels
    denoise: Callable            # denoise(x, i) -> Denoised: the model at level i
    noise: Callable              # noise(i, k=0) -> standard normal [B, ...]: step i's k-th draw
    project: Callable | None     # project(x_next, i): the known pixels at level i + 1 (None: no inpainting)
    eta: jnp.ndarray             # DDIM's stochasticity, float32 []
    variance: str                # the ancestral step's variance
    continuous: bool             # a continuous process (float t), not a Schedule


def per_sample_normal(keys, index, shape):
    """Standard normal [B, *shape[1:]], sample i drawn from fold_in(keys[i], index)."""
    return per_example(lambda k: jax.random.normal(jax.random.fold_in(k, index), shape[1:], jnp.float32), keys)


def _levels(process, times, continuous: bool, invert: bool) -> Levels:
    """The loop's levels: `times` then the clean end; with `invert`, the clean end then `times` (increasing)."""
    if not invert:
        return processes.solver_levels(process, times) if continuous else schedules.levels(process, times)
    if continuous:
        return Levels(*(field[::-1] for field in processes.solver_levels(process, times[::-1])))
    t = jnp.asarray((-1,) + tuple(times), jnp.int32)
    abar = jnp.where(t >= 0, process.alphas_cumprod[jnp.maximum(t, 0)], 1.0)
    alpha, sigma = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)  # in float32 from alpha_bar, as DDIM inversion always was
    return Levels(t=t, alpha=alpha, sigma=sigma, lambda_=jnp.log(alpha) - jnp.log(sigma), sigma_ve=sigma / alpha)


def check_known(known, shape):
    """(images, mask) as float32 arrays: images of `shape`, mask broadcast to it, values in [0, 1]."""
    images, mask = (jnp.asarray(a, jnp.float32) for a in known)
    if bool(jnp.any((mask < 0) | (mask > 1))):
        raise ValueError("mask values must be in [0, 1] (1 = generate, 0 = keep).")
    if images.shape != tuple(shape):
        raise ValueError(f"the known images have shape {images.shape}; expected the samples' {tuple(shape)}.")
    try:
        mask = jnp.broadcast_to(mask, images.shape)
    except ValueError:
        raise ValueError(f"the mask's shape {mask.shape} does not broadcast to the images' {images.shape} "
                         "(use [B, H, W, C], [B, H, W, 1] or [H, W, 1]).") from None
    return images, mask


def _known_pixels(known, draw, alpha, sigma):
    """project(x_next, i): x_next where mask = 1, elsewhere the known images noised to level i + 1 (RePaint eq. 8).

    known: (images [B, ...], mask broadcastable, 1 = generate, 0 = keep); the last level is the clean end, where
    the known pixels come back exactly."""
    images, mask = known

    def project(x_next, i):
        noised = alpha[i + 1] * images + sigma[i + 1] * draw(i)
        return mask * x_next + (1.0 - mask) * noised

    return project


@functools.partial(jax.jit, static_argnames=("sampler", "shape", "times", "prediction", "clip_denoised", "variance",
                                             "trajectory_steps", "invert"))
def run(model_fn, process, rng, x_T, first_index, known, eta, noise, *, sampler: Sampler, shape: tuple,
        times: tuple, prediction: str, clip_denoised: bool, variance: str = "fixed_small", trajectory_steps: int = 0,
        invert: bool = False):
    """Run `sampler` over the levels `times` (a Schedule's int timesteps [N], or a process's float times [N + 1]
    ending at 0; increasing with `invert`, from the clean end up). Arguments are checked by the callers
    (`sampling.sample`, `solvers.solve`, `sampling.ddim_invert`).

    model_fn: a Partial (`functional.as_pytree`); x_T [B, ...] or None (drawn); known (images, mask) or None;
    eta float32 []; noise [N, B, ...] or None (replaces each step's own draw). Returns (x_0, Trajectory or None),
    the trajectory keeping x and pred_x0 at `trajectory_steps` evenly spaced steps (first and last included).
    """
    continuous = processes.is_process(process)
    keys = example_keys(rng, shape[0], first_index)
    lv = _levels(process, times, continuous, invert)
    n = lv.t.shape[0] - 1
    base, stride = (n, 2 * n + 1) if continuous else (process.num_timesteps, process.num_timesteps)

    def draw(i, k=0):
        if noise is not None:
            return noise[i]
        return per_sample_normal(keys, (i + 1 if continuous else lv.t[i]) + k * stride, shape)

    denoise_at = denoiser(model_fn, process, prediction, clip_denoised)

    def denoise(x, i):
        return denoise_at(x, jnp.full(x.shape[:1], lv.t[i], lv.t.dtype))

    project = None
    if known is not None:
        project = _known_pixels(known, lambda i: per_sample_normal(keys, base + 1 + i, shape), lv.alpha, lv.sigma)
    if x_T is None:
        x_init = lv.sigma[0] * per_sample_normal(keys, 0, shape) if continuous else per_sample_normal(keys, base, shape)
    elif x_T.shape != tuple(shape):
        raise ValueError(f"x_T has shape {x_T.shape}; expected {tuple(shape)}.")
    else:
        x_init = x_T.astype(jnp.float32)
    ctx = Context(process, lv, denoise, draw, project, eta, variance, continuous)

    slots = np.full((n,), -1, np.int32)
    if trajectory_steps:
        saved = np.unique(np.round(np.linspace(0, n - 1, min(trajectory_steps, n))).astype(np.int32))
        slots[saved] = np.arange(len(saved))
        buffers = (jnp.zeros((len(saved),) + x_init.shape), jnp.zeros((len(saved),) + x_init.shape))
    else:
        buffers = ()

    def body(carry, xs):
        x, bufs, state = carry
        i, slot = xs
        x_next, pred_x0, state = sampler.step(ctx, x, i, state)
        if project is not None:
            x_next = project(x_next, i)
        if trajectory_steps:
            bufs = jax.lax.cond(slot >= 0, lambda b: (b[0].at[slot].set(x), b[1].at[slot].set(pred_x0)),
                                lambda b: b, bufs)
        return (x_next, bufs, state), None

    carry = (x_init, buffers, sampler.init(x_init))
    (x, bufs, _), _ = jax.lax.scan(body, carry, (jnp.arange(n), jnp.asarray(slots)))
    if not trajectory_steps:
        return x, None
    visited = np.asarray(times)[:n]
    return x, Trajectory(x_t=bufs[0], pred_x0=bufs[1], t=jnp.asarray(visited[slots >= 0]))
