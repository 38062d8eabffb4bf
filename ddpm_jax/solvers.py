"""Fast ODE and SDE solvers of the reverse process, each ONE compiled `lax.scan` over the visited levels.

Notation (Lu et al. 2022, "DPM-Solver++", sec. 2): x_t = alpha_t x_0 + sigma_t eps with alpha_t^2 + sigma_t^2 = 1
(the variance-preserving coordinates of `diffusion.q_sample`), lambda_t = log(alpha_t / sigma_t) (half the
log-SNR), and the data prediction D(x_t, t), the model's x_0 prediction (eps, x0 and v models are converted by
`diffusion.x0_and_eps`). All of them are gathered once into `schedules.Levels` at the visited timesteps t_0 > ...
> t_{N-1} and at the clean end t_N = -1 (alpha 1, sigma 0, lambda +inf): no solver derives them itself. Step i goes
from level i to level i + 1, and h_i = lambda_{i+1} - lambda_i.

- "euler", "heun": Karras et al. 2022 ("EDM"), alg. 2 with S_churn = 0 (= alg. 1 with sigma(t) = t, s(t) = 1),
  as k-diffusion's `sample_euler` / `sample_heun`. They work in the variance-exploding coordinates y = x / alpha
  with noise level sigma_ve = sigma / alpha, where the probability-flow ODE is dy/dsigma_ve = (y - D) / sigma_ve
  (EDM eqs. 1 and 3). Euler is alg. 1 without its correction: first order, and equal to DDIM with eta = 0
  (Song et al. 2021, eq. 12). Heun averages the slope with a second one at the next level (alg. 1, lines 6-8):
  second order, 2 model evaluations per step, except the last step to sigma_ve = 0, an Euler step (lines 5-6).
- "dpm++2m", "dpm++3m": DPM-Solver++(2M) (Lu et al. 2022, alg. 2) and its third-order multistep sibling, as
  diffusers' `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2 or 3)` with its defaults
  (solver_type "midpoint", lower_order_final, final_sigmas_type "zero"). The first-order step is DDIM:
  x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h_i} - 1) D_i. Orders warm up from 1 (step 0: 1,
  step 1: at most 2), the last step (to sigma = 0) is first order, and, as diffusers does for N < 15 steps
  only, the one before it is at most second order. Note: this third-order update (Lu et al.'s code, diffusers,
  k-diffusion alike) estimates D2 = h^2 D'' / 2 where the Taylor term needs h^2 D'' (their singlestep
  third-order update has the factor 2), so "dpm++3m" is asymptotically second order, with a smaller error
  than 2M (tests/test_solvers.py measures it; docs/samplers.md).
- "dpm++2m-sde": SDE-DPM-Solver++(2M), diffusers' `algorithm_type="sde-dpmsolver++"` with solver_order 2:
  x_{i+1} = (sigma_{i+1} / sigma_i) e^{-h_i} x_i + alpha_{i+1} (1 - e^{-2 h_i}) D
  + sigma_{i+1} sqrt(1 - e^{-2 h_i}) z_i, D the same (midpoint) combination of D_i, D_{i-1} as in 2M.
- "unipc": UniPC (Zhao et al. 2023) as diffusers' `UniPCMultistepScheduler` defaults: B(h) = e^h - 1 ("bh2"),
  data prediction, order 2. Each step first corrects the state the model was just evaluated at (UniC, with
  that new evaluation; none at step 0), then predicts the next level from the corrected state (UniP-2, which
  equals DPM-Solver++(2M)'s step; first order at step 0 and at the last step). The model is evaluated at the
  uncorrected states, which are what a `Trajectory` shows. The last predictor step to sigma = 0 returns D at the
  last visited level whatever the correction, and no corrector follows it.

Every solver's last step goes from the last visited level to sigma = 0 as a first-order step, which returns the
data prediction D(x, t_{N-1}). The model is only ever called as model_fn(x_t, t) at the visited int32 timesteps
(Heun's second evaluation is at the next visited level), so no solver needs a level between two timesteps.

On a continuous process (`processes`: rectified flow, EDM, VDM's gamma) the same step functions run over
`processes.solver_levels` at float times, the model called at those times (`solve`'s notes); the forms that divide
by alpha (Euler, Heun) or are singular where alpha = 0 have finite forms there (section "continuous processes").

Randomness as in `sampling`: sample i of a call draws from fold_in(rng, first_index + i), its x_T from
fold_in(that, T) and the SDE's step noise z_i from fold_in(that, t_i). Pass `model_fn` as a
`jax.tree_util.Partial` (`functional.bind`) so a solver compiles once per shape and setting, whatever the params.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax import diffusion, functional, processes
from ddpm_jax.diffusion import PREDICTIONS
from ddpm_jax.keys import example_keys
from ddpm_jax.reverse_loop import initial_noise, known_pixels, per_sample_normal, reverse_loop
from ddpm_jax.schedules import Levels, Schedule, levels
from ddpm_jax.validation import check_choice

SOLVERS = ("euler", "heun", "dpm++2m", "dpm++3m", "dpm++2m-sde", "unipc")
STOCHASTIC = ("dpm++2m-sde",)
DEFAULT_SPACING = {
    "euler": "karras", "heun": "karras", "dpm++2m": "linspace", "dpm++3m": "linspace",
    "dpm++2m-sde": "linspace", "unipc": "linspace",
}
DIFFUSERS_LOWER_ORDER_BELOW = 15  # diffusers' lower_order_final lowers the second-to-last step only for N < 15


def nfe(solver: str, num_steps: int) -> int:
    """Model evaluations of `solver` over num_steps levels: 2N - 1 for Heun (none at sigma = 0), else N."""
    check_choice("solver", solver, SOLVERS)
    return 2 * num_steps - 1 if solver == "heun" else num_steps


# ---------------------------------------------------------------- shared helpers


def _denoiser(model_fn, x0_and_eps, lv: Levels, prediction: str, clip_denoised: bool):
    """D(x, i): the model's x_0 prediction at visited level i, x [B, ...]: model_fn(x, t) at t = lv.t[i] [B] (int32
    timesteps of a Schedule, float32 times of a process), converted by x0_and_eps(output, x, t, prediction, clip)
    (`diffusion.x0_and_eps` or `processes.x0_and_eps` with the schedule or process bound)."""

    def denoise(x, i):
        t = jnp.full((x.shape[0],), lv.t[i], lv.t.dtype)
        pred = diffusion.prediction_channels(model_fn(x, t), x)
        return x0_and_eps(pred, x, t, prediction, clip_denoised)[0]

    return denoise


def _ve_slope(y, x0, sigma_ve):
    """The probability-flow ODE dy/dsigma_ve = (y - D) / sigma_ve in VE coordinates (k-diffusion's to_d)."""
    return (y - x0) / sigma_ve


def _dpm_orders(num_steps: int, solver_order: int) -> np.ndarray:
    """Per-step order of diffusers' DPMSolverMultistepScheduler.step (lower_order_final, final sigma zero)."""
    n = num_steps
    orders = np.full((n,), solver_order, np.int32)
    for i in range(n):
        if i == 0 or i == n - 1:  # warm-up; the last step (to sigma = 0) is always first order
            orders[i] = 1
        elif i == 1 or (i == n - 2 and n < DIFFUSERS_LOWER_ORDER_BELOW):
            orders[i] = min(solver_order, 2)
    return orders


def _unipc_orders(num_steps: int):
    """(predictor, corrector) order per step of diffusers' UniPCMultistepScheduler(solver_order=2): the
    predictor min(2, N - i, i + 1); the corrector at step i has the previous predictor's order (0: none)."""
    i = np.arange(num_steps)
    predictor = np.minimum(np.minimum(2, num_steps - i), i + 1).astype(np.int32)
    return predictor, np.concatenate([[0], predictor[:-1]]).astype(np.int32)


# ---------------------------------------------------------------- the solvers


def _euler(denoise, lv, x_T, draw, loop):
    """EDM alg. 1 without the correction, first order: y' = y + (y - D) / sigma_ve (sigma_ve' - sigma_ve)."""

    def step(x, i):
        x0 = denoise(x, i)
        y = x / lv.alpha[i]
        y_next = y + _ve_slope(y, x0, lv.sigma_ve[i]) * (lv.sigma_ve[i + 1] - lv.sigma_ve[i])
        return lv.alpha[i + 1] * y_next, x0

    return loop(step, x_T)


def _heun(denoise, lv, x_T, draw, loop):
    """EDM alg. 1: the Euler step, then the trapezoid of its slope and the slope at its end (not to sigma = 0)."""

    def step(x, i):
        s, s_next = lv.sigma_ve[i], lv.sigma_ve[i + 1]
        x0 = denoise(x, i)
        y = x / lv.alpha[i]
        d = _ve_slope(y, x0, s)
        y_euler = y + d * (s_next - s)

        def correct(_):
            d_next = _ve_slope(y_euler, denoise(lv.alpha[i + 1] * y_euler, i + 1), s_next)
            return y + 0.5 * (d + d_next) * (s_next - s)

        y_next = jax.lax.cond(s_next > 0, correct, lambda _: y_euler, None)
        return lv.alpha[i + 1] * y_next, x0

    return loop(step, x_T)


def _dpmpp_multistep(denoise, lv, x_T, draw, loop, solver_order):
    """DPM-Solver++(2M) / (3M) (Lu et al. 2022, alg. 2 and diffusers' third-order update); history D_{i-1}, D_{i-2}."""
    orders = jnp.asarray(_dpm_orders(lv.t.shape[0] - 1, solver_order))

    def step(x, i, history):
        m1, m2 = history
        m0 = denoise(x, i)
        ratio, a = lv.sigma[i + 1] / lv.sigma[i], lv.alpha[i + 1]
        h = lv.lambda_[i + 1] - lv.lambda_[i]
        phi = jnp.expm1(-h)

        def first(_):
            return ratio * x - a * phi * m0

        def second(_):  # midpoint: D = D_i + (D_i - D_{i-1}) / (2 r0)
            r0 = (lv.lambda_[i] - lv.lambda_[i - 1]) / h
            return ratio * x - a * phi * (m0 + (0.5 / r0) * (m0 - m1))

        def third(_):
            r0, r1 = (lv.lambda_[i] - lv.lambda_[i - 1]) / h, (lv.lambda_[i - 1] - lv.lambda_[i - 2]) / h
            d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            return ratio * x - a * phi * m0 + a * (phi / h + 1.0) * d1 - a * ((phi + h) / h**2 - 0.5) * d2

        x_next = jax.lax.switch(orders[i] - 1, [first, second, third][:solver_order], None)
        return x_next, m0, (m0, m1)

    return loop(step, x_T, history=(jnp.zeros_like(x_T), jnp.zeros_like(x_T)))


def _dpmpp_2m_sde(denoise, lv, x_T, draw, loop):
    """SDE-DPM-Solver++(2M) (diffusers' sde-dpmsolver++, midpoint): the 2M data combination, e^{-h} damping, noise."""
    orders = jnp.asarray(_dpm_orders(lv.t.shape[0] - 1, 2))

    def step(x, i, m1):
        m0 = denoise(x, i)
        h = lv.lambda_[i + 1] - lv.lambda_[i]
        half_over_r0 = jnp.where(orders[i] == 2, 0.5 * h / (lv.lambda_[i] - lv.lambda_[i - 1]), 0.0)
        d = m0 + half_over_r0 * (m0 - m1)
        x_next = (
            (lv.sigma[i + 1] / lv.sigma[i] * jnp.exp(-h)) * x
            - (lv.alpha[i + 1] * jnp.expm1(-2.0 * h)) * d
            + lv.sigma[i + 1] * jnp.sqrt(-jnp.expm1(-2.0 * h)) * draw(i)
        )
        return x_next, m0, m0

    return loop(step, x_T, history=jnp.zeros_like(x_T))


def _unipc_rho(b1, b2, rk):
    """UniC-2's (rho0, rho1) solving [[1, 1], [rk, 1]] rho = (b1, b2), as diffusers writes it."""
    return (b1 - b2) / (1.0 - rk), (b2 - rk * b1) / (1.0 - rk)


def _unipc_rho_limit(b1, b2, rk):
    """The same rho written rho1 = b1 + (b2 - b1) / (1 - rk): finite as rk -> -inf (a history level with
    lambda = -inf, rectified flow's t = 1), where it tends to (0, b1). Used on continuous processes only."""
    return (b1 - b2) / (1.0 - rk), b1 + (b2 - b1) / (1.0 - rk)


def _unipc(denoise, lv, x_T, draw, loop, rho=_unipc_rho):
    """UniPC-2 with B(h) = e^h - 1 (bh2), data prediction: UniC at the new level, then UniP to the next one."""
    predictor, corrector = (jnp.asarray(o) for o in _unipc_orders(lv.t.shape[0] - 1))

    def step(x, i, history):
        x_last, m1, m2 = history  # the corrected state at level i - 1, D_{i-1}, D_{i-2}
        m0 = denoise(x, i)

        # UniC: redo the step from level i - 1 to i with D_i (hh = -h, phi = B(h) = e^{hh} - 1).
        hh = lv.lambda_[i - 1] - lv.lambda_[i]
        phi = jnp.expm1(hh)
        x_base = lv.sigma[i] / lv.sigma[i - 1] * x_last - lv.alpha[i] * phi * m1

        def no_correction(_):
            return x

        def correct_1(_):
            return x_base - lv.alpha[i] * phi * (0.5 * (m0 - m1))

        def correct_2(_):
            rk = (lv.lambda_[i - 2] - lv.lambda_[i - 1]) / -hh
            b1 = (phi / hh - 1.0) / phi
            b2 = 2.0 * ((phi / hh - 1.0) / hh - 0.5) / phi
            rho0, rho1 = rho(b1, b2, rk)
            return x_base - lv.alpha[i] * phi * (rho0 * (m2 - m1) / rk + rho1 * (m0 - m1))

        x = jax.lax.switch(corrector[i], [no_correction, correct_1, correct_2], None)

        # UniP: from the corrected level i to level i + 1.
        h = lv.lambda_[i + 1] - lv.lambda_[i]
        phi = jnp.expm1(-h)
        x_first = lv.sigma[i + 1] / lv.sigma[i] * x - lv.alpha[i + 1] * phi * m0

        def predict_2(_):
            rk = (lv.lambda_[i - 1] - lv.lambda_[i]) / h
            return x_first - lv.alpha[i + 1] * phi * (0.5 * (m1 - m0) / rk)

        x_next = jax.lax.switch(predictor[i] - 1, [lambda _: x_first, predict_2], None)
        return x_next, m0, (x, m0, m1)

    zeros = jnp.zeros_like(x_T)
    return loop(step, x_T, history=(zeros, zeros, zeros))


_SOLVER_FNS = {
    "euler": _euler,
    "heun": _heun,
    "dpm++2m": functools.partial(_dpmpp_multistep, solver_order=2),
    "dpm++3m": functools.partial(_dpmpp_multistep, solver_order=3),
    "dpm++2m-sde": _dpmpp_2m_sde,
    "unipc": _unipc,
}


# ---------------------------------------------------------------- continuous processes
#
# The same solvers over `processes.solver_levels`: x_t = alpha(t) x_0 + sigma(t) eps with any alpha, sigma (not
# only alpha^2 + sigma^2 = 1), so alpha may be 0 at the first level (rectified flow at t = 1: lambda = -inf,
# sigma_ve = inf). The multistep solvers are written in (alpha, sigma, lambda) and hold for any such process
# (Lu et al. 2022 derive them so); at lambda_0 = -inf their first step is e^{-h} = 0, the exact DDIM step, and the
# history terms weighted by 1 / r with r = inf vanish. UniC-2's rho is written in its finite limit form there
# (`_unipc_rho_limit`). Euler and Heun, which work in y = x / alpha, are written without dividing by alpha:


def _ddim_update(lv, i, x, x0, eta=None, z=None):
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


def _ddim_process(denoise, lv, x_T, draw, loop, eta=None):
    """"euler" (eta None) and "ddim" on a process: `_ddim_update` at every step. On rectified flow the Euler step
    is the flow-matching one, x_{t'} = x_t + (t' - t) u with u = eps - D (the same in exact arithmetic)."""

    def step(x, i):
        x0 = denoise(x, i)
        return _ddim_update(lv, i, x, x0, eta, None if eta is None else draw(i)), x0

    return loop(step, x_T)


def _heun_process(denoise, lv, x_T, draw, loop, proc):
    """Heun in the process's time t (EDM alg. 1 with its sigma(t) = t generalized): the Euler step x_e
    (`_ddim_update`), then x' = x + (t' - t) (u(x, t) + u(x_e, t')) / 2 with the probability-flow velocity
    u = alpha'(t) D + sigma'(t) eps; an Euler step to sigma = 0. On EDM (alpha = 1) this is EDM's Heun, on
    rectified flow Heun's method on dx/dt = eps - D; both finite at alpha = 0."""

    def velocity(x, x0, i):
        t = jnp.full(x.shape[:1], lv.t[i], jnp.float32)
        return processes.velocity(proc, x0, (x - lv.alpha[i] * x0) / lv.sigma[i], t)

    def step(x, i):
        x0 = denoise(x, i)
        x_euler = _ddim_update(lv, i, x, x0)

        def correct(_):
            u_next = velocity(x_euler, denoise(x_euler, i + 1), i + 1)
            return x + 0.5 * (lv.t[i + 1] - lv.t[i]) * (velocity(x, x0, i) + u_next)

        return jax.lax.cond(lv.sigma[i + 1] > 0, correct, lambda _: x_euler, None), x0

    return loop(step, x_T)


PROCESS_SOLVERS = ("ddim",) + SOLVERS
PROCESS_STOCHASTIC = ("ddim",) + STOCHASTIC


def _process_solver(solver: str, proc, eta):
    if solver == "euler":
        return _ddim_process
    if solver == "ddim":
        return functools.partial(_ddim_process, eta=eta)
    if solver == "heun":
        return functools.partial(_heun_process, proc=proc)
    if solver == "unipc":
        return functools.partial(_unipc, rho=_unipc_rho_limit)
    return _SOLVER_FNS[solver]


@functools.partial(
    jax.jit,
    static_argnames=("shape", "solver", "times", "prediction", "clip_denoised", "trajectory_steps"),
)
def _solve_process(
    model_fn, proc, rng, x_T, first_index, noise, known, eta, shape, solver, times, prediction, clip_denoised,
    trajectory_steps,
):
    ts = np.asarray(times, np.float32)
    num_steps = len(ts) - 1
    keys = example_keys(rng, shape[0], first_index)
    lv = processes.solver_levels(proc, ts)

    def draw(i):
        return per_sample_normal(keys, i + 1, shape) if noise is None else noise[i]

    project = None if known is None else known_pixels(known, keys, lv.alpha, lv.sigma, num_steps)
    loop = functools.partial(reverse_loop, ts=ts[:-1], trajectory_steps=trajectory_steps, project=project)
    denoise = _denoiser(model_fn, functools.partial(processes.x0_and_eps, proc), lv, prediction, clip_denoised)
    if x_T is None:
        x_init = lv.sigma[0] * per_sample_normal(keys, 0, shape)
    else:
        x_init = initial_noise(keys, x_T, shape, 0)
    return _process_solver(solver, proc, eta)(denoise, lv, x_init, draw, loop)


# ---------------------------------------------------------------- public entry


@functools.partial(
    jax.jit,
    static_argnames=("shape", "solver", "timesteps", "prediction", "clip_denoised", "trajectory_steps"),
)
def _solve(
    model_fn, sched, rng, x_T, first_index, noise, known, shape, solver, timesteps, prediction, clip_denoised,
    trajectory_steps,
):
    ts = np.asarray(timesteps, np.int32)
    keys = example_keys(rng, shape[0], first_index)
    lv = levels(sched, ts)

    def draw(i):
        return per_sample_normal(keys, lv.t[i], shape) if noise is None else noise[i]

    project = None if known is None else known_pixels(known, keys, lv.alpha, lv.sigma, sched.num_timesteps)
    loop = functools.partial(reverse_loop, ts=ts, trajectory_steps=trajectory_steps, project=project)
    denoise = _denoiser(model_fn, functools.partial(diffusion.x0_and_eps, sched), lv, prediction, clip_denoised)
    x_init = initial_noise(keys, x_T, shape, sched.num_timesteps)
    return _SOLVER_FNS[solver](denoise, lv, x_init, draw, loop)


def check_timesteps(timesteps, num_timesteps: int) -> np.ndarray:
    """`timesteps` as int32 numpy [N] if they are concrete ints, distinct, decreasing and in [0, T); else ValueError."""
    if isinstance(timesteps, jax.core.Tracer):
        raise ValueError("timesteps must be concrete (they are static): compute them outside jit.")
    ts = np.asarray(timesteps)
    if ts.ndim != 1 or ts.size == 0 or not np.issubdtype(ts.dtype, np.integer):
        raise ValueError(
            "timesteps must be a non-empty 1-D sequence of ints, noisiest first (e.g. "
            f"schedules.spaced_timesteps(sched, num_steps, spacing)); got dtype {ts.dtype}, shape {ts.shape}."
        )
    if ts.min() < 0 or ts.max() >= num_timesteps:
        raise ValueError(
            f"timesteps must lie in [0, {num_timesteps}) (the schedule's T); got values from {ts.min()} to {ts.max()}."
        )
    if np.any(np.diff(ts) >= 0):
        raise ValueError(f"timesteps must be strictly decreasing (distinct, noisiest first); got {ts.tolist()}.")
    return ts.astype(np.int32)


def _check_noise(noise, solver: str, stochastic: tuple, num_steps: int, shape: tuple):
    """`noise` as float32 [N, B, ...] (or None); ValueError for a deterministic solver or another shape."""
    if noise is None:
        return None
    if solver not in stochastic:
        raise ValueError(
            f"noise is only used by the stochastic solvers ({', '.join(stochastic)}); solver is {solver!r}."
        )
    noise = jnp.asarray(noise, jnp.float32)
    if noise.shape != (num_steps,) + shape:
        raise ValueError(f"noise has shape {noise.shape}; expected {(num_steps,) + shape} (one draw per step).")
    return noise


def solve(
    model_fn: Callable,
    sched: Schedule | processes.Process,
    rng,
    shape,
    *,
    solver: str,
    timesteps,
    prediction: str = "eps",
    clip_denoised: bool = False,
    x_T=None,
    first_index: int = 0,
    trajectory_steps: int = 0,
    noise=None,
    known=None,
    eta: float = 0.0,
):
    """Sample with `solver` over `timesteps`, then a last step to t = -1 (alpha_bar = 1).

    `sched` may also be a continuous process (`processes`); the differences are listed after Returns.

    Args:
      model_fn: model_fn(x_t [B, ...], t int32 [B]) -> eps, x0 or v [B, ...] (or 2C channels: the learned
        variance half is ignored). Pass a Partial over its params (`functional.bind`) to compile once.
      shape: (B, ...) of the samples: images [B, H, W, C] or vectors [B, D].
      solver: one of SOLVERS.
      timesteps: the N visited timesteps, ints strictly decreasing in [0, T), e.g.
        `schedules.spaced_timesteps(sched, N, DEFAULT_SPACING[solver])`; each (N, values) compiles once.
      prediction: what the model outputs: "eps", "x0" or "v".
      clip_denoised: clip the x_0 prediction to [-1, 1].
      x_T: the state [B, ...] at timesteps[0] in VP coordinates (as `q_sample`); drawn per sample if None.
      first_index: global index of sample 0 (its randomness is fold_in(rng, first_index + i)).
      trajectory_steps: K > 0 also returns a `Trajectory` of K evenly spaced steps (the model's inputs x_t and
        its x_0 predictions at the visited timesteps; K = N keeps every step).
      noise: dpm++2m-sde only: use noise[i] [B, ...] as step i's standard normal z_i instead of drawing it
        ([N, B, ...]; e.g. to replay another implementation's noise).
      known: inpainting, (images [B, ...], mask broadcastable to them, 1 = generate): after every step the
        pixels with mask 0 are replaced by the images noised to the new level (`reverse_loop.known_pixels`).
    Returns:
      x_0 float32 [B, ...], or (x_0, Trajectory) when trajectory_steps > 0.

    On a continuous process `processes.Process`:
      model_fn: model_fn(x_t [B, ...], t float32 [B]) is called at the visited levels as they are (EDM: t is
        sigma; preconditioning belongs to the model, `processes.edm_precondition`).
      solver: one of PROCESS_SOLVERS: "ddim" (with `eta`, DDIM's eq. 16 noise) or any of SOLVERS ("euler" is
        "ddim" with eta 0).
      timesteps: float [N + 1], strictly decreasing from at most proc.t_max to 0 (the clean end), e.g.
        `proc.levels(N)`; each (N, values) compiles once. The trajectory's t are these float32 times.
      prediction: "eps", "x0", "v" or "velocity" (`processes.PREDICTIONS`); "eps" is refused where alpha = 0 at
        a visited level (rectified flow's t = 1).
      x_T: the state [B, ...] at timesteps[0]; drawn per sample as sigma(t_0) z if None, z from
        fold_in(fold_in(rng, first_index + i), 0) (rectified flow: x_T = z; EDM: sigma_max z, Karras et al.'s
        prior). Step i's noise (ddim with eta > 0, dpm++2m-sde) is drawn from fold_in(that, i + 1).
    """
    shape = tuple(int(d) for d in shape)
    if processes.is_process(sched):
        check_choice("solver", solver, PROCESS_SOLVERS)
        ts = processes.check_times(sched, timesteps)
        processes.check_prediction(sched, prediction, ts[:-1])
        noise = _check_noise(noise, solver, PROCESS_STOCHASTIC, len(ts) - 1, shape)
        x, trajectory = _solve_process(
            functional.as_pytree(model_fn), sched, rng, x_T, jnp.int32(first_index), noise, known, jnp.float32(eta),
            shape, solver, tuple(float(t) for t in ts), prediction, bool(clip_denoised), int(trajectory_steps),
        )
        return (x, trajectory) if trajectory_steps else x
    check_choice("solver", solver, SOLVERS)
    check_choice("prediction", prediction, PREDICTIONS)
    if eta != 0:
        raise ValueError(f"eta is DDIM's stochasticity; the solvers of a Schedule take none, got eta={eta}.")
    ts = check_timesteps(timesteps, sched.num_timesteps)
    noise = _check_noise(noise, solver, STOCHASTIC, len(ts), shape)
    x, trajectory = _solve(
        functional.as_pytree(model_fn), sched, rng, x_T, jnp.int32(first_index), noise, known, shape, solver,
        tuple(int(t) for t in ts), prediction, bool(clip_denoised), int(trajectory_steps),
    )
    return (x, trajectory) if trajectory_steps else x
