"""Fast ODE and SDE solvers of the reverse process, each a step of the one compiled loop (`reverse_loop.run`).

Notation (Lu et al. 2022, "DPM-Solver++", sec. 2): x_t = alpha_t x_0 + sigma_t eps with alpha_t^2 + sigma_t^2 = 1
(the variance-preserving coordinates of `diffusion.q_sample`), lambda_t = log(alpha_t / sigma_t) (half the
log-SNR), and the data prediction D(x_t, t), the model's x_0 prediction (the loop's denoiser, `denoiser.denoiser`,
converts eps, x0 and v models). All of them are gathered once into `schedules.Levels` at the visited timesteps t_0 > ...
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

On a continuous process (`processes`: rectified flow, EDM, VDM's gamma) the same steps run over
`processes.solver_levels` at float times, the model called at those times (`solve`'s notes); the forms that divide
by alpha (Euler, Heun) or are singular where alpha = 0 have finite forms there (section "continuous processes").

Each solver is a step of the one loop (`reverse_loop.Sampler`: step(ctx, x, i, state) -> (x_next, D_i, state),
the state a multistep solver's history), run by `reverse_loop.run`; randomness, x_T, inpainting and trajectories
are the loop's (`reverse_loop`'s module notes). `SOLVERS` maps each name to its `Sampler`.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax import diffusion, functional, processes, steps
from ddpm_jax.reverse_loop import Sampler, check_known, run
from ddpm_jax.schedules import Schedule
from ddpm_jax.validation import check_choice

DIFFUSERS_LOWER_ORDER_BELOW = 15  # diffusers' lower_order_final lowers the second-to-last step only for N < 15


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


def first_order(lv, i, x, x0):
    """The first-order step from level i to i + 1 of DPM-Solver++ and UniP (Lu et al. 2022, eq. 8 with k = 1):
    x' = (sigma' / sigma) x - alpha' (e^{-h} - 1) D, h = lambda' - lambda: DDIM with eta = 0 (Song et al. eq. 12)
    in lambda form, the step every multistep solver starts and ends with."""
    h = lv.lambda_[i + 1] - lv.lambda_[i]
    return lv.sigma[i + 1] / lv.sigma[i] * x - lv.alpha[i + 1] * jnp.expm1(-h) * x0


def _num_steps(ctx) -> int:
    return ctx.levels.t.shape[0] - 1


def _history(x_T, length: int):
    """A multistep solver's initial history: `length` zero states (never read before they are written)."""
    return tuple(jnp.zeros_like(x_T) for _ in range(length))


# ---------------------------------------------------------------- the solvers


def euler(ctx, x, i, state):
    """EDM alg. 1 without the correction, first order: y' = y + (y - D) / sigma_ve (sigma_ve' - sigma_ve); on a
    process the same step in the finite form of `steps.ddim_level_update` (rectified flow: x' = x + (t' - t) u)."""
    lv = ctx.levels
    x0 = ctx.denoise(x, i).x0
    if ctx.continuous:
        return steps.ddim_level_update(lv, i, x, x0), x0, state
    y = x / lv.alpha[i]
    y_next = y + _ve_slope(y, x0, lv.sigma_ve[i]) * (lv.sigma_ve[i + 1] - lv.sigma_ve[i])
    return lv.alpha[i + 1] * y_next, x0, state


def heun(ctx, x, i, state):
    """EDM alg. 1: the Euler step, then the trapezoid of its slope and the slope at its end (not to sigma = 0)."""
    if ctx.continuous:
        return _heun_process(ctx, x, i, state)
    lv = ctx.levels
    s, s_next = lv.sigma_ve[i], lv.sigma_ve[i + 1]
    x0 = ctx.denoise(x, i).x0
    y = x / lv.alpha[i]
    d = _ve_slope(y, x0, s)
    y_euler = y + d * (s_next - s)

    def correct(_):
        d_next = _ve_slope(y_euler, ctx.denoise(lv.alpha[i + 1] * y_euler, i + 1).x0, s_next)
        return y + 0.5 * (d + d_next) * (s_next - s)

    y_next = jax.lax.cond(s_next > 0, correct, lambda _: y_euler, None)
    return lv.alpha[i + 1] * y_next, x0, state


def _heun_process(ctx, x, i, state):
    """Heun in the process's time t (EDM alg. 1 with its sigma(t) = t generalized): the Euler step x_e
    (`steps.ddim_level_update`), then x' = x + (t' - t) (u(x, t) + u(x_e, t')) / 2 with the probability-flow
    velocity u = alpha'(t) D + sigma'(t) eps; an Euler step to sigma = 0. On EDM (alpha = 1) this is EDM's Heun, on
    rectified flow Heun's method on dx/dt = eps - D; both finite at alpha = 0."""
    lv = ctx.levels

    def velocity(x, x0, i):
        t = jnp.full(x.shape[:1], lv.t[i], jnp.float32)
        return processes.velocity(ctx.process, x0, (x - lv.alpha[i] * x0) / lv.sigma[i], t)

    x0 = ctx.denoise(x, i).x0
    x_euler = steps.ddim_level_update(lv, i, x, x0)

    def correct(_):
        u_next = velocity(x_euler, ctx.denoise(x_euler, i + 1).x0, i + 1)
        return x + 0.5 * (lv.t[i + 1] - lv.t[i]) * (velocity(x, x0, i) + u_next)

    return jax.lax.cond(lv.sigma[i + 1] > 0, correct, lambda _: x_euler, None), x0, state


def _dpmpp_multistep(solver_order, ctx, x, i, history):
    """DPM-Solver++(2M) / (3M) (Lu et al. 2022, alg. 2 and diffusers' third-order update); history D_{i-1}, D_{i-2}."""
    lv = ctx.levels
    orders = jnp.asarray(_dpm_orders(_num_steps(ctx), solver_order))
    m1, m2 = history
    m0 = ctx.denoise(x, i).x0
    ratio, a = lv.sigma[i + 1] / lv.sigma[i], lv.alpha[i + 1]
    h = lv.lambda_[i + 1] - lv.lambda_[i]
    phi = jnp.expm1(-h)

    def first(_):
        return first_order(lv, i, x, m0)

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


def dpmpp_2m_sde(ctx, x, i, m1):
    """SDE-DPM-Solver++(2M) (diffusers' sde-dpmsolver++, midpoint): the 2M data combination, e^{-h} damping, noise."""
    lv = ctx.levels
    orders = jnp.asarray(_dpm_orders(_num_steps(ctx), 2))
    m0 = ctx.denoise(x, i).x0
    h = lv.lambda_[i + 1] - lv.lambda_[i]
    half_over_r0 = jnp.where(orders[i] == 2, 0.5 * h / (lv.lambda_[i] - lv.lambda_[i - 1]), 0.0)
    d = m0 + half_over_r0 * (m0 - m1)
    x_next = (
        (lv.sigma[i + 1] / lv.sigma[i] * jnp.exp(-h)) * x
        - (lv.alpha[i + 1] * jnp.expm1(-2.0 * h)) * d
        + lv.sigma[i + 1] * jnp.sqrt(-jnp.expm1(-2.0 * h)) * ctx.noise(i)
    )
    return x_next, m0, m0


def _unipc_rho(b1, b2, rk):
    """UniC-2's (rho0, rho1) solving [[1, 1], [rk, 1]] rho = (b1, b2), as diffusers writes it."""
    return (b1 - b2) / (1.0 - rk), (b2 - rk * b1) / (1.0 - rk)


def _unipc_rho_limit(b1, b2, rk):
    """The same rho written rho1 = b1 + (b2 - b1) / (1 - rk): finite as rk -> -inf (a history level with
    lambda = -inf, rectified flow's t = 1), where it tends to (0, b1). Used on continuous processes only."""
    return (b1 - b2) / (1.0 - rk), b1 + (b2 - b1) / (1.0 - rk)


def unipc(ctx, x, i, history):
    """UniPC-2 with B(h) = e^h - 1 (bh2), data prediction: UniC at the new level, then UniP to the next one."""
    lv = ctx.levels
    rho = _unipc_rho_limit if ctx.continuous else _unipc_rho
    predictor, corrector = (jnp.asarray(o) for o in _unipc_orders(_num_steps(ctx)))
    x_last, m1, m2 = history  # the corrected state at level i - 1, D_{i-1}, D_{i-2}
    m0 = ctx.denoise(x, i).x0

    # UniC: redo the step from level i - 1 to i with D_i (hh = -h, phi = B(h) = e^{hh} - 1).
    hh = lv.lambda_[i - 1] - lv.lambda_[i]
    phi = jnp.expm1(hh)
    x_base = first_order(lv, i - 1, x_last, m1)

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
    x_first = first_order(lv, i, x, m0)

    def predict_2(_):
        rk = (lv.lambda_[i - 1] - lv.lambda_[i]) / h
        return x_first - lv.alpha[i + 1] * phi * (0.5 * (m1 - m0) / rk)

    x_next = jax.lax.switch(predictor[i] - 1, [lambda _: x_first, predict_2], None)
    return x_next, m0, (x, m0, m1)


def _heun_nfe(num_steps: int) -> int:
    return 2 * num_steps - 1  # no second evaluation on the last step, to sigma = 0


SOLVERS = {
    "euler": Sampler(euler, spacing="karras"),
    "heun": Sampler(heun, spacing="karras", nfe=_heun_nfe),
    "dpm++2m": Sampler(functools.partial(_dpmpp_multistep, 2), init=functools.partial(_history, length=2)),
    "dpm++3m": Sampler(functools.partial(_dpmpp_multistep, 3), init=functools.partial(_history, length=2)),
    "dpm++2m-sde": Sampler(dpmpp_2m_sde, init=jnp.zeros_like, stochastic=True),
    "unipc": Sampler(unipc, init=functools.partial(_history, length=3)),
}
DEFAULT_SPACING = {name: s.spacing for name, s in SOLVERS.items()}
STOCHASTIC = tuple(name for name, s in SOLVERS.items() if s.stochastic)
PROCESS_SOLVERS = ("ddim",) + tuple(SOLVERS)  # on a continuous process, "ddim" with eta is a solver too


def nfe(solver: str, num_steps: int) -> int:
    """Model evaluations of `solver` over num_steps levels: 2N - 1 for Heun (none at sigma = 0), else N."""
    check_choice("solver", solver, SOLVERS)
    return SOLVERS[solver].nfe(num_steps)


# ---------------------------------------------------------------- checks and the public entry


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


def check_levels(process, timesteps) -> tuple:
    """The static levels of `run`: a Schedule's timesteps as a tuple of ints (`check_timesteps`), a process's times
    as a tuple of floats (`processes.check_times`)."""
    if processes.is_process(process):
        return tuple(float(t) for t in processes.check_times(process, timesteps))
    return tuple(int(t) for t in check_timesteps(timesteps, process.num_timesteps))


def check_noise(noise, name: str, sampler: Sampler, num_steps: int, shape: tuple):
    """`noise` as float32 [N, B, ...] (or None); ValueError for a deterministic sampler or another shape."""
    if noise is None:
        return None
    if not sampler.stochastic:
        raise ValueError(f"noise is only used by the stochastic samplers (ancestral, ddim, dpm++2m-sde): it "
                         f"replaces their draws; {name!r} draws none.")
    noise = jnp.asarray(noise, jnp.float32)
    if noise.shape != (num_steps,) + shape:
        raise ValueError(f"noise has shape {noise.shape}; expected {(num_steps,) + shape} (one draw per step).")
    return noise


def run_checked(model_fn, process, rng, shape, *, name: str, sampler: Sampler, timesteps, prediction: str,
                clip_denoised: bool, x_T=None, first_index: int = 0, trajectory_steps: int = 0, noise=None,
                known=None, eta: float = 0.0, variance: str = "fixed_small"):
    """`reverse_loop.run` of `sampler` after the checks every entry shares: levels, prediction, noise, known."""
    shape = tuple(int(d) for d in shape)
    times = check_levels(process, timesteps)
    if processes.is_process(process):
        processes.check_prediction(process, prediction, np.asarray(times[:-1], np.float32))
    else:
        check_choice("prediction", prediction, diffusion.PREDICTIONS)
    if known is not None:
        known = check_known(known, shape)
    num_steps = len(times) - 1 if processes.is_process(process) else len(times)
    noise = check_noise(noise, name, sampler, num_steps, shape)
    x, trajectory = run(
        functional.as_pytree(model_fn), process, rng, x_T, jnp.int32(first_index), known, jnp.float32(eta), noise,
        sampler=sampler, shape=shape, times=times, prediction=prediction, clip_denoised=bool(clip_denoised),
        variance=variance, trajectory_steps=int(trajectory_steps))
    return (x, trajectory) if trajectory_steps else x


def solve(
    model_fn: Callable,
    sched: Schedule | processes.Process,
    rng,
    shape,
    *,
    solver: str,
    timesteps,
    prediction: str = "eps",
    clip_denoised: bool | None = None,
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
      clip_denoised: clip the x_0 prediction to [-1, 1] (None: the table's default, `sampling.SAMPLERS`: False
        for the solvers, True for "ddim" on a process).
      x_T: the state [B, ...] at timesteps[0] in VP coordinates (as `q_sample`); drawn per sample if None.
      first_index: global index of sample 0 (its randomness is fold_in(rng, first_index + i)).
      trajectory_steps: K > 0 also returns a `Trajectory` of K evenly spaced steps (the model's inputs x_t and
        its x_0 predictions at the visited timesteps; K = N keeps every step).
      noise: dpm++2m-sde only: use noise[i] [B, ...] as step i's standard normal z_i instead of drawing it
        ([N, B, ...]; e.g. to replay another implementation's noise).
      known: inpainting, (images [B, ...], mask broadcastable to them, 1 = generate): after every step the
        pixels with mask 0 are replaced by the images noised to the new level (`reverse_loop`).
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
    continuous = processes.is_process(sched)
    check_choice("solver", solver, PROCESS_SOLVERS if continuous else SOLVERS)
    if eta != 0 and solver != "ddim":
        raise ValueError(f"eta is DDIM's stochasticity; the solvers take none, got eta={eta} for {solver!r}.")
    spec = steps.DDIM if solver == "ddim" else SOLVERS[solver]
    return run_checked(model_fn, sched, rng, shape, name=solver, sampler=spec, timesteps=timesteps,
                       prediction=prediction, clip_denoised=spec.clip_denoised if clip_denoised is None else clip_denoised,
                       x_T=x_T, first_index=first_index, trajectory_steps=trajectory_steps, noise=noise, known=known,
                       eta=eta)
