"""Variational diffusion models (Kingma et al. 2021, "VDM"): noise schedules gamma(t) = -log SNR(t), the
continuous-time and T-step diffusion losses, the prior and reconstruction terms, the VLB in bits/dim, the learned
schedule and its variance-minimizing training, and the bridge to this project's discrete samplers.

    gamma_fn = vdm.linear_gamma(gamma_min=-13.3, gamma_max=5.0)        # t [B] in [0, 1] -> gamma(t) [B]
    loss = vdm.diffusion_loss(eps_fn, gamma_fn, x, t, noise)           # [B] nats: L_inf (eq. 17)
    loss = vdm.diffusion_loss(eps_fn, gamma_fn, x, t, noise, num_steps=T)   # L_T (eq. 15)
    bpd = vdm.bits_per_dim(eps_fn, gamma_fn, x, rng)                   # [B]: prior + reconstruction + diffusion

    model = vdm.VDM(unet=unet.digits(fourier_features=(6, 7)), schedule="learned", num_timesteps=1000)
    params = model.init(key, x, jnp.zeros([B], jnp.int32))
    sched = vdm.sampling_schedule(model, params)                       # a schedules.Schedule on the T-grid
    x0 = sampling.sample(functional.bind(model.apply, params), sched, rng, shape, sampler="dpm++2m")

Shapes: x [B, H, W, C] float32 in [-1, 1] (the functions that need 256 levels take round((x + 1) 127.5), the
nearest of the values -1 + 2k/255); t float32 [B] in [0, 1]; gamma float32 [B] (or a scalar where it is shared).
z_t = alpha_t x + sigma_t eps with alpha_t^2 = sigmoid(-gamma_t), sigma_t^2 = sigmoid(gamma_t) (variance
preserving), and `eps_fn(z_t, gamma_t)` predicts eps. Losses are nats summed over all axes but the first;
bits/dim divide by (H W C) log 2. Equation numbers are the VDM paper's (arXiv:2107.00630).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from ddpm_jax import schedules
from ddpm_jax.keys import example_keys, per_example
from ddpm_jax.models.unet import UNet
from ddpm_jax.validation import check_choice

GAMMA_MIN, GAMMA_MAX = -13.3, 5.0  # the paper's fixed end points: log SNR from 13.3 at t = 0 to -5 at t = 1
NUM_LEVELS = 256  # pixel values of the discrete decoder: -1 + 2k / 255, k = 0 .. 255
SCHEDULES = ("linear", "cosine", "learned")
SHAPE_SCOPE = "schedule_shape"  # the learned schedule's shape network (trained for low variance, not the VLB)
METRICS = ("bpd_diffusion", "bpd_diffusion_sq", "bpd_prior", "bpd_reconstruction", "gamma_0", "gamma_1")


# ---------------------------------------------------------------- noise schedules gamma(t) = -log SNR(t)


def alpha_sigma(gamma):
    """(alpha, sigma) = (sqrt(sigmoid(-gamma)), sqrt(sigmoid(gamma))): the signal and noise scales of z_t."""
    return jnp.sqrt(jax.nn.sigmoid(-gamma)), jnp.sqrt(jax.nn.sigmoid(gamma))


def _linear(gamma_min, gamma_max, t):
    return gamma_min + (gamma_max - gamma_min) * t


def _cosine(gamma_min, gamma_max, t):
    a0, a1 = jnp.arctan(jnp.exp(0.5 * gamma_min)), jnp.arctan(jnp.exp(0.5 * gamma_max))
    return 2.0 * jnp.log(jnp.tan(a0 + (a1 - a0) * t))


_FIXED = {"linear": _linear, "cosine": _cosine}


def linear_gamma(gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX) -> Partial:
    """gamma(t) = gamma_min + (gamma_max - gamma_min) t, the paper's fixed schedule: t [B] -> [B]."""
    return Partial(_linear, gamma_min, gamma_max)


def cosine_gamma(gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX) -> Partial:
    """The cosine schedule (Nichol & Dhariwal, alpha^2 = cos^2 of an angle linear in t) with the same end points:
    gamma(t) = 2 log tan(a_0 + (a_1 - a_0) t), a_i = arctan(exp(gamma_i / 2)), so sigmoid(-gamma(t)) =
    cos^2(a_0 + (a_1 - a_0) t), gamma(0) = gamma_min and gamma(1) = gamma_max. t [B] -> [B]."""
    return Partial(_cosine, gamma_min, gamma_max)


class MonotoneDense(nn.Module):
    """Dense layer with positive weights |kernel| (so increasing in every input): [..., D] -> [..., features]."""

    features: int
    kernel_init: Callable = nn.initializers.normal()
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        y = x @ jnp.abs(kernel)
        return y + self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else y


class MonotoneNet(nn.Module):
    """The paper's unnormalized schedule gamma~(t) = l1(t) + l3(phi(l2(l1(t)))) / num_features with positive
    weights and phi = sigmoid (the paper's appendix on the learned schedule): t [N] -> [N], increasing.

    l1 starts as the identity (kernel 1, bias 0) and l2, l3 at small weights (normal, std 0.01, as the VDM code),
    so the schedule starts near linear and the optimizer bends it."""

    num_features: int = 1024

    @nn.compact
    def __call__(self, t):
        h = MonotoneDense(1, kernel_init=nn.initializers.ones, name="l1")(t[:, None])
        gate = jax.nn.sigmoid(MonotoneDense(self.num_features, name="l2")(h))
        return (h + MonotoneDense(1, use_bias=False, name="l3")(gate) / self.num_features)[:, 0]


class LearnedGamma(nn.Module):
    """The learned schedule: gamma(t) = gamma_0 + (gamma_1 - gamma_0) (g(t) - g(0)) / (g(1) - g(0)), g the
    monotone network `MonotoneNet` (params under `SHAPE_SCOPE`) and gamma_0, gamma_1 learnable end points
    (params "gamma_0", "gamma_1", initialized to gamma_min and gamma_max). t [B] -> gamma [B], increasing in t
    while gamma_1 > gamma_0; gamma(0) = gamma_0 and gamma(1) = gamma_1 exactly."""

    gamma_min: float = GAMMA_MIN
    gamma_max: float = GAMMA_MAX
    num_features: int = 1024

    @nn.compact
    def __call__(self, t):
        gamma_0 = self.param("gamma_0", nn.initializers.constant(self.gamma_min), ())
        gamma_1 = self.param("gamma_1", nn.initializers.constant(self.gamma_max), ())
        t = jnp.asarray(t, jnp.float32)
        g = MonotoneNet(self.num_features, name=SHAPE_SCOPE)(jnp.concatenate([jnp.array([0.0, 1.0]), t]))
        return gamma_0 + (gamma_1 - gamma_0) * (g[2:] - g[0]) / (g[1] - g[0])


def check_gamma(gamma_fn, num_points: int = 1001) -> None:
    """Raise ValueError unless gamma is finite and non-decreasing on a grid of [0, 1] with gamma(1) > gamma(0)
    (noise must grow with t). Skipped under tracing, where the values are not known."""
    grid = jnp.linspace(0.0, 1.0, num_points, dtype=jnp.float32)
    g = gamma_fn(grid)
    if isinstance(g, jax.core.Tracer):
        return
    g = np.asarray(g, np.float64)
    if g.shape != grid.shape or not np.all(np.isfinite(g)):
        raise ValueError(f"gamma_fn must map t [N] to finite gamma [N]; on {num_points} points of [0, 1] it gave "
                         f"shape {g.shape}, finite: {bool(np.all(np.isfinite(g)))}.")
    drop = np.flatnonzero(np.diff(g) < 0)
    if drop.size or g[-1] <= g[0]:
        where = (f"it decreases from {g[drop[0]]:.6g} at t = {grid[drop[0]]:.4f} to {g[drop[0] + 1]:.6g} at "
                 f"t = {grid[drop[0] + 1]:.4f}" if drop.size else f"gamma(1) = {g[-1]:.6g} <= gamma(0) = {g[0]:.6g}")
        raise ValueError(f"gamma(t) = -log SNR(t) must increase on [0, 1] (noise grows with t); {where}.")


def check_times(t) -> None:
    """Raise ValueError unless every t is in [0, 1] (skipped for traced t)."""
    if isinstance(t, jax.core.Tracer):
        return
    t = np.asarray(t)
    if t.size and not (np.all(np.isfinite(t)) and t.min() >= 0.0 and t.max() <= 1.0):
        raise ValueError(f"t must be in [0, 1] (VDM's continuous time), got values in [{t.min()}, {t.max()}].")


def check_images(x) -> None:
    """Raise ValueError unless x is in [-1, 1], the range of the 256 decoder levels (skipped for traced x)."""
    if isinstance(x, jax.core.Tracer):
        return
    x = np.asarray(x)
    if x.size and not (np.all(np.isfinite(x)) and x.min() >= -1.0 and x.max() <= 1.0):
        raise ValueError(f"images must be in [-1, 1] (256 levels -1 + 2k/255) for the VLB, got values in "
                         f"[{x.min()}, {x.max()}]: map uint8 pixels with data.to_float.")


# ---------------------------------------------------------------- the VLB: diffusion, prior, reconstruction


def _per_example(v, x):
    """A scalar or [B] value shaped to broadcast against x [B, ...]."""
    v = jnp.asarray(v)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def _sum_flat(x):
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def quantize(x):
    """The nearest of the 256 levels -1 + 2k/255 to each pixel of x (the data the VLB is a bound for)."""
    return jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0


def diffusion_weight(gamma_fn, t, num_steps: int = 0):
    """(gamma_t [B], w [B]) with the diffusion loss = w ||eps - eps_hat(z_t, gamma_t)||^2.

    num_steps = 0: w = gamma'(t) / 2 (eq. 17), gamma' by `jax.jvp`. num_steps = T > 0: t is rounded up to the grid
    i / T (t = 0 to 1 / T) and w = T (exp(gamma_t - gamma_s) - 1) / 2 with s = t - 1 / T (eq. 15).
    """
    t = jnp.asarray(t, jnp.float32)
    if num_steps == 0:
        gamma_t, dgamma = jax.jvp(gamma_fn, (t,), (jnp.ones_like(t),))
        return gamma_t, 0.5 * dgamma
    t = jnp.maximum(jnp.ceil(t * num_steps), 1.0) / num_steps
    gamma_t = gamma_fn(t)
    return gamma_t, 0.5 * num_steps * jnp.expm1(gamma_t - gamma_fn(t - 1.0 / num_steps))


def noise_error(eps_fn, x, noise, gamma_t):
    """||noise - eps_fn(z_t, gamma_t)||^2 summed over all but axis 0, z_t = alpha_t x + sigma_t noise: [B]."""
    alpha, sigma = alpha_sigma(_per_example(gamma_t, x))
    return _sum_flat(jnp.square(noise - eps_fn(alpha * x + sigma * noise, gamma_t)))


def diffusion_loss(eps_fn, gamma_fn, x, t, noise, num_steps: int = 0):
    """The diffusion loss of each example, nats [B]: L_inf (num_steps = 0, eq. 17) or L_T (num_steps = T, eq. 15).

    L_inf = gamma'(t) / 2 ||noise - eps_hat||^2 and L_T = T / 2 (exp(gamma_t - gamma_s) - 1) ||noise - eps_hat||^2
    (t rounded up to the grid i / T, s = t - 1 / T): one-sample estimates over t ~ U[0, 1] and the noise of the
    diffusion part of -log p(x) (the expectation is the loss). eps_fn(z_t, gamma_t [B]) -> [B, ...]; gamma_fn any
    increasing t [B] -> [B] (a learned one closed over its params, as a `Partial`). Outside jit, t outside [0, 1]
    and a gamma that is not increasing on a grid of [0, 1] raise ValueError.
    """
    if num_steps < 0 or int(num_steps) != num_steps:
        raise ValueError(f"num_steps must be 0 (continuous time) or a positive integer T, got {num_steps!r}.")
    check_times(t)
    check_gamma(gamma_fn)
    gamma_t, weight = diffusion_weight(gamma_fn, t, int(num_steps))
    return weight * noise_error(eps_fn, x, noise, gamma_t)


def prior_loss(x, gamma_1):
    """KL(q(z_1 | x) || N(0, I)), nats [B]: 1/2 sum (alpha_1^2 (x^2 - 1) - log sigma_1^2), gamma_1 [] or [B]."""
    gamma_1 = _per_example(gamma_1, x)
    return 0.5 * _sum_flat(jax.nn.sigmoid(-gamma_1) * (jnp.square(x) - 1.0) - jax.nn.log_sigmoid(gamma_1))


def decoder_log_probs(z_0, gamma_0):
    """log p(x = v_k | z_0) over the 256 levels v_k = -1 + 2k/255: [B, ..., 256].

    The paper's discrete decoder: log softmax_k of -(z_0 / alpha_0 - v_k)^2 / (2 exp(gamma_0)), the Gaussian
    of z_0 / alpha_0 around each level (variance sigma_0^2 / alpha_0^2 = exp(gamma_0)), normalized over levels.
    """
    gamma_0 = _per_example(gamma_0, z_0)
    alpha_0, _ = alpha_sigma(gamma_0)
    levels = jnp.linspace(-1.0, 1.0, NUM_LEVELS, dtype=jnp.float32)
    logits = -0.5 * jnp.square((z_0 / alpha_0)[..., None] - levels) * jnp.exp(-gamma_0)[..., None]
    return jax.nn.log_softmax(logits, axis=-1)


def reconstruction_loss(x, gamma_0, noise):
    """-log p(x | z_0), nats [B], z_0 = alpha_0 x + sigma_0 noise: the decoder's NLL of x's 256-level value.

    Written with z_0 / alpha_0 = x + exp(gamma_0 / 2) noise, as the VDM code. gamma_0 [] or [B].
    """
    x = quantize(x)
    alpha_0, sigma_0 = alpha_sigma(_per_example(gamma_0, x))
    log_probs = decoder_log_probs(alpha_0 * x + sigma_0 * noise, gamma_0)
    index = jnp.round((x + 1.0) * 127.5).astype(jnp.int32)
    return -_sum_flat(jnp.take_along_axis(log_probs, index[..., None], axis=-1)[..., 0])


def _bpd_scale(x) -> float:
    return 1.0 / (math.prod(x.shape[1:]) * math.log(2.0))


@functools.partial(jax.jit, static_argnames=("num_steps", "num_times"))
def _bpd_terms(eps_fn, gamma_fn, x, rng, num_steps, num_times):
    x = quantize(x)
    scale = _bpd_scale(x)
    u = jax.random.uniform(jax.random.fold_in(rng, 0), ())
    noise_rng = jax.random.fold_in(rng, 2)

    def term(_, k):
        t = jnp.full(x.shape[:1], (u + k) / num_times, jnp.float32)
        noise = jax.random.normal(jax.random.fold_in(noise_rng, k), x.shape, x.dtype)
        gamma_t, weight = diffusion_weight(gamma_fn, t, num_steps)
        return None, weight * noise_error(eps_fn, x, noise, gamma_t) * scale

    _, diffusion = jax.lax.scan(term, None, jnp.arange(num_times))
    gamma_0, gamma_1 = gamma_fn(jnp.array([0.0, 1.0], jnp.float32))
    prior = prior_loss(x, gamma_1) * scale
    noise_0 = jax.random.normal(jax.random.fold_in(rng, 1), x.shape, x.dtype)
    reconstruction = reconstruction_loss(x, gamma_0, noise_0) * scale
    return dict(total_bpd=prior + reconstruction + jnp.mean(diffusion, axis=0), prior_bpd=prior,
                reconstruction_bpd=reconstruction, diffusion_bpd=diffusion.T)


def bits_per_dim_terms(eps_fn, gamma_fn, x, rng, *, num_steps: int = 0, num_times: int = 1000) -> dict:
    """The VLB -log p(x) <= prior + reconstruction + diffusion in bits/dim, with its terms:
    dict(total_bpd [B], prior_bpd [B], reconstruction_bpd [B], diffusion_bpd [B, K]).

    The diffusion loss (L_inf, or L_T with num_steps = T) is estimated at K = num_times stratified times
    t_k = (u + k) / K, u ~ U[0, 1) (each t_k uniform, so every column of diffusion_bpd is an unbiased one-sample
    estimate and their mean the estimate in total_bpd; K = T visits each point of the T-grid once), one compiled
    `lax.scan` over k. Randomness: u from fold_in(rng, 0), the reconstruction noise from fold_in(rng, 1), the
    noise at t_k from fold_in(fold_in(rng, 2), k). x in [-1, 1], taken at its 256-level values (`quantize`).
    Pass eps_fn and gamma_fn as `Partial`s (`bind_eps`, `bind_gamma`) so that new params do not retrace.
    """
    if num_times < 1 or num_steps < 0:
        raise ValueError(f"num_times must be >= 1 and num_steps >= 0, got {num_times} and {num_steps}.")
    check_images(x)
    check_gamma(gamma_fn)
    return _bpd_terms(_as_partial(eps_fn), _as_partial(gamma_fn), jnp.asarray(x, jnp.float32), rng,
                      int(num_steps), int(num_times))


def bits_per_dim(eps_fn, gamma_fn, x, rng, **kwargs):
    """The VLB in bits/dim, [B]: prior + reconstruction + diffusion loss. See `bits_per_dim_terms`."""
    return bits_per_dim_terms(eps_fn, gamma_fn, x, rng, **kwargs)["total_bpd"]


def _as_partial(fn):
    return fn if isinstance(fn, Partial) else Partial(fn)


# ---------------------------------------------------------------- training: antithetic times, variance gradient


def sample_times(rng, batch_size: int, *, first_index=0, global_batch: int | None = None, antithetic: bool = True):
    """t [batch_size] for examples first_index .. first_index + batch_size - 1 of a global batch of N.

    antithetic (the paper's low-discrepancy sampler): t_i = (u + i / N) mod 1 with one u ~ U[0, 1) from rng, so
    the batch covers [0, 1] evenly; otherwise t_i ~ U[0, 1) from fold_in(rng, i). Either way the same global
    batch gets the same times however it is split over devices.
    """
    index = first_index + jnp.arange(batch_size)
    if antithetic:
        u = jax.random.uniform(rng, ())
        return jnp.mod(u + index / (global_batch or batch_size), 1.0).astype(jnp.float32)
    return per_example(lambda k: jax.random.uniform(k, ()), example_keys(rng, batch_size, first_index))


def is_schedule_shape(path) -> bool:
    """True for a param path (from `jax.tree_util.tree_flatten_with_path`) of a learned schedule's shape."""
    return any(getattr(k, "key", None) == SHAPE_SCOPE for k in path)


def vlb_and_grads(eps_of, gamma_of, params, x, t, noise, noise_0, *, num_steps: int = 0):
    """The batch's mean VLB in bits/dim, its terms, and the gradients the paper trains with: ((loss, terms), grads).

    eps_of(params) -> eps_fn, gamma_of(params) -> gamma_fn. Every param gets the gradient of the loss (the mean
    over examples of prior + reconstruction + diffusion bpd), except, in continuous time (num_steps = 0), those of
    a learned schedule's shape (leaves under `SHAPE_SCOPE`): the continuous-time VLB does not depend on the shape
    (only on the end points), so they get the gradient of mean(bpd_diffusion^2), which lowers the variance of the
    loss estimate, as the paper trains its schedule.
    That gradient is E[2 L dL/d eta]: the per-example gradients with respect to gamma_t and the loss weight (taken
    in the same backward pass as the rest, through zero "taps") scaled by 2 L and pulled back through the
    schedule alone, so the U-Net runs forward and backward once. terms: per-example bpd, bpd_diffusion,
    bpd_diffusion_sq, bpd_prior, bpd_reconstruction [B] and gamma_0, gamma_1 [].
    """
    scale = _bpd_scale(x)

    def objective(p, taps):
        gamma_fn = gamma_of(p)
        gamma_t, weight = diffusion_weight(gamma_fn, t, num_steps)
        diffusion = (weight + taps[1]) * noise_error(eps_of(p), x, noise, gamma_t + taps[0]) * scale
        gamma_0, gamma_1 = gamma_fn(jnp.array([0.0, 1.0], jnp.float32))
        prior = prior_loss(x, gamma_1) * scale
        reconstruction = reconstruction_loss(x, gamma_0, noise_0) * scale
        total = diffusion + prior + reconstruction
        return jnp.mean(total), dict(bpd=total, bpd_diffusion=diffusion, bpd_diffusion_sq=jnp.square(diffusion),
                                     bpd_prior=prior, bpd_reconstruction=reconstruction, gamma_0=gamma_0,
                                     gamma_1=gamma_1)

    taps = jnp.zeros((2,) + t.shape, jnp.float32)
    (loss, terms), (grads, tap_grads) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(params, taps)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if num_steps == 0 and any(is_schedule_shape(path) for path, _ in leaves):
        _, pull = jax.vjp(lambda p: diffusion_weight(gamma_of(p), t, 0), params)
        (variance_grads,) = pull(tuple(2.0 * terms["bpd_diffusion"] * tap_grads))
        grads = jax.tree_util.tree_map_with_path(lambda path, g, v: v if is_schedule_shape(path) else g, grads,
                                                 variance_grads)
    return (loss, terms), grads


def training_loss_and_grads(model: "VDM", params, x, rng, *, labels=None, rngs=None, first_index=0,
                            global_batch: int | None = None, num_steps: int = 0, antithetic: bool = True):
    """One (device's part of a) batch: ((loss, aux), grads) of `vlb_and_grads` for a `VDM`, its times from
    `sample_times` and example i's noise from fold_in(rng', first_index + i); aux adds t [B].

    x [B, H, W, C] in [-1, 1], taken at its 256-level values (`quantize`); labels [B] for a class-conditional
    U-Net; rngs: Flax rngs (dropout) for train=True.
    """
    x = quantize(x)
    time_rng, example_rng = jax.random.split(rng)
    batch = x.shape[0]
    t = sample_times(time_rng, batch, first_index=first_index, global_batch=global_batch, antithetic=antithetic)
    both = per_example(lambda k: jax.random.normal(k, (2,) + x.shape[1:], x.dtype),
                       example_keys(example_rng, batch, first_index))
    eps_of = lambda p: functools.partial(model.apply, p, y=labels, train=True, rngs=rngs, method=VDM.eps)
    gamma_of = lambda p: functools.partial(model.apply, p, method=VDM.gamma)
    (loss, terms), grads = vlb_and_grads(eps_of, gamma_of, params, x, t, both[:, 0], both[:, 1],
                                         num_steps=num_steps)
    return (loss, dict(terms, t=t)), grads


# ---------------------------------------------------------------- the model and the samplers


class VDM(nn.Module):
    """A VDM noise predictor: a U-Net conditioned on gamma_t, with its noise schedule.

    Methods: `gamma(t)` t [B] float in [0, 1] -> [B]; `eps(z, gamma_t, y=None, train=False)` -> eps_hat, the U-Net
    at the level 1000 (gamma_t - gamma_min) / (gamma_max - gamma_min) (as the VDM code: DDPM's timestep range);
    `__call__(z, t, y=None, train=False)` with int32 t [B] of the T-grid (0-based: t is the time (t + 1) / T), the
    signature every sampler calls, with `sampling_schedule` giving the matching discrete Schedule.

    Attributes:
      unet: the noise-prediction U-Net (its `learn_sigma` must be False; `fourier_features` as the paper: (6, 7)).
      schedule: "linear" | "cosine" (fixed, from gamma_min to gamma_max) | "learned" (`LearnedGamma`, its end points
        starting there).
      gamma_min, gamma_max: the end points (fixed, or initial), and the U-Net's conditioning range.
      schedule_features: width of the learned schedule's network (1024 in the paper).
      num_timesteps: T of the grid the int timesteps index (sampling).
    """

    unet: UNet
    schedule: str = "learned"
    gamma_min: float = GAMMA_MIN
    gamma_max: float = GAMMA_MAX
    schedule_features: int = 1024
    num_timesteps: int = 1000

    @property
    def num_classes(self) -> int | None:
        return self.unet.num_classes

    @property
    def null_label(self) -> int | None:
        return self.unet.null_label

    @property
    def learn_sigma(self) -> bool:
        return False

    def setup(self):
        check_choice("VDM schedule", self.schedule, SCHEDULES)
        if self.unet.learn_sigma:
            raise ValueError("a VDM predicts eps only: its U-Net needs learn_sigma=False.")
        if not self.gamma_min < self.gamma_max:
            raise ValueError(f"gamma_min must be below gamma_max, got {self.gamma_min} and {self.gamma_max}.")
        if self.schedule == "learned":
            self.learned = LearnedGamma(self.gamma_min, self.gamma_max, self.schedule_features)

    def gamma(self, t):
        if self.schedule == "learned":
            return self.learned(t)
        return _FIXED[self.schedule](self.gamma_min, self.gamma_max, jnp.asarray(t, jnp.float32))

    def eps(self, z, gamma_t, y=None, *, train: bool = False):
        level = 1000.0 * (gamma_t - self.gamma_min) / (self.gamma_max - self.gamma_min)
        return self.unet(z, level, y, train=train)

    def __call__(self, z, t, y=None, *, train: bool = False):
        t = jnp.asarray(t)
        if not jnp.issubdtype(t.dtype, jnp.integer):
            raise ValueError(f"VDM(z, t) takes int timesteps t of the {self.num_timesteps}-grid (t is the time "
                             f"(t + 1) / T); got dtype {t.dtype}. For a continuous time use .eps(z, gamma(t)).")
        return self.eps(z, self.gamma((t.astype(jnp.float32) + 1.0) / self.num_timesteps), y, train=train)


@dataclasses.dataclass(frozen=True)
class _Method:
    """model.apply(params, *args, method=name) as a hashable function (equal for equal models)."""

    model: Any
    name: str

    def __call__(self, params, *args):
        return self.model.apply(params, *args, method=getattr(type(self.model), self.name))


def bind_eps(model: VDM, params) -> Partial:
    """eps_fn(z, gamma_t[, y]) of a VDM's params, a pytree (params traced, not baked into compiled code)."""
    return Partial(_Method(model, "eps"), params)


def bind_gamma(model: VDM, params) -> Partial:
    """gamma_fn(t) of a VDM's params (its learned schedule, or its fixed one), a pytree."""
    return Partial(_Method(model, "gamma"), params)


def discrete_schedule(gamma_fn, num_timesteps: int) -> schedules.Schedule:
    """The `schedules.Schedule` of gamma on the T-grid: timestep t (0-based) is the time (t + 1) / T, so
    alpha_bar[t] = sigmoid(-gamma((t + 1) / T)) and log_snr[t] = -gamma((t + 1) / T); a sampler's last step to
    alpha_bar = 1 stands for t = 0 (gamma_min, SNR ~ 6e5 for the paper's -13.3). Betas computed in float64 as
    1 - alpha_bar_t / alpha_bar_{t-1} = -expm1(log sigmoid(-gamma_t) - log sigmoid(-gamma_{t-1})).
    """
    if int(num_timesteps) != num_timesteps or num_timesteps < 2:
        raise ValueError(f"num_timesteps must be an integer >= 2, got {num_timesteps!r}.")
    check_gamma(gamma_fn)
    times = jnp.arange(1, num_timesteps + 1, dtype=jnp.float32) / num_timesteps
    gamma = np.asarray(gamma_fn(times), np.float64)
    log_alpha_bar = -np.logaddexp(0.0, np.concatenate([[-np.inf], gamma]))  # log sigmoid(-gamma), 0 before t = 0
    return schedules.make_schedule(-np.expm1(np.diff(log_alpha_bar)))


def sampling_schedule(model: VDM, params) -> schedules.Schedule:
    """`discrete_schedule` of a VDM's own (fixed or learned) gamma on its num_timesteps grid."""
    return discrete_schedule(bind_gamma(model, params), model.num_timesteps)
