"""The one-step samplers of the DDPM family as steps of the one loop (`reverse_loop`): ancestral (Ho et al. 2020,
alg. 2), DDIM with eta (Song et al. 2021, eq. 12), DDIM inversion, and RePaint's resampling (Lugmayr et al. 2022)
around any one-step sampler. The multistep ODE/SDE solvers are in `solvers`; `sampling.SAMPLERS` names them all.

Each step is step(ctx, x, i, state) -> (x_next, pred_x0, state) from level i to level i + 1 of ctx.levels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ddpm_jax import diffusion
from ddpm_jax.reverse_loop import Sampler


def _alpha_bar(sched, t):
    """alpha_bar at t [B], with alpha_bar = 1 where t = -1 (the end of a DDIM trajectory)."""
    return jnp.where(t >= 0, sched.alphas_cumprod[jnp.maximum(t, 0)], 1.0)


def ddim_update(sched, x0, eps, x_t, t, t_prev, noise, eta):
    """DDIM from timestep t to t_prev < t of a Schedule (Song et al. eq. 12; t_prev = -1 means alpha_bar = 1):
    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma noise, with
    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev) (eq. 16). x0, eps, x_t, noise
    [B, ...]; t, t_prev int32 [B]."""
    abar_t = diffusion.at(sched.alphas_cumprod, t, x_t)
    abar_prev = diffusion.at(_alpha_bar(sched, t_prev), jnp.arange(t.shape[0]), x_t)
    sigma = eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))
    direction = jnp.sqrt(jnp.maximum(1.0 - abar_prev - sigma**2, 0.0)) * eps
    return jnp.sqrt(abar_prev) * x0 + direction + sigma * noise


def ddim_level_update(lv, i, x, x0, eta=None, z=None):
    """DDIM from level i to i + 1 for any alpha, sigma (Song et al. 2021, eqs. 12 and 16):
    x' = alpha' D + sqrt(sigma'^2 - c^2) eps + c z, eps = (x - alpha D) / sigma, c = eta sigma' sqrt(1 - e^{-2h}).

    eta None is the deterministic step x' = alpha' D + sigma' (x - alpha D) / sigma, EDM's Euler step in
    y = x / alpha written so that it is finite at alpha = 0 (for VP processes c is DDIM's eq. 16 sigma)."""
    eps = (x - lv.alpha[i] * x0) / lv.sigma[i]
    if eta is None:
        return lv.alpha[i + 1] * x0 + lv.sigma[i + 1] * eps
    q = -jnp.expm1(-2.0 * (lv.lambda_[i + 1] - lv.lambda_[i]))  # 1 - e^{-2h}, 1 where alpha_i = 0 or sigma' = 0
    direction = lv.sigma[i + 1] * jnp.sqrt(jnp.maximum(1.0 - eta**2 * q, 0.0))
    return lv.alpha[i + 1] * x0 + direction * eps + eta * lv.sigma[i + 1] * jnp.sqrt(q) * z


def _timesteps(ctx, x, i):
    """The Schedule's int32 timesteps [B] of levels i and i + 1 (-1: the clean end)."""
    return (jnp.full(x.shape[:1], ctx.levels.t[j], jnp.int32) for j in (i, i + 1))


def ancestral(ctx, x, i, state):
    """Ho et al. alg. 2: x_{t-1} = mu~_t(x0, x_t) + sigma_t z (`diffusion.p_log_variance`), no noise at t = 0."""
    t, _ = _timesteps(ctx, x, i)
    d = ctx.denoise(x, i)
    log_variance = diffusion.p_log_variance(ctx.process, d.output, x, t, ctx.variance)
    mean, _, _ = diffusion.q_posterior_mean_variance(ctx.process, d.x0, x, t)
    x_prev = mean + jnp.where(ctx.levels.t[i] > 0, jnp.exp(0.5 * log_variance), 0.0) * ctx.noise(i)
    return x_prev, d.x0, state


def ddim(ctx, x, i, state):
    """DDIM with ctx.eta (0: deterministic; 1 over all T steps: ancestral with the posterior variance)."""
    d = ctx.denoise(x, i)
    if ctx.continuous:
        return ddim_level_update(ctx.levels, i, x, d.x0, ctx.eta, ctx.noise(i)), d.x0, state
    t, t_prev = _timesteps(ctx, x, i)
    return ddim_update(ctx.process, d.x0, d.eps, x, t, t_prev, ctx.noise(i), ctx.eta), d.x0, state


def ddim_inversion(ctx, x, i, state):
    """DDIM's deterministic step run backwards, from level i up to the noisier level i + 1, the model evaluated at
    the level moved to (as DDIM inversion is done in practice): x' = alpha' x0 + sigma' eps with eps = eps(x, t'),
    x0 = (x - sigma eps) / alpha."""
    lv = ctx.levels
    eps = ctx.denoise(x, i + 1).eps
    x0 = (x - lv.sigma[i] * eps) / lv.alpha[i]
    return lv.alpha[i + 1] * x0 + lv.sigma[i + 1] * eps, x0, state


def _resampled_step(step, resample, ctx, x, i, state):
    """`step` taken `resample` times, the result (its known pixels projected) re-noised back to level i between the
    tries by q(x_i | x_{i+1}) = N(sqrt(b) x, (1 - b) I), b = alpha_bar_i / alpha_bar_{i+1} (RePaint eq. 9, alg. 1).
    Try u draws its step noise as k = 3u and the re-noising as k = 3u + 1 (`reverse_loop`'s draws)."""
    lv = ctx.levels
    back = (lv.alpha[i] / lv.alpha[i + 1]) ** 2

    def attempt(u, carry):
        x_u, _ = carry
        tried = ctx._replace(noise=lambda j, k=0: ctx.noise(j, k + 3 * u))
        x_next, x0, _ = step(tried, x_u, i, state)
        renoised = jnp.sqrt(back) * ctx.project(x_next, i) + jnp.sqrt(1.0 - back) * ctx.noise(i, 3 * u + 1)
        return jnp.where(u < resample - 1, renoised, x_next), x0  # the loop projects the last try

    x, x0 = jax.lax.fori_loop(0, resample, attempt, (x, jnp.zeros_like(x)))
    return x, x0, state


@functools.lru_cache(maxsize=None)
def resampled(sampler: Sampler, resample: int) -> Sampler:
    """`sampler` (a one-step sampler: no state) with each step taken `resample` times (RePaint's U); inpainting only."""
    return sampler._replace(step=functools.partial(_resampled_step, sampler.step, resample))


ANCESTRAL = Sampler(ancestral, num_steps=None, spacing=None, clip_denoised=True, stochastic=True, discrete_only=True)
DDIM = Sampler(ddim, num_steps=50, spacing="leading", clip_denoised=True, stochastic=True)
DDIM_INVERSION = Sampler(ddim_inversion, num_steps=50, spacing="leading")
