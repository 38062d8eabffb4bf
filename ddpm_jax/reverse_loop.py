"""The one `lax.scan` every sampler runs in, and the per-sample randomness it draws.

Sample i of a call draws from keys[i] = fold_in(rng, first_index + i) (see `keys.example_keys`): its x_T from
fold_in(keys[i], T) and the noise of step t from fold_in(keys[i], t), so a sample is the same whatever the batch
it is drawn in or the number of devices.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.keys import per_example


class Trajectory(NamedTuple):
    """Saved states of a reverse process: x_t and pred_x0 [K, B, H, W, C] at timesteps t [K] (noisiest first)."""

    x_t: jnp.ndarray
    pred_x0: jnp.ndarray
    t: jnp.ndarray


def per_sample_normal(keys, step, shape):
    """Standard normal [B, *shape[1:]], sample i drawn from fold_in(keys[i], step)."""
    return per_example(lambda k: jax.random.normal(jax.random.fold_in(k, step), shape[1:], jnp.float32), keys)


def initial_noise(keys, x_T, shape, num_timesteps):
    if x_T is None:
        return per_sample_normal(keys, num_timesteps, shape)
    if x_T.shape != tuple(shape):
        raise ValueError(f"x_T has shape {x_T.shape}; expected {tuple(shape)}.")
    return x_T.astype(jnp.float32)


def reverse_loop(step_fn, x_init, ts, trajectory_steps: int, history=None, project=None):
    """Run step_fn(x, i) -> (x_next, pred_x0) over loop indices i in one `lax.scan`.

    With `history` (any pytree: a multistep solver's past model outputs, say), the step is
    step_fn(x, i, history) -> (x_next, pred_x0, history_next) and the history rides in the scan carry.
    `project(x_next, i) -> x_next`, if given, is applied after every step (inpainting: the known pixels
    replaced by the data noised to the new level; see `known_pixels`).
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
        x, bufs, hist = carry
        i, slot = xs
        if history is None:
            x_next, pred_x0 = step_fn(x, i)
        else:
            x_next, pred_x0, hist = step_fn(x, i, hist)
        if project is not None:
            x_next = project(x_next, i)
        if trajectory_steps:
            bufs = jax.lax.cond(
                slot >= 0,
                lambda b: (b[0].at[slot].set(x), b[1].at[slot].set(pred_x0)),
                lambda b: b,
                bufs,
            )
        return (x_next, bufs, hist), None

    (x, bufs, _), _ = jax.lax.scan(body, (x_init, buffers, history), (jnp.arange(n), jnp.asarray(slots)))
    if not trajectory_steps:
        return x, None
    return x, Trajectory(x_t=bufs[0], pred_x0=bufs[1], t=jnp.asarray(ts[slots >= 0]))


def known_pixels(known, keys, alpha, sigma, num_timesteps: int):
    """project(x_next, i) for inpainting: x_next where mask = 1, elsewhere the known image noised to level i + 1.

    known: (images [B, ...] in [-1, 1], mask [B, ...] or broadcastable, 1 = generate, 0 = keep). alpha, sigma
    [N + 1]: sqrt(alpha_bar) and sqrt(1 - alpha_bar) of the levels a sampler steps through (level i + 1 is where
    step i lands; the last is the clean end, alpha 1 and sigma 0, so the known pixels come back exactly). The
    noise of sample i at level i + 1 is drawn from fold_in(keys[i], T + 1 + i), apart from the sampler's own draws.
    """
    images, mask = known

    def project(x_next, i):
        z = per_sample_normal(keys, num_timesteps + 1 + i, x_next.shape)
        noised = alpha[i + 1] * images + sigma[i + 1] * z
        return mask * x_next + (1.0 - mask) * noised

    return project
