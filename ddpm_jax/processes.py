"""Continuous diffusion processes x_t = alpha(t) x_0 + sigma(t) eps behind one small interface, and their
parametrizations.

    proc = processes.rectified_flow()        # alpha = 1 - t, sigma = t, t in [0, 1] (Liu et al. 2023; the linear
                                             # path of flow matching, Lipman et al. 2023)
    proc = processes.edm(sigma_max=80.0)     # alpha = 1, sigma = t: the level is sigma (Karras et al. 2022)
    proc = processes.vdm(vdm.linear_gamma()) # alpha^2 = sigmoid(-gamma(t)), sigma^2 = sigmoid(gamma(t)) (Kingma et
                                             # al. 2021), variance preserving, t in [0, 1]

A process gives alpha(t), sigma(t) and their time derivatives d_alpha(t), d_sigma(t) (t float32 [B] -> [B]), the
levels a sampler visits (`levels(num_steps)`: numpy float32 [N + 1], noisiest first, the last the clean end
t = 0) and the training-time distribution of t (`sample_t(key, shape)`). A `schedules.Schedule` is the discrete
variance-preserving process (int32 t) and is handled by `diffusion`, not here (`is_process` tells them apart).

Parametrizations (`PREDICTIONS`), for any process, with alpha, sigma at t and ' = d/dt:
  "eps"      eps;                                  x_0 = (x - sigma eps) / alpha (none where alpha = 0)
  "x0"       x_0
  "v"        v = alpha eps - sigma x_0 (Salimans & Ho 2022, sec. 4, for any alpha, sigma);
             x_0 = (alpha x - sigma v) / (alpha^2 + sigma^2), eps = (sigma x + alpha v) / (alpha^2 + sigma^2)
  "velocity" u = dx_t/dt = alpha' x_0 + sigma' eps (rectified flow: eps - x_0; flow matching's target);
             x_0 = (sigma' x - sigma u) / det, eps = (alpha u - alpha' x) / det, det = alpha sigma' - sigma alpha'
EDM's preconditioning (Karras et al. 2022, table 1) wraps a raw network into an x_0 model (`edm_precondition`).

Shapes: x [B, ...] float32; t float32 [B] (EDM: t is sigma).
"""

from __future__ import annotations

from typing import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from ddpm_jax import functional
from ddpm_jax.schedules import KARRAS_RHO, Levels
from ddpm_jax.validation import check_choice, check_count, check_number
from ddpm_jax.vdm import alpha_sigma

PREDICTIONS = ("eps", "x0", "v", "velocity")
T_DISTRIBUTIONS = ("uniform", "logit_normal")


class Process:
    """x_t = alpha(t) x_0 + sigma(t) eps. Subclasses define alpha, sigma, d_alpha, d_sigma (t [B] -> [B]),
    `levels(num_steps)` and `sample_t(key, shape)`; `t_max` is the noisiest level, 0 the clean end."""

    t_max: float

    def log_snr_half(self, t):
        """lambda(t) = log(alpha(t) / sigma(t)) (Lu et al. 2022): -inf where alpha = 0, +inf where sigma = 0."""
        return jnp.log(self.alpha(t)) - jnp.log(self.sigma(t))

    def sample(self, x0, t, noise):
        """x_t = alpha(t) x_0 + sigma(t) noise: x0, noise [B, ...], t [B] -> [B, ...]."""
        return _at(self.alpha(t), x0) * x0 + _at(self.sigma(t), x0) * noise


def _uniform_levels(num_steps: int) -> np.ndarray:
    """1 - k / N, k = 0 .. N, computed in float64: float32 [N + 1]."""
    check_count("num_steps", num_steps)
    return np.linspace(1.0, 0.0, num_steps + 1, dtype=np.float64).astype(np.float32)


@flax.struct.dataclass
class RectifiedFlow(Process):
    """alpha = 1 - t, sigma = t, t in [0, 1] (Liu et al. 2023; Lipman et al. 2023's linear path).

    Training t: "uniform" on [0, 1), or "logit_normal": t = sigmoid(m + s n), n ~ N(0, 1) (Esser et al. 2024,
    "SD3", sec. 3.1, with their default m = 0, s = 1). Levels: N uniform steps from t = 1 to 0.
    """

    t_distribution: str = flax.struct.field(pytree_node=False, default="uniform")
    logit_mean: float = flax.struct.field(pytree_node=False, default=0.0)
    logit_std: float = flax.struct.field(pytree_node=False, default=1.0)
    t_max = 1.0

    def alpha(self, t):
        return 1.0 - t

    def sigma(self, t):
        return t

    def d_alpha(self, t):
        return -jnp.ones_like(t)

    def d_sigma(self, t):
        return jnp.ones_like(t)

    def levels(self, num_steps: int) -> np.ndarray:
        """t_k = 1 - k / N, k = 0 .. N: float32 [N + 1], from 1 (x = eps) to 0 (x = x_0)."""
        return _uniform_levels(num_steps)

    def sample_t(self, key, shape):
        """Training times float32 `shape` in [0, 1): uniform or logit-normal (`t_distribution`)."""
        if self.t_distribution == "uniform":
            return jax.random.uniform(key, shape, jnp.float32)
        return jax.nn.sigmoid(self.logit_mean + self.logit_std * jax.random.normal(key, shape, jnp.float32))


@flax.struct.dataclass
class EDM(Process):
    """x = x_0 + sigma eps: alpha = 1, sigma = t (Karras et al. 2022, "EDM", sec. 2 and 5).

    Training: ln sigma ~ N(P_mean, P_std^2) (table 1). Levels: eq. 5 with rho from sigma_max to sigma_min, then 0.
    """

    sigma_min: float = flax.struct.field(pytree_node=False, default=0.002)
    sigma_max: float = flax.struct.field(pytree_node=False, default=80.0)
    sigma_data: float = flax.struct.field(pytree_node=False, default=0.5)
    rho: float = flax.struct.field(pytree_node=False, default=KARRAS_RHO)
    P_mean: float = flax.struct.field(pytree_node=False, default=-1.2)
    P_std: float = flax.struct.field(pytree_node=False, default=1.2)

    @property
    def t_max(self) -> float:
        return self.sigma_max

    def alpha(self, t):
        return jnp.ones_like(t)

    def sigma(self, t):
        return t

    def d_alpha(self, t):
        return jnp.zeros_like(t)

    def d_sigma(self, t):
        return jnp.ones_like(t)

    def levels(self, num_steps: int) -> np.ndarray:
        """EDM eq. 5: sigma_k = (sigma_max^(1/rho) + k / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
        k = 0 .. N - 1 (N = 1: sigma_max), then sigma_N = 0; computed in float64, float32 [N + 1]."""
        check_count("num_steps", num_steps)
        ramp = np.linspace(0.0, 1.0, num_steps) if num_steps > 1 else np.zeros(1)
        lo, hi = self.sigma_min ** (1.0 / self.rho), self.sigma_max ** (1.0 / self.rho)
        return np.append((hi + ramp * (lo - hi)) ** self.rho, 0.0).astype(np.float32)

    def sample_t(self, key, shape):
        """Training sigmas float32 `shape`: exp(P_mean + P_std n), n ~ N(0, 1) (EDM table 1, "log-normal")."""
        return jnp.exp(self.P_mean + self.P_std * jax.random.normal(key, shape, jnp.float32))


@flax.struct.dataclass
class VDM(Process):
    """Variational diffusion's continuous VP process (Kingma et al. 2021, secs. 3.1-3.2):
    alpha(t) = sqrt(sigmoid(-gamma(t))), sigma(t) = sqrt(sigmoid(gamma(t))), t in [0, 1], gamma = -log SNR.

    d_alpha = -alpha sigma^2 gamma' / 2, d_sigma = sigma alpha^2 gamma' / 2 (gamma' by forward-mode autodiff of
    `gamma_fn`, which must act elementwise on t [B]). Levels: N uniform steps in t from 1 to 0, where t = 0
    stands for the data (alpha 1, sigma 0), as `vdm.discrete_schedule`'s last step. Training t: uniform.
    """

    gamma_fn: Callable  # t [B] -> gamma [B]; a Partial (its parameters are this pytree's leaves)
    t_max = 1.0

    def alpha(self, t):
        return alpha_sigma(self.gamma_fn(t))[0]

    def sigma(self, t):
        return alpha_sigma(self.gamma_fn(t))[1]

    def log_snr_half(self, t):
        return -0.5 * self.gamma_fn(t)

    def _gamma_and_slope(self, t):
        return jax.jvp(self.gamma_fn, (t,), (jnp.ones_like(t),))

    def d_alpha(self, t):
        gamma, slope = self._gamma_and_slope(t)
        alpha, sigma = alpha_sigma(gamma)
        return -0.5 * alpha * sigma**2 * slope

    def d_sigma(self, t):
        gamma, slope = self._gamma_and_slope(t)
        alpha, sigma = alpha_sigma(gamma)
        return 0.5 * sigma * alpha**2 * slope

    def levels(self, num_steps: int) -> np.ndarray:
        """t_k = 1 - k / N, k = 0 .. N: float32 [N + 1]; t = 0 is taken as the data."""
        return _uniform_levels(num_steps)

    def sample_t(self, key, shape):
        return jax.random.uniform(key, shape, jnp.float32)


def rectified_flow(t_distribution: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0) -> RectifiedFlow:
    """x_t = (1 - t) x_0 + t eps, t in [0, 1]; training t "uniform" or "logit_normal" (SD3's m = 0, s = 1)."""
    check_choice("t_distribution", t_distribution, T_DISTRIBUTIONS)
    check_number("logit_mean", logit_mean)
    check_number("logit_std", logit_std, 0.0, low_open=True)
    return RectifiedFlow(t_distribution=t_distribution, logit_mean=float(logit_mean), logit_std=float(logit_std))


def edm(sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 0.5, rho: float = KARRAS_RHO,
        P_mean: float = -1.2, P_std: float = 1.2) -> EDM:
    """x = x_0 + sigma eps with Karras et al.'s defaults (table 1): sigma in [0.002, 80], sigma_data 0.5, rho 7,
    ln sigma ~ N(-1.2, 1.2^2) in training."""
    for name, value in dict(sigma_min=sigma_min, sigma_data=sigma_data, rho=rho, P_std=P_std).items():
        check_number(name, value, 0.0, low_open=True)
    check_number("sigma_max", sigma_max, sigma_min, low_open=True)
    check_number("P_mean", P_mean)
    return EDM(sigma_min=float(sigma_min), sigma_max=float(sigma_max), sigma_data=float(sigma_data),
               rho=float(rho), P_mean=float(P_mean), P_std=float(P_std))


def vdm(gamma_fn: Callable) -> VDM:
    """VDM's continuous VP process of `gamma_fn` (e.g. `vdm.linear_gamma()`, `vdm.bind_gamma(model, params)`)."""
    return VDM(gamma_fn=functional.as_pytree(gamma_fn))


def is_process(proc) -> bool:
    """True for a continuous `Process`; False for a `schedules.Schedule` (the discrete VP process)."""
    return isinstance(proc, Process)


# ---------------------------------------------------------------- the levels a solver reads


def check_times(proc: Process, times) -> np.ndarray:
    """`times` as float32 numpy [N + 1] if they are concrete, strictly decreasing, in [0, t_max] and end at the
    clean end 0 (as `proc.levels(N)` gives); else ValueError."""
    if isinstance(times, jax.core.Tracer):
        raise ValueError("the levels (timesteps) must be concrete (they are static): compute them outside jit.")
    ts = np.asarray(times, np.float64)
    if ts.ndim != 1 or ts.size < 2 or not np.all(np.isfinite(ts)):
        raise ValueError("a process's timesteps must be a 1-D float sequence of N + 1 >= 2 levels, noisiest first "
                         f"and ending at the clean end 0 (e.g. proc.levels(N)); got shape {ts.shape}.")
    if ts[-1] != 0 or ts.min() < 0 or ts[0] > proc.t_max or np.any(np.diff(ts) >= 0):
        raise ValueError(f"a process's timesteps must decrease strictly from at most t_max = {proc.t_max:g} to "
                         f"exactly 0 (the clean end); got {ts.tolist()}.")
    return ts.astype(np.float32)


def solver_levels(proc: Process, times) -> Levels:
    """The `schedules.Levels` the solvers read, at times [N + 1] (noisiest first; the last, t = 0, the clean end).

    alpha, sigma at each visited level, lambda = log(alpha / sigma) (-inf where alpha = 0: rectified flow at
    t = 1), sigma_ve = sigma / alpha (+inf there); the last entry is the data: alpha 1, sigma 0, lambda +inf,
    sigma_ve 0 (exact for rectified flow and EDM at t = 0; VDM's t = 0 is taken as the data). t float32 [N + 1].
    Works under jit (a VDM's gamma may be traced).
    """
    t = jnp.asarray(times, jnp.float32)
    visited = t[:-1]
    alpha, sigma = proc.alpha(visited), proc.sigma(visited)

    def with_end(values, end):
        return jnp.concatenate([values.astype(jnp.float32), jnp.full((1,), end, jnp.float32)])

    return Levels(t=t, alpha=with_end(alpha, 1.0), sigma=with_end(sigma, 0.0),
                  lambda_=with_end(proc.log_snr_half(visited), jnp.inf), sigma_ve=with_end(sigma / alpha, 0.0))


# ---------------------------------------------------------------- parametrizations


def _at(values, x):
    """values [B] shaped [B, 1, ..., 1] to broadcast against x [B, ...]."""
    return values.reshape(values.shape + (1,) * (x.ndim - values.ndim))


def check_prediction(proc: Process, prediction: str, t=None) -> None:
    """Raise ValueError for an unknown prediction, or for "eps" where alpha(t) = 0 at a concrete t (x_0 =
    (x - sigma eps) / alpha does not exist there: rectified flow at t = 1)."""
    check_choice("prediction", prediction, PREDICTIONS)
    if prediction != "eps" or t is None or isinstance(t, jax.core.Tracer):
        return
    if np.any(np.asarray(proc.alpha(jnp.asarray(t, jnp.float32))) == 0):
        raise ValueError(
            f"prediction 'eps' cannot give x_0 where alpha(t) = 0 ({type(proc).__name__} at t = {proc.t_max:g}: "
            "x_t is pure noise, and x_0 = (x_t - sigma eps) / alpha divides by 0). Use prediction 'velocity', "
            "'v' or 'x0', or start sampling below that level (timesteps)."
        )


def prediction_target(proc: Process, x0, noise, t, prediction: str):
    """What a model of this parametrization is trained to output at x_t = alpha x_0 + sigma noise: eps, x_0,
    v = alpha eps - sigma x_0, or the velocity alpha' x_0 + sigma' eps. x0, noise [B, ...], t [B]."""
    check_choice("prediction", prediction, PREDICTIONS)
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        return _at(proc.alpha(t), x0) * noise - _at(proc.sigma(t), x0) * x0
    return _at(proc.d_alpha(t), x0) * x0 + _at(proc.d_sigma(t), x0) * noise


def x0_and_eps(proc: Process, prediction_output, x_t, t, prediction: str, clip_denoised: bool = False):
    """(pred_x0, pred_eps) [B, ...] from a model's prediction at x_t [B, ...], t [B] (module docstring's
    formulas); with clipping, x_0 is clipped to [-1, 1] and eps recomputed from it as (x_t - alpha x_0) / sigma.

    "eps" where alpha(t) = 0 raises ValueError for a concrete t (`check_prediction`); under jit it gives inf/nan.
    """
    check_prediction(proc, prediction, t)
    alpha, sigma = _at(proc.alpha(t), x_t), _at(proc.sigma(t), x_t)
    out = prediction_output
    if prediction == "eps":
        x0, eps = (x_t - sigma * out) / alpha, out
    elif prediction == "x0":
        x0, eps = out, None
    elif prediction == "v":
        norm = alpha**2 + sigma**2
        x0, eps = (alpha * x_t - sigma * out) / norm, (sigma * x_t + alpha * out) / norm
    else:
        d_alpha, d_sigma = _at(proc.d_alpha(t), x_t), _at(proc.d_sigma(t), x_t)
        det = alpha * d_sigma - sigma * d_alpha
        x0, eps = (d_sigma * x_t - sigma * out) / det, (alpha * out - d_alpha * x_t) / det
    if clip_denoised:
        x0 = jnp.clip(x0, -1.0, 1.0)
    if clip_denoised or eps is None:
        eps = (x_t - alpha * x0) / sigma
    return x0, eps


def velocity(proc: Process, x0, eps, t):
    """The probability-flow ODE's dx_t/dt = alpha'(t) x_0 + sigma'(t) eps at denoised x0, eps [B, ...], t [B]."""
    return _at(proc.d_alpha(t), x0) * x0 + _at(proc.d_sigma(t), x0) * eps


# ---------------------------------------------------------------- EDM's preconditioning and loss weight


def edm_c_skip(sigma, sigma_data):
    """c_skip = sigma_data^2 / (sigma^2 + sigma_data^2) (EDM table 1)."""
    return sigma_data**2 / (sigma**2 + sigma_data**2)


def edm_c_out(sigma, sigma_data):
    """c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2) (EDM table 1)."""
    return sigma * sigma_data / jnp.sqrt(sigma**2 + sigma_data**2)


def edm_c_in(sigma, sigma_data):
    """c_in = 1 / sqrt(sigma^2 + sigma_data^2) (EDM table 1)."""
    return 1.0 / jnp.sqrt(sigma**2 + sigma_data**2)


def edm_c_noise(sigma):
    """c_noise = ln(sigma) / 4 (EDM table 1)."""
    return 0.25 * jnp.log(sigma)


def edm_loss_weight(sigma, sigma_data):
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2 (EDM table 1, eq. 8)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _preconditioned(raw_fn, sigma_data, x, sigma):
    s = _at(sigma, x)
    raw = raw_fn(_at(edm_c_in(sigma, sigma_data), x) * x, edm_c_noise(sigma))
    return edm_c_skip(s, sigma_data) * x + edm_c_out(s, sigma_data) * raw


def edm_precondition(raw_fn: Callable, sigma_data: float = 0.5) -> Partial:
    """model_fn(x [B, ...], sigma [B]) = c_skip x + c_out raw_fn(c_in x, c_noise) (EDM eq. 7, table 1; EDM's
    training/networks.py EDMPrecond): an x_0 model (prediction "x0") of the network raw_fn(x, c_noise [B])."""
    return Partial(_preconditioned, functional.as_pytree(raw_fn), jnp.float32(sigma_data))
