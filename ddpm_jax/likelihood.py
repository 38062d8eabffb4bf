"""The likelihood of a dataset: the full VLB in bits/dim of every image of a split, sharded over all devices.

    out = likelihood.bits_per_dim_dataset(model_fn, sched, images_uint8, rng, max_value=255)  # bpd [N], stderr, ...
    out = likelihood.vdm_bits_per_dim_dataset(vdm.bind_eps(model, params), vdm.bind_gamma(model, params),
                                              images_uint8, rng, max_value=255)               # a VDM's
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from ddpm_jax import data, diffusion, functional, parallel, sampling, vdm
from ddpm_jax.validation import check_choice


@functools.lru_cache(maxsize=16)
def _mapped_bpd(prediction: str, variance: str, clip_denoised: bool, exact_cdf: bool, layout, has_labels: bool):
    """One device's batch -> (total, prior, decoder, mean square of the one-sample diffusion estimate) [b];
    example i's noise from fold_in(rng, index_i)."""

    def one(model_fn, sched, rng, x, index, y):
        if y is not None:
            model_fn = Partial(sampling.with_labels, model_fn, y[None])
        terms = diffusion.bits_per_dim_terms(
            model_fn, sched, x[None], jax.random.fold_in(rng, index),
            prediction=prediction, variance=variance, clip_denoised=clip_denoised, exact_cdf=exact_cdf,
        )
        vb = terms["vb_bpd"][0]
        square = jnp.mean(jnp.square((vb.shape[0] - 1) * vb[1:]))  # (T - 1) L_t, t uniform in 1 .. T - 1
        return terms["total_bpd"][0], terms["prior_bpd"][0], vb[0], square

    def per_device(model_fn, sched, rng, x, index, y):
        return jax.vmap(one, in_axes=(None, None, None, 0, 0, 0 if has_labels else None))(
            model_fn, sched, rng, x, index, y)

    return layout.map(per_device, (layout.placed_axis, None, None, 0, 0, 0 if has_labels else None))


def bits_per_dim_dataset(
    model_fn: Callable,
    sched,
    images: np.ndarray,
    rng,
    *,
    max_value: int = 255,
    labels: np.ndarray | None = None,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip_denoised: bool = True,
    exact_cdf: bool = True,
    per_device_batch: int = 64,
    devices: Sequence | None = None,
    layout: parallel.Pmap | parallel.Sharded | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """The full VLB in bits/dim (Ho et al. eq. 5) of every image of a dataset split, compiled once, sharded over
    all devices (of all processes; `parallel.map_sharded`).

    Args:
      model_fn: model_fn(x_t, t) (or model_fn(x_t, t, y) with `labels`), best a `functional.bind(model.apply,
        params)` Partial: its params are replicated once and the pmapped function compiles once.
      images: uint8 [N, H, W, C] in 0..max_value, mapped to [-1, 1] by `data.to_float`.
      rng: base key. Example i (its index in `images`) draws all its noise from fold_in(rng, i), exactly as
        `diffusion.bits_per_dim(model_fn, sched, images_float[i:i+1], fold_in(rng, i))`: the result does not
        depend on the number of devices or the batch size.
      labels: int [N] class labels for a conditional model_fn(x_t, t, y), or None.
      exact_cdf: the decoder term's discretized likelihood: the stable form (True), or the reference code's tanh
        form (False; see `diffusion.discretized_gaussian_log_likelihood`).
      per_device_batch: at most this many images per device per call (fewer when N is small); rounds of
        per-device batch * devices images, the last padded (by repeating images) and the padding dropped.
      devices: a subset of this process's devices (single process only); default all.
      layout: instead of devices, a `parallel.Pmap` or a `parallel.Sharded` (jit over its mesh, the params split
        along FSDP as in training; the same results up to float reduction order).
      progress: progress(done, total) after each round.

    Returns:
      dict(bpd [N] float64, prior_bpd [N], decoder_bpd [N] (the L_0 term), mean, stderr (std(ddof=1) /
      sqrt(N); nan for N = 1), prior_mean, decoder_mean, num_examples, diffusion_var: the variance over images,
      t uniform in 1 .. T - 1 and the noise of the one-sample estimate (T - 1) L_t of the diffusion terms
      (the VLB less prior and decoder), bits/dim squared).
    """
    check_choice("prediction", prediction, diffusion.PREDICTIONS)
    check_choice("variance", variance, diffusion.VARIANCES)
    images, labels = _check_dataset(images, labels, per_device_batch)
    layout = parallel.layout_of(devices, layout)
    fn = _mapped_bpd(prediction, variance, bool(clip_denoised), bool(exact_cdf), layout, labels is not None)
    placed = layout.put_state(functional.as_pytree(model_fn))  # replicated (pmap) or split along FSDP, once
    return _dataset_bpd(lambda *args: fn(placed, sched, *args), images, rng, max_value, labels,
                        per_device_batch, layout, progress)


@functools.lru_cache(maxsize=16)
def _mapped_vdm_bpd(num_steps: int, num_times: int, layout, has_labels: bool):
    """One device's batch -> (total, prior, reconstruction, mean square of the one-sample diffusion estimates)."""

    def one(eps_fn, gamma_fn, rng, x, index, y):
        if y is not None:
            eps_fn = Partial(sampling.with_labels, eps_fn, y[None])
        terms = vdm.bits_per_dim_terms(eps_fn, gamma_fn, x[None], jax.random.fold_in(rng, index),
                                       num_steps=num_steps, num_times=num_times)
        square = jnp.mean(jnp.square(terms["diffusion_bpd"][0]))
        return terms["total_bpd"][0], terms["prior_bpd"][0], terms["reconstruction_bpd"][0], square

    def per_device(eps_fn, gamma_fn, rng, x, index, y):
        return jax.vmap(one, in_axes=(None, None, None, 0, 0, 0 if has_labels else None))(
            eps_fn, gamma_fn, rng, x, index, y)

    placed = layout.placed_axis
    return layout.map(per_device, (placed, placed, None, 0, 0, 0 if has_labels else None))


def vdm_bits_per_dim_dataset(
    eps_fn: Callable,
    gamma_fn: Callable,
    images: np.ndarray,
    rng,
    *,
    max_value: int = 255,
    labels: np.ndarray | None = None,
    num_steps: int = 0,
    num_times: int = 1000,
    per_device_batch: int = 64,
    devices: Sequence | None = None,
    layout: parallel.Pmap | parallel.Sharded | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """A VDM's VLB in bits/dim (`vdm.bits_per_dim_terms`: prior + reconstruction + the continuous L_inf, or L_T
    with num_steps = T, at num_times stratified times) of every image of a split, sharded as
    `bits_per_dim_dataset` (example i's randomness from fold_in(rng, i), whatever the devices and batch).

    eps_fn, gamma_fn: `vdm.bind_eps(model, params)`, `vdm.bind_gamma(model, params)` (eps_fn(z, gamma, y) with
    `labels`); `devices` or `layout` as in `bits_per_dim_dataset`. The schedule is checked to increase before
    anything compiles. Returns the dict of `bits_per_dim_dataset`, decoder_bpd being the reconstruction term
    -log p(x | z_0) and diffusion_var the variance over images, t ~ U[0, 1] and the noise of the one-sample
    diffusion-loss estimate (bits/dim squared).
    """
    vdm.check_gamma(gamma_fn)
    images, labels = _check_dataset(images, labels, per_device_batch)
    layout = parallel.layout_of(devices, layout)
    fn = _mapped_vdm_bpd(int(num_steps), int(num_times), layout, labels is not None)
    eps_placed, gamma_placed = layout.put_state((functional.as_pytree(eps_fn), functional.as_pytree(gamma_fn)))
    return _dataset_bpd(lambda *args: fn(eps_placed, gamma_placed, *args), images, rng, max_value, labels,
                        per_device_batch, layout, progress)


def _check_dataset(images, labels, per_device_batch):
    """(images uint8 [N, H, W, C], labels int32 [N] or None), or ValueError."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty uint8 [N, H, W, C] array, got shape {images.shape}.")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 in 0..max_value (mapped by data.to_float), got {images.dtype}.")
    if per_device_batch < 1:
        raise ValueError(f"per_device_batch must be a positive integer, got {per_device_batch}.")
    if labels is not None:
        labels = np.asarray(labels, np.int32)
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({images.shape[0]},) (one per image), got {labels.shape}.")
    return images, labels


def _dataset_bpd(fn, images, rng, max_value, labels, per_device_batch, layout, progress) -> dict:
    """Run fn(rng, x, index, y) -> (total, prior, decoder, diffusion square) over all images; the summary dict."""
    n = images.shape[0]

    def round_fn(index):  # index [local devices, per_device]; the padding (index >= n) repeats images
        take = index % n
        y = None if labels is None else labels[take]
        return fn(rng, data.to_float(images[take], max_value), index, y)

    bpd, prior, decoder, square = (np.asarray(v, np.float64) for v in parallel.map_sharded(
        round_fn, n, per_device_batch=per_device_batch, layout=layout, progress=progress))
    stderr = float(np.std(bpd, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    diffusion = bpd - prior - decoder
    return dict(bpd=bpd, prior_bpd=prior, decoder_bpd=decoder, mean=float(bpd.mean()), stderr=stderr,
                prior_mean=float(prior.mean()), decoder_mean=float(decoder.mean()), num_examples=n,
                diffusion_var=float(square.mean() - diffusion.mean() ** 2))
