"""Few-step students of a trained diffusion model: the math of progressive distillation (Salimans & Ho 2022) and
consistency distillation (Song et al. 2023), for any teacher process (a `Schedule` or a `processes.Process`).

Both read the teacher through the one denoiser (`denoiser.denoiser`) and its levels (`schedules.Levels`:
alpha, sigma, sigma_ve = sigma / alpha at the visited levels, then the clean end), and move it with the
samplers' own steps (`steps.ddim`, `solvers.heun`, `solvers.euler`), each example from its own level
(`teacher_step`). The training objectives are `objectives.distill`; the rounds and runs are `distill_run`.

Progressive distillation (Salimans & Ho 2022, Algorithm 2). A student of N steps visits the levels u = i / N,
i = N .. 1, of the continuous time u in (0, 1] (`progressive_times`), so the grid of 2N steps holds the
student's levels at its even indices. From z_t at the student's level t, the teacher takes two DDIM steps
(eta 0) t -> t' -> t'' (indices 2k -> 2k + 1 -> 2k + 2; in the first round optionally two Heun steps,
`PROGRESSIVE_SOLVERS`), and the student's x-prediction is regressed onto

    x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)        (Alg. 2)

the x_0 for which ONE DDIM step t -> t'', z'' = alpha'' x + sigma'' (z_t - alpha_t x) / sigma_t, lands on the
teacher's two-step result. Loss weight: "truncated_snr" max(SNR, 1), the paper's recommendation, or
"snr_plus_one" 1 + SNR (sec. 4), SNR = alpha_t^2 / sigma_t^2, on the x-space error.

Consistency distillation (Song et al. 2023, Algorithm 2). In EDM's coordinates y = x_t / alpha with noise level
sigma = sigma_ve (Karras et al. 2022), the consistency function is

    f(y, sigma) = c_skip(sigma) y + c_out(sigma) F(y, sigma),                                       (eq. 5)
    c_skip = sigma_d^2 / ((sigma - eps)^2 + sigma_d^2),  c_out = sigma_d (sigma - eps) / sqrt(sigma_d^2 + sigma^2)

(App. C), so f(y, eps) = y exactly. F is the student network read as EDM's raw output: F = (D - c_skip^EDM y) /
c_out^EDM, D the student's x_0 prediction in the teacher's parametrization (for an EDM teacher, exactly its
inner network); a student initialized from the teacher starts as f ~ D. The discretization is the teacher's
own N levels of Karras et al.'s rho = 7 spacing (`consistency_times`), eps its smallest sigma; sampling
(Algorithm 1) is `consistency_sampler`, a step of the one reverse loop.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax import processes, schedules, solvers, steps
from ddpm_jax.reverse_loop import Context, Sampler
from ddpm_jax.validation import check_choice, check_count

METHODS = ("progressive", "consistency")
WEIGHTINGS = ("truncated_snr", "snr_plus_one")
TEACHER_SOLVERS = {"heun": solvers.heun, "euler": solvers.euler}  # one ODE step each; "euler" is DDIM (eta 0)
# The first progressive round's teacher step: "ddim" (Alg. 2) or "heun" (EDM alg. 1 on the same levels); the later
# rounds' teachers are students, which sample with DDIM.
PROGRESSIVE_SOLVERS = {"ddim": steps.ddim, "heun": solvers.heun}
PROGRESSIVE_SOLVER = "ddim"  # the default first-round teacher step, the paper's
SIGMA_DATA = 0.5  # sigma_d of the consistency function for teachers without one (EDM's and Song et al.'s value)
FLOW_SIGMAS = (0.002, 80.0)  # the sigma_ve range of a rectified-flow teacher's discretization (EDM's)


def levels(process, times) -> schedules.Levels:
    """The `schedules.Levels` of `times` (a Schedule's int timesteps [N]; a process's float times [N + 1] ending
    at 0), then the clean end."""
    if processes.is_process(process):
        return processes.solver_levels(process, times)
    return schedules.levels(process, jnp.asarray(times, jnp.int32))


# ---------------------------------------------------------------- progressive distillation


def progressive_times(process, num_steps: int) -> tuple:
    """The levels a student of `num_steps` = N steps visits, at u = i / N, i = N .. 1 (noisiest first):

    on a Schedule of T steps, the int timesteps round(i T / N) - 1 (u = 1 is t = T - 1, u = 0 the clean end
    t = -1; exact integer arithmetic, halves rounded up, N <= T); on a process, the float times u t_max (EDM:
    sigma_max u^rho, Karras et al.'s ramp with sigma_min 0), then 0. Nested: the levels of N are those of 2N
    at even indices."""
    check_count("the student's number of steps", num_steps)
    n = int(num_steps)
    if not processes.is_process(process):
        T = process.num_timesteps
        if n > T:
            raise ValueError(f"a student of {n} steps needs {n} distinct timesteps; the schedule has T = {T}.")
        return tuple(int((2 * i * T + n) // (2 * n)) - 1 for i in range(n, 0, -1))
    u = np.arange(n, -1, -1, dtype=np.float64) / n
    times = process.sigma_max * u**process.rho if isinstance(process, processes.EDM) else process.t_max * u
    return tuple(float(t) for t in times.astype(np.float32))


def ddim_x0_target(z, z2, alpha, sigma, alpha2, sigma2):
    """x~ = (z'' - (sigma'' / sigma) z) / (alpha'' - (sigma'' / sigma) alpha) (Salimans & Ho, Alg. 2): the x_0
    whose DDIM step from (z, alpha, sigma) to (alpha'', sigma'') is z''. alpha.. broadcast against z [B, ...]."""
    ratio = sigma2 / sigma
    return (z2 - ratio * z) / (alpha2 - ratio * alpha)


def snr_weight(alpha, sigma, weighting: str):
    """The x-space loss weight at SNR = alpha^2 / sigma^2: "truncated_snr" max(SNR, 1), "snr_plus_one" SNR + 1."""
    check_choice("distillation weighting", weighting, WEIGHTINGS)
    snr = jnp.square(alpha / sigma)
    return jnp.maximum(snr, 1.0) if weighting == "truncated_snr" else snr + 1.0


# ---------------------------------------------------------------- the teacher's steps, one level per example


def teacher_step(step: Callable, process, lv: schedules.Levels, denoise: Callable, x, j, labels=None):
    """x [B, ...] with example b moved by `step` (a deterministic step of `steps` / `solvers`, step(ctx, x, i,
    state)) from level j[b] to j[b] + 1 of `lv`: the step run per example (`jax.vmap`), so each takes its own
    level. denoise(x [1, ...], t [1], labels [1] or None) -> `denoiser.Denoised`; labels [B] or None."""
    continuous = processes.is_process(process)

    def one(x, j, y):
        x = x[None]
        y = None if y is None else y[None]

        def at_level(x, i):
            return denoise(x, jnp.full((1,), lv.t[i], lv.t.dtype), y)

        ctx = Context(process, lv, at_level, lambda i, k=0: jnp.zeros_like(x), None, jnp.float32(0.0),
                      "fixed_small", continuous)
        return step(ctx, x, j, ())[0][0]

    return jax.vmap(one)(x, j, labels)


# ---------------------------------------------------------------- consistency distillation


def consistency_times(process, num_levels: int) -> tuple:
    """The N levels of the consistency discretization, noisiest first: Karras et al.'s rho = 7 spacing of sigma_ve
    (EDM eq. 5). On a Schedule its int timesteps of spacing "karras" (between its smallest and largest sigma_ve);
    on EDM its `levels(N)`; on rectified flow t = s / (1 + s) of sigma_ve s from 80 to 0.002 (`FLOW_SIGMAS`), then
    0. Other processes are refused."""
    check_count("the consistency discretization's levels (distill.num_levels)", num_levels, 2)
    n = int(num_levels)
    if not processes.is_process(process):
        return tuple(int(t) for t in schedules.spaced_timesteps(process, n, "karras"))
    if isinstance(process, processes.EDM):
        return tuple(float(t) for t in process.levels(n))
    if isinstance(process, processes.RectifiedFlow):
        ve = processes.edm(sigma_min=FLOW_SIGMAS[0], sigma_max=FLOW_SIGMAS[1]).levels(n).astype(np.float64)
        return tuple(float(t) for t in (ve / (1.0 + ve)).astype(np.float32))
    raise ValueError(f"consistency distillation maps a teacher onto EDM's sigma: it takes a discrete Schedule, EDM or "
                     f"rectified flow, not {type(process).__name__}.")


def sigma_min(process, num_levels: int) -> float:
    """eps: the smallest sigma_ve of the discretization (`consistency_times`), where f(y, eps) = y."""
    lv = levels(process, consistency_times(process, num_levels))
    return float(lv.sigma_ve[num_levels - 1])


def sigma_data(process) -> float:
    """sigma_d of the consistency function: an EDM teacher's own, else `SIGMA_DATA`."""
    return process.sigma_data if isinstance(process, processes.EDM) else SIGMA_DATA


def consistency_output(y, x0, sigma, eps, sigma_d):
    """f(y, sigma) = c_skip y + c_out F, F = (x0 - c_skip^EDM y) / c_out^EDM (module notes; Song et al. eq. 5 and
    App. C; EDM table 1): y, x0 [B, ...] (y = x_t / alpha), sigma broadcastable to them, eps and sigma_d floats.
    At sigma = eps, c_skip = 1 and c_out = 0: f = y exactly."""
    c_skip = sigma_d**2 / ((sigma - eps) ** 2 + sigma_d**2)
    c_out = sigma_d * (sigma - eps) / jnp.sqrt(sigma_d**2 + sigma**2)
    raw = (x0 - processes.edm_c_skip(sigma, sigma_d) * y) / processes.edm_c_out(sigma, sigma_d)
    return c_skip * y + c_out * raw


def _consistency_step(eps, sigma_d, ctx, x, i, state):
    """Song et al. Alg. 1, one step: x_0 = f(x at level i), then x at level i + 1 drawn as x_0 + sqrt(sigma'^2 -
    eps^2) z in y coordinates (x_0 itself at the clean end)."""
    lv = ctx.levels
    f = consistency_output(x / lv.alpha[i], ctx.denoise(x, i).x0, lv.sigma_ve[i], eps, sigma_d)
    spread = jnp.sqrt(jnp.maximum(lv.sigma_ve[i + 1] ** 2 - eps**2, 0.0))
    return lv.alpha[i + 1] * (f + spread * ctx.noise(i)), f, state


@functools.lru_cache(maxsize=None)
def consistency_sampler(eps: float, sigma_d: float) -> Sampler:
    """The multistep consistency sampler (Song et al. 2023, Algorithm 1) as a `reverse_loop.Sampler` over a
    student's levels (`consistency_sampling_times`); one per (eps, sigma_d), so the loop compiles once."""
    return Sampler(functools.partial(_consistency_step, float(eps), float(sigma_d)), num_steps=1, spacing=None,
                   stochastic=True)


def consistency_sampling_times(times: tuple, num_steps: int, continuous: bool) -> tuple:
    """The levels an S-step consistency sampler visits among the discretization's N `times` (noisiest first):
    indices floor(k N / S), k = 0 .. S - 1 (the first is sigma_max), and on a process the clean end 0."""
    visited = times[:-1] if continuous else times
    n = len(visited)
    check_count("the consistency sampler's steps", num_steps)
    if num_steps > n:
        raise ValueError(f"a consistency student samples in 1 to {n} steps (its discretization's levels); got "
                         f"{num_steps}.")
    chosen = tuple(visited[k * n // num_steps] for k in range(num_steps))
    return chosen + ((0.0,) if continuous else ())
