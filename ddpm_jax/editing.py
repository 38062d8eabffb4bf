"""Editing images with a trained model: img2img (SDEdit) and inpainting, over any sampler of `sampling.sample`.

    x = editing.img2img(model_fn, sched, rng, images, strength=0.5, sampler="dpm++2m", num_steps=20)
    x = editing.inpaint(model_fn, sched, rng, images, mask, sampler="ddim", num_steps=50)   # mask 1 = generate
    x = editing.inpaint(model_fn, sched, rng, images, mask, sampler="ddim", num_steps=250, resample=10)  # RePaint

Images are [B, H, W, C] float32 in [-1, 1]; per-sample randomness comes from fold_in(rng, first_index + i), as in
`sampling`.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from ddpm_jax import diffusion, sampling
from ddpm_jax.keys import example_keys
from ddpm_jax.reverse_loop import check_known, per_sample_normal
from ddpm_jax.schedules import Schedule


def _check_images(images) -> jnp.ndarray:
    images = jnp.asarray(images, jnp.float32)
    if images.ndim < 2:
        raise ValueError(f"images must be a batch [B, ...] (e.g. [B, H, W, C]) in [-1, 1], got shape {images.shape}.")
    return images


def img2img(
    model_fn: Callable,
    sched: Schedule,
    rng,
    images,
    *,
    strength: float,
    sampler: str = sampling.DEFAULT_SAMPLER,
    num_steps: int | None = None,
    spacing: str | None = None,
    first_index: int = 0,
    **sample_options,
):
    """SDEdit (Meng et al. 2022): noise `images` part of the way to T and denoise them with `sampler` from there.

    The sampler's timesteps (`sampling.sampler_timesteps(sched, sampler, num_steps, spacing)`, N of them) are cut
    to their last max(1, int(N * strength)), as diffusers' img2img pipelines do; the images are noised to the
    first kept timestep with q_sample (Ho eq. 4), the noise of sample i drawn where its x_T would be, and the
    sampler runs from there. strength in (0, 1]: 1 starts from (almost) pure noise, small values stay close to
    the input. Other keywords go to `sampling.sample` (prediction, clip_denoised, eta, variance, ...).
    Returns the edited images [B, ...].
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1] (the fraction of the noise levels to go back), got {strength}.")
    images = _check_images(images)
    timesteps = sampling.sampler_timesteps(sched, sampler, num_steps, spacing)
    kept = timesteps[len(timesteps) - max(1, int(len(timesteps) * strength)):]
    keys = example_keys(rng, images.shape[0], first_index)
    noise = per_sample_normal(keys, sched.num_timesteps, images.shape)
    t = jnp.full((images.shape[0],), kept[0], jnp.int32)
    x_start = diffusion.q_sample(sched, images, t, noise)
    return sampling.sample(model_fn, sched, rng, images.shape, sampler=sampler, timesteps=kept, x_T=x_start,
                           first_index=first_index, **sample_options)


def inpaint(
    model_fn: Callable,
    sched: Schedule,
    rng,
    images,
    mask,
    *,
    sampler: str = sampling.DEFAULT_SAMPLER,
    num_steps: int | None = None,
    spacing: str | None = None,
    resample: int = 1,
    eta: float | None = None,
    first_index: int = 0,
    **sample_options,
):
    """Fill the pixels where mask = 1, keeping the others: after every step of the sampler the known pixels are
    replaced by the input noised to the step's new level (Lugmayr et al. 2022, "RePaint", eq. 8), so the last step
    returns them exactly.

    images: [B, H, W, C] in [-1, 1] (the values under mask = 1 are ignored). mask: 1 = generate, 0 = keep, any
    shape broadcastable to the images ([B, H, W, 1], [H, W, 1], ...), values in [0, 1].
    resample: RePaint's U: each step is taken U times, the result re-noised back to the step's start level
    (q(x_t | x_{t'}), eq. 9) between the tries, so the generated pixels harmonize with the known ones (U = 1: no
    resampling). Resampling runs DDIM steps ("ddim", or "ancestral" as DDIM over all T steps with eta 1, i.e.
    ancestral steps with the posterior variance); eta defaults to 1 then. Other keywords go to `sampling.sample`.
    Returns the inpainted images [B, H, W, C].
    """
    images = _check_images(images)
    known = check_known((images, mask), images.shape)
    sampling.check_resample(resample)
    if resample != 1:
        if sampler not in ("ddim", "ancestral"):
            raise ValueError(f"resampling (resample={resample}) needs a one-step stochastic sampler: 'ddim' or "
                             f"'ancestral'; got {sampler!r}.")
        sample_options.update(timesteps=sampling.sampler_timesteps(sched, sampler, num_steps, spacing),
                              eta=1.0 if eta is None else eta)
        sample_options.pop("variance", None)  # the steps are DDIM's: eta sets their variance
        sampler, num_steps, spacing, eta = "ddim", None, None, None
    if eta is not None:
        sample_options["eta"] = eta
    return sampling.sample(model_fn, sched, rng, images.shape, sampler=sampler, num_steps=num_steps,
                           spacing=spacing, first_index=first_index, known=known, resample=resample,
                           **sample_options)
