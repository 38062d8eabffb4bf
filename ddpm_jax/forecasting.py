"""Probabilistic forecasting with a diffusion model of series windows, and the scores of a forecast.

Conditioning on the past by inpainting: the model is the unconditional one trained on whole windows of
`context + horizon` steps (`ddpm_jax.series`); a forecast keeps the context and generates the horizon, with any
sampler of `sampling.sample`, the known steps replaced after every step by the context noised to the new level
(`editing.inpaint`; RePaint's resampling with resample > 1). Every sample of every window is one row of the batch.

    samples = forecasting.forecast(model_fn, sched, rng, context, horizon=12, num_samples=100, sampler="ddim")
    report = forecasting.evaluate(context, target, samples, period=12)   # diffusion vs naive, seasonal naive, ETS
    print(forecasting.format_table(report))

Scores, averaged over windows, horizon steps and variables (`scores`):
* CRPS (continuous ranked probability score) of the empirical distribution of the S samples at the target y:
  E|X - y| - E|X - X'| / 2 (Gneiting & Raftery 2007, eq. 21), computed exactly from the sorted samples;
  in the data's units, lower is better; for a point forecast it is the absolute error.
* MAE of the median of the samples.
* coverage of the central 50% and 90% intervals (the 25-75% and 5-95% sample quantiles): the fraction of
  targets inside; a calibrated forecast covers 0.5 and 0.9.

Baselines on the same windows, from the context alone (as the diffusion model): naive (the last value),
seasonal naive (the value one period earlier), each with Gaussian errors whose spread is the method's own
in-context error (root mean square of the one-step or one-period differences), growing as sqrt(h) with the
number h of steps (periods) ahead; and ETS (statsmodels' ETSModel: additive errors, damped additive trend,
additive season), fitted to each context and simulated.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
from scipy import special

from ddpm_jax import editing
from ddpm_jax.schedules import Schedule

METHODS = ("diffusion", "naive", "seasonal naive", "ETS")
INTERVALS = (0.5, 0.9)


def forecast(model_fn: Callable, sched: Schedule, rng, context, *, horizon: int, num_samples: int,
             batch_size: int = 4096, **inpaint_options) -> np.ndarray:
    """`num_samples` futures of each context: context [N, L, C] (scaled as the training windows) ->
    samples float32 [N, S, horizon, C], in the same scaled units.

    Row n * S + s of the batch is sample s of window n (its randomness fold_in(rng, n * S + s)); rows are drawn
    `batch_size` at a time (the last batch padded, so one compiled sampler serves all). `inpaint_options` go to
    `editing.inpaint` (sampler, num_steps, spacing, eta, resample, prediction, clip_denoised, variance).
    """
    context = np.asarray(context, np.float32)
    if context.ndim != 3:
        raise ValueError(f"context must be [N, L, C] (N windows of L steps of C variables), got shape {context.shape}")
    for name, value in (("horizon", horizon), ("num_samples", num_samples), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    n, length, channels = context.shape
    rows = n * num_samples
    windows = np.zeros((rows, length + horizon, channels), np.float32)
    windows[:, :length] = np.repeat(context, num_samples, axis=0)
    mask = np.zeros((1, length + horizon, 1), np.float32)
    mask[:, length:] = 1.0  # 1 = generate: the horizon
    batch = min(batch_size, rows)
    out = []
    for first in range(0, rows, batch):
        images = windows[first:first + batch]
        images = np.concatenate([images, np.zeros((batch - len(images),) + images.shape[1:], np.float32)])
        x = editing.inpaint(model_fn, sched, rng, images, mask, first_index=first, **inpaint_options)
        out.append(np.asarray(x)[:min(batch, rows - first), length:])
    return np.concatenate(out).reshape(n, num_samples, horizon, channels)


# ---------------------------------------------------------------- scores


def crps(samples, y, axis: int = 1) -> np.ndarray:
    """CRPS of the empirical distribution of `samples` (along `axis`) at y (the samples' shape without `axis`):
    E|X - y| - E|X - X'| / 2, with E|X - X'| = 2 / S^2 sum_i (2i - S - 1) x_(i) over the sorted samples."""
    x = np.sort(np.moveaxis(np.asarray(samples, np.float64), axis, -1), axis=-1)
    y = np.asarray(y, np.float64)
    s = x.shape[-1]
    spread = 2.0 / s**2 * np.sum((2 * np.arange(1, s + 1) - s - 1) * x, axis=-1)
    return np.mean(np.abs(x - y[..., None]), axis=-1) - 0.5 * spread


def crps_gaussian(mu, sigma, y) -> np.ndarray:
    """CRPS of N(mu, sigma^2) at y, in closed form: sigma (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)),
    z = (y - mu) / sigma (Gneiting et al. 2005, eq. 5)."""
    mu, sigma, y = (np.asarray(a, np.float64) for a in (mu, sigma, y))
    z = (y - mu) / sigma
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return sigma * (z * (2 * special.ndtr(z) - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


def scores(samples, target) -> dict[str, float]:
    """samples [N, S, H, C], target [N, H, C] -> dict(crps, mae (of the median), coverage_50, coverage_90)."""
    samples, target = np.asarray(samples, np.float64), np.asarray(target, np.float64)
    if samples.ndim != 4 or samples.shape[:1] + samples.shape[2:] != target.shape:
        raise ValueError(f"samples must be [N, S, H, C] and target [N, H, C]; got {samples.shape} and {target.shape}")
    out = dict(crps=float(np.mean(crps(samples, target))),
               mae=float(np.mean(np.abs(np.median(samples, axis=1) - target))))
    for level in INTERVALS:
        low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=1)
        out[f"coverage_{round(100 * level)}"] = float(np.mean((low <= target) & (target <= high)))
    return out


# ---------------------------------------------------------------- baselines


def gaussian_samples(mu, sigma, num_samples: int) -> np.ndarray:
    """`num_samples` quantiles of N(mu, sigma^2), at levels (i + 1/2) / S: mu, sigma [N, H, C] -> [N, S, H, C].
    Their CRPS, median and intervals are those of the Gaussian up to O(1/S)."""
    levels = special.ndtri((np.arange(num_samples) + 0.5) / num_samples)
    return np.asarray(mu)[:, None] + np.asarray(sigma)[:, None] * levels[None, :, None, None]


def naive(context, horizon: int, num_samples: int) -> np.ndarray:
    """The last value, with N(0, h s^2) errors h steps ahead, s^2 the mean square one-step change in the context:
    context [N, L, C] -> samples [N, S, horizon, C]."""
    context = np.asarray(context, np.float64)
    last = np.repeat(context[:, -1:], horizon, axis=1)
    s = np.sqrt(np.mean(np.square(np.diff(context, axis=1)), axis=1, keepdims=True))
    return gaussian_samples(last, s * np.sqrt(np.arange(1, horizon + 1))[None, :, None], num_samples)


def seasonal_naive(context, horizon: int, num_samples: int, period: int) -> np.ndarray:
    """The value one period earlier (h steps ahead: step L - period + (h - 1) mod period of the context), with
    N(0, k s^2) errors in the k-th period ahead, s^2 the mean square one-period change in the context."""
    context = np.asarray(context, np.float64)
    length = context.shape[1]
    if not 0 < period < length:
        raise ValueError(f"the seasonal-naive forecast needs a period in [1, {length - 1}] (the context length "
                         f"{length} less one), got {period}")
    h = np.arange(horizon)
    mean = context[:, length - period + h % period]
    s = np.sqrt(np.mean(np.square(context[:, period:] - context[:, :-period]), axis=1, keepdims=True))
    return gaussian_samples(mean, s * np.sqrt(h // period + 1)[None, :, None], num_samples)


def ets(context, horizon: int, num_samples: int, period: int, seed: int = 0) -> np.ndarray:
    """ETS (statsmodels' ETSModel: additive error, damped additive trend, additive season of `period` when the
    context holds two periods, else none) fitted to each context and variable by maximum likelihood; samples are
    simulated paths: context [N, L, C] -> [N, S, horizon, C]."""
    from statsmodels.tools.sm_exceptions import ConvergenceWarning
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    context = np.asarray(context, np.float64)
    n, length, channels = context.shape
    seasonal = period > 1 and length >= 2 * period
    out = np.empty((n, num_samples, horizon, channels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        for i in range(n):
            for c in range(channels):
                model = ETSModel(context[i, :, c], error="add", trend="add", damped_trend=True,
                                 seasonal="add" if seasonal else None, seasonal_periods=period if seasonal else None)
                fit = model.fit(disp=False)
                paths = fit.simulate(horizon, repetitions=num_samples, anchor="end",
                                     rng=np.random.default_rng([seed, i, c]))
                out[i, :, :, c] = np.asarray(paths).reshape(horizon, num_samples).T
    return out


def evaluate(context, target, samples, period: int = 0, *, classical: bool = True, seed: int = 0) -> dict:
    """Scores of the diffusion forecast `samples` [N, S, H, C] and of the baselines on the same windows (context
    [N, L, C], target [N, H, C], data units): {method: scores} for METHODS (seasonal naive with period > 0 only,
    ETS with `classical`)."""
    samples = np.asarray(samples)
    horizon, num = samples.shape[2], samples.shape[1]
    forecasts = {"diffusion": samples, "naive": naive(context, horizon, num)}
    if period:
        forecasts["seasonal naive"] = seasonal_naive(context, horizon, num, period)
    if classical:
        forecasts["ETS"] = ets(context, horizon, num, period, seed)
    return {name: scores(s, target) for name, s in forecasts.items()}


def format_table(report: dict) -> str:
    """The report of `evaluate` as a Markdown table."""
    lines = ["| method | CRPS | MAE (median) | 50% coverage | 90% coverage |", "|---|---|---|---|---|"]
    for name, s in report.items():
        lines.append(f"| {name} | {s['crps']:.3f} | {s['mae']:.3f} | {s['coverage_50']:.2f} | "
                     f"{s['coverage_90']:.2f} |")
    return "\n".join(lines)


__all__ = ["forecast", "crps", "crps_gaussian", "scores", "gaussian_samples", "naive", "seasonal_naive", "ets",
           "evaluate", "format_table"]
