"""Noise schedules: beta_t tables in float64 numpy, and the float32 `Schedule` pytree built from them.

Conventions: T timesteps, 0-based. `betas[t]` is the variance of the forward step q(x_t | x_{t-1}), so
`alphas_cumprod[t]` = prod_{s <= t} (1 - betas[s]) is alpha_bar of the noisiest level reached at t, and
`alphas_cumprod_prev[t]` is alpha_bar at t - 1 (1.0 at t = 0).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.validation import check_choice

MAX_BETA = 0.999  # Nichol & Dhariwal clip betas of alpha_bar-defined schedules at 0.999 (their sec. 3.2).


def _scaled_ends(num_timesteps: int, beta_start: float, beta_end: float) -> tuple[float, float]:
    """Both ends scaled by 1000 / T (Nichol & Dhariwal's code), so any T spans the same alpha_bar range."""
    scale = 1000.0 / num_timesteps
    if scale * beta_end >= 1.0:
        raise ValueError(
            f"beta_end {beta_end} scaled by 1000 / T = {scale:g} is {scale * beta_end:g} >= 1: T = {num_timesteps} "
            f"is too short for this schedule. Use T > {math.floor(1000 * beta_end)}, a smaller beta_end, or 'cosine'."
        )
    return scale * beta_start, scale * beta_end


def _linear(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. 2020: betas linear in [1e-4, 0.02] for T = 1000, both ends scaled by 1000 / T."""
    start, end = _scaled_ends(num_timesteps, beta_start, beta_end)
    return np.linspace(start, end, num_timesteps, dtype=np.float64)


def _quadratic(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al.'s reference code ("quad"): sqrt(beta) linear between the (scaled) linear endpoints."""
    start, end = _scaled_ends(num_timesteps, beta_start, beta_end)
    return np.linspace(math.sqrt(start), math.sqrt(end), num_timesteps, dtype=np.float64) ** 2


def betas_from_alpha_bar(
    alpha_bar: Callable[[np.ndarray], np.ndarray], num_timesteps: int, max_beta: float = MAX_BETA
) -> np.ndarray:
    """Discretize a continuous alpha_bar(tau), tau in [0, 1], into T betas (Nichol & Dhariwal eq. 17).

    beta_t = min(1 - alpha_bar((t + 1) / T) / alpha_bar(t / T), max_beta), t = 0 .. T - 1.
    """
    tau = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    abar = alpha_bar(tau)
    return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def _cosine(num_timesteps: int, s: float = 0.008, max_beta: float = MAX_BETA) -> np.ndarray:
    """Nichol & Dhariwal 2021 eq. 17: alpha_bar(tau) = cos^2((tau + s) / (1 + s) * pi / 2)."""
    return betas_from_alpha_bar(
        lambda tau: np.cos((tau + s) / (1.0 + s) * np.pi / 2) ** 2, num_timesteps, max_beta
    )


def _sigmoid(
    num_timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = MAX_BETA
) -> np.ndarray:
    """Chen 2023 ("On the importance of noise scheduling", alg. 1): alpha_bar from a sigmoid, discretized."""

    def sig(z):
        return 1.0 / (1.0 + np.exp(-z))

    v_start, v_end = sig(start / tau), sig(end / tau)

    def alpha_bar(u):
        return (v_end - sig((u * (end - start) + start) / tau)) / (v_end - v_start)

    return betas_from_alpha_bar(alpha_bar, num_timesteps, max_beta)


_SCHEDULES = {"linear": _linear, "quadratic": _quadratic, "cosine": _cosine, "sigmoid": _sigmoid}
SCHEDULE_NAMES = tuple(_SCHEDULES)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2024 alg. 1: shift and scale sqrt(alpha_bar) so alpha_bar[T-1] = 0 and alpha_bar[0] is kept.

    The last beta becomes 1 (pure noise at t = T - 1); use `prediction="v"` or `"x0"` with such a schedule,
    since an eps-prediction cannot recover x0 from pure noise.
    """
    sqrt_abar = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar**2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def get_betas(name: str, num_timesteps: int, *, zero_terminal_snr: bool = False, **options) -> np.ndarray:
    """Betas of a named schedule: float64 numpy [T].

    Args:
      name: "linear" | "quadratic" | "cosine" | "sigmoid".
      num_timesteps: T >= 2.
      zero_terminal_snr: rescale so alpha_bar[T-1] = 0 (Lin et al. 2024).
      **options: the schedule's own parameters (linear/quadratic: beta_start, beta_end; cosine: s, max_beta;
        sigmoid: start, end, tau, max_beta).
    """
    if name not in _SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; accepted: {', '.join(SCHEDULE_NAMES)}.")
    if not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 2:
        raise ValueError(f"num_timesteps must be an integer >= 2, got {num_timesteps!r}.")
    try:
        betas = _SCHEDULES[name](int(num_timesteps), **options)
    except TypeError as e:
        raise ValueError(f"Bad option for schedule {name!r}: {e}") from None
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return betas


@flax.struct.dataclass
class Schedule:
    """Every table the forward process, posterior, samplers and likelihood need: float32 [T] each.

    Computed once in float64 by `make_schedule`; index with int32 timesteps t in [0, T).
    """

    betas: jnp.ndarray
    log_betas: jnp.ndarray  # learned_range's upper log-variance (Nichol & Dhariwal eq. 15)
    alphas_cumprod: jnp.ndarray  # alpha_bar_t
    alphas_cumprod_prev: jnp.ndarray  # alpha_bar_{t-1}, 1 at t = 0
    sqrt_alphas_cumprod: jnp.ndarray
    sqrt_one_minus_alphas_cumprod: jnp.ndarray
    log_one_minus_alphas_cumprod: jnp.ndarray
    sqrt_recip_alphas_cumprod: jnp.ndarray  # 1 / sqrt(alpha_bar)
    sqrt_recipm1_alphas_cumprod: jnp.ndarray  # sqrt(1 / alpha_bar - 1)
    posterior_variance: jnp.ndarray  # beta~_t (Ho et al. eq. 7); 0 at t = 0
    posterior_log_variance_clipped: jnp.ndarray  # log beta~_t with t = 0 set to log beta~_1 (reference code)
    fixed_large_log_variance: jnp.ndarray  # log beta_t with t = 0 set to log beta~_1 (reference code)
    posterior_mean_coef1: jnp.ndarray  # coefficient of x_0 in mu~_t (eq. 7)
    posterior_mean_coef2: jnp.ndarray  # coefficient of x_t in mu~_t (eq. 7)
    log_snr: jnp.ndarray  # log(alpha_bar / (1 - alpha_bar)) (Kingma et al. 2021)

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]


def make_schedule(betas) -> Schedule:
    """The `Schedule` of float32 tables for `betas` (array-like [T], each in (0, 1]), computed in float64."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(f"betas must be a 1-D array of length >= 2, got shape {betas.shape}.")
    if not np.all(np.isfinite(betas)) or np.any(betas <= 0) or np.any(betas > 1):
        raise ValueError("betas must be finite and in (0, 1]; got values outside that range.")
    if np.any(betas[:-1] >= 1):
        raise ValueError("only the last beta may be 1 (zero terminal SNR); alpha_bar must stay positive before.")
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    with np.errstate(divide="ignore"):  # alpha_bar = 0 at a zero-SNR end gives inf / -inf, as it should
        tables = dict(
            betas=betas,
            log_betas=np.log(betas),
            alphas_cumprod=abar,
            alphas_cumprod_prev=abar_prev,
            sqrt_alphas_cumprod=np.sqrt(abar),
            sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - abar),
            log_one_minus_alphas_cumprod=np.log1p(-abar),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / abar),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / abar - 1.0),
            posterior_variance=posterior_variance,
            posterior_log_variance_clipped=np.log(np.append(posterior_variance[1], posterior_variance[1:])),
            fixed_large_log_variance=np.log(np.append(posterior_variance[1], betas[1:])),
            posterior_mean_coef1=betas * np.sqrt(abar_prev) / (1.0 - abar),
            posterior_mean_coef2=(1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
            log_snr=np.log(abar) - np.log1p(-abar),
        )
    return Schedule(**{k: jnp.asarray(v, dtype=jnp.float32) for k, v in tables.items()})


def snr(sched: Schedule, t=None) -> jnp.ndarray:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar): float32 [T], or [B] at timesteps t [B]."""
    return jnp.exp(log_snr(sched, t))


def log_snr(sched: Schedule, t=None) -> jnp.ndarray:
    """log SNR = log(alpha_bar / (1 - alpha_bar)), decreasing in t: float32 [T], or [B] at timesteps t."""
    return sched.log_snr if t is None else sched.log_snr[t]


# ---------------------------------------------------------------- the levels a sampler visits

SPACINGS = ("linspace", "leading", "trailing", "karras")
SPACING_ALIASES = {"uniform": "leading"}  # the DDIM code's name for its skip, `ddim_sample`'s former default
KARRAS_RHO = 7.0  # Karras et al. 2022, eq. 5


def spaced_timesteps(sched: Schedule, num_steps: int, spacing: str) -> np.ndarray:
    """The timesteps a sampler visits before its last step to t = -1: int32 [N] (N = num_steps, but see
    "leading"), strictly decreasing (noisiest first).

    "linspace": round(linspace(0, T - 1, N + 1))[::-1][:-1], diffusers' default for its multistep schedulers
      (starts at T - 1; N <= T - 1, since N = T would repeat a timestep).
    "leading" (alias "uniform"): the DDIM paper's range(0, T, T // N) reversed (its code's "uniform" skip,
      `ddim_sample`'s default): more than N levels where N does not divide T (T = 1000, N = 15: 16 levels, 990 .. 0); diffusers'
      "leading" keeps only the N smallest.
    "trailing": round(T - k T / N) - 1, k = 0 .. N - 1 (Lin et al. 2024, table 2): starts at T - 1.
    "karras": Karras et al. 2022 eq. 5, sigma_k = (sigma_max^(1/rho) + k / (N - 1) (sigma_min^(1/rho) -
      sigma_max^(1/rho)))^rho with rho = 7, between the schedule's smallest and largest
      sigma = sqrt((1 - abar) / abar) (so it starts at T - 1 and ends at 0); each sigma_k is snapped to the
      timestep nearest in log sigma. Where neighbours snap to the same timestep (many steps crowd the low-noise
      end), the levels are spread to exactly N distinct ones: from the end up, each is raised to at least one
      above the next (the last stays the snapped one, t = 0), then from the start down each is lowered to at
      most one below the previous (the first at most T - 1).

    linspace, leading and trailing depend only on T; karras reads the schedule's values, so it needs a concrete
    Schedule (call it outside jit). Raises ValueError for num_steps outside [1, T] or an unknown spacing.
    """
    spacing = SPACING_ALIASES.get(spacing, spacing)
    if spacing == "karras":
        check_choice("timestep spacing", spacing, SPACINGS)
        _check_num_steps(num_steps, sched.num_timesteps)
        return _karras_timesteps(sched, int(num_steps)).astype(np.int32)
    return spaced_steps(sched.num_timesteps, num_steps, spacing)[::-1].copy()


def _check_num_steps(num_steps, T: int) -> None:
    if not isinstance(num_steps, (int, np.integer)) or not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be an integer in [1, {T}] (the schedule's T), got {num_steps!r}.")


def spaced_steps(num_timesteps: int, num_steps: int, spacing: str) -> np.ndarray:
    """The spacings that depend on T alone ("linspace", "leading" (alias "uniform"), "trailing"; see
    `spaced_timesteps`), INCREASING: int32 [N]."""
    spacing = SPACING_ALIASES.get(spacing, spacing)
    if spacing == "karras":
        raise ValueError("spacing 'karras' reads a schedule's sigmas: use schedules.spaced_timesteps(sched, ...).")
    check_choice("timestep spacing", spacing, SPACINGS)
    T = num_timesteps
    _check_num_steps(num_steps, T)
    n = int(num_steps)
    if spacing == "linspace":
        ts = np.round(np.linspace(0, T - 1, n + 1))[1:]
        if np.any(np.diff(ts) <= 0):
            raise ValueError(
                f"spacing 'linspace' repeats a timestep for num_steps = {n} with T = {T}: it accepts num_steps in "
                f"[1, {T - 1}]; 'leading' and 'trailing' accept up to T."
            )
    elif spacing == "leading":
        ts = np.arange(0, T, T // n)
    else:
        ts = (np.round(T - np.arange(n) * (T / n)) - 1)[::-1]
    return np.ascontiguousarray(ts).astype(np.int32)


def _karras_timesteps(sched: Schedule, n: int) -> np.ndarray:
    if isinstance(sched.alphas_cumprod, jax.core.Tracer):
        raise ValueError(
            "spacing 'karras' needs a concrete (not traced) Schedule: it reads the schedule's sigmas. Compute the "
            "timesteps outside jit and pass them in."
        )
    abar = np.asarray(sched.alphas_cumprod, np.float64)
    T = abar.shape[0]
    with np.errstate(divide="ignore"):
        log_sigmas = 0.5 * (np.log1p(-abar) - np.log(abar))  # log sqrt((1 - abar) / abar), increasing in t
    if not np.all(np.isfinite(log_sigmas)):
        raise ValueError(
            "spacing 'karras' needs a finite largest sigma = sqrt((1 - abar) / abar); this schedule reaches "
            "abar = 0 (zero terminal SNR). Use 'trailing', 'linspace' or 'leading'."
        )
    lo, hi = np.exp(log_sigmas[0] / KARRAS_RHO), np.exp(log_sigmas[-1] / KARRAS_RHO)
    ramp = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    log_targets = KARRAS_RHO * np.log(hi + ramp * (lo - hi))
    ts = np.abs(log_sigmas[None, :] - log_targets[:, None]).argmin(axis=1)
    for k in range(n - 2, -1, -1):  # from the end up: at least one above the next
        ts[k] = max(ts[k], ts[k + 1] + 1)
    ts[0] = min(ts[0], T - 1)
    for k in range(1, n):  # from the start down: at most one below the previous
        ts[k] = min(ts[k], ts[k - 1] - 1)
    return ts


class Levels(NamedTuple):
    """The continuous view the solvers share, at the N visited timesteps and the clean end: float32 [N + 1] each.

    x_t = alpha_t x_0 + sigma_t eps (variance preserving: alpha^2 + sigma^2 = 1), lambda_t = log(alpha_t /
    sigma_t) (half the log-SNR, Lu et al. 2022), and sigma_ve = sigma_t / alpha_t, the noise level of the
    variance-exploding coordinates x / alpha_t (Karras et al. 2022). The last entry is t = -1: alpha 1,
    sigma 0, lambda +inf, sigma_ve 0. Gathered from the Schedule's float64-computed tables.
    """

    t: jnp.ndarray  # int32 [N + 1], last -1
    alpha: jnp.ndarray
    sigma: jnp.ndarray
    lambda_: jnp.ndarray
    sigma_ve: jnp.ndarray


def levels(sched: Schedule, timesteps) -> Levels:
    """`Levels` at timesteps [N] (ints in [0, T), e.g. from `spaced_timesteps`) followed by t = -1. Works under
    jit (the schedule and the timesteps may be traced)."""
    t = jnp.asarray(timesteps, jnp.int32)

    def with_end(table, end):
        return jnp.concatenate([table[t], jnp.full((1,), end, jnp.float32)])

    return Levels(
        t=jnp.concatenate([t, jnp.full((1,), -1, jnp.int32)]),
        alpha=with_end(sched.sqrt_alphas_cumprod, 1.0),
        sigma=with_end(sched.sqrt_one_minus_alphas_cumprod, 0.0),
        lambda_=with_end(0.5 * sched.log_snr, jnp.inf),
        sigma_ve=with_end(sched.sqrt_recipm1_alphas_cumprod, 0.0),
    )
