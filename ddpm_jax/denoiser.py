"""The one denoiser every sampler calls: D(x_t, t) -> Denoised(x0, eps, output), built once from (model_fn, process,
prediction, clip_denoised).

    D = denoiser.denoiser(model_fn, sched, prediction="v", clip_denoised=True)   # a Schedule or a `processes.Process`
    d = D(x_t, t)             # d.x0, d.eps [B, ...]: the model's data and noise predictions; d.output: its raw output

On a `Schedule` (the discrete VP process) t is int32 [B] and the conversion is `diffusion.x0_and_eps`; on a
continuous process t is float32 [B] and it is `processes.x0_and_eps` (which adds the "velocity" parametrization).
A model output of 2C channels (a learned variance) gives its first C to the conversion; `output` keeps all 2C (the
ancestral step reads the variance half). With `clip_denoised`, x0 is clipped to [-1, 1] and eps recomputed from it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp

from ddpm_jax import diffusion, processes
from ddpm_jax.validation import check_choice


class Denoised(NamedTuple):
    """What the model says about x_t: x0 and eps [B, ...] (x_t = alpha x0 + sigma eps), and its raw output."""

    x0: jnp.ndarray
    eps: jnp.ndarray
    output: jnp.ndarray


def check_prediction(process, prediction: str) -> None:
    """ValueError unless `prediction` is one the process accepts: `diffusion.PREDICTIONS` on a Schedule,
    `processes.PREDICTIONS` (with "velocity") on a continuous process."""
    if processes.is_process(process):
        processes.check_prediction(process, prediction)
    else:
        check_choice("prediction", prediction, diffusion.PREDICTIONS)


def denoiser(model_fn: Callable, process, prediction: str = "eps", clip_denoised: bool = False) -> Callable:
    """D(x_t [B, ...], t [B]) -> `Denoised`: model_fn(x_t, t) read as a `prediction` ("eps", "x0", "v", and on a
    continuous process "velocity") of `process` (a `schedules.Schedule` or a `processes.Process`)."""
    check_prediction(process, prediction)
    convert = processes.x0_and_eps if processes.is_process(process) else diffusion.x0_and_eps

    def denoise(x_t, t) -> Denoised:
        output = model_fn(x_t, t)
        x0, eps = convert(process, diffusion.prediction_channels(output, x_t), x_t, t, prediction, clip_denoised)
        return Denoised(x0, eps, output)

    return denoise
