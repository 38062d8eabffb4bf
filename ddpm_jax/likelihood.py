"""The likelihood of a dataset: the full VLB in bits/dim of every image of a split, sharded over all devices.

    out = likelihood.bits_per_dim_dataset(model_fn, sched, images_uint8, rng, max_value=255)  # bpd [N], stderr, ...
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import numpy as np
from jax.tree_util import Partial

from ddpm_jax import data, diffusion, functional, parallel, sampling
from ddpm_jax.validation import check_choice


@functools.lru_cache(maxsize=16)
def _pmapped_bpd(prediction: str, variance: str, clip_denoised: bool, devices: tuple | None, has_labels: bool):
    """One device's batch -> (total, prior, decoder) bpd [b]; example i's noise from fold_in(rng, index_i)."""

    def one(model_fn, sched, rng, x, index, y):
        if y is not None:
            model_fn = Partial(sampling.with_labels, model_fn, y[None])
        terms = diffusion.bits_per_dim_terms(
            model_fn, sched, x[None], jax.random.fold_in(rng, index),
            prediction=prediction, variance=variance, clip_denoised=clip_denoised,
        )
        return terms["total_bpd"][0], terms["prior_bpd"][0], terms["vb_bpd"][0, 0]

    def per_device(model_fn, sched, rng, x, index, y):
        return jax.vmap(one, in_axes=(None, None, None, 0, 0, 0 if has_labels else None))(
            model_fn, sched, rng, x, index, y)

    return parallel.pmap(per_device, in_axes=(0, None, None, 0, 0, 0 if has_labels else None), devices=devices)


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
    per_device_batch: int = 64,
    devices: Sequence | None = None,
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
      per_device_batch: at most this many images per device per call (fewer when N is small); rounds of
        per-device batch * devices images, the last padded (by repeating images) and the padding dropped.
      devices: a subset of this process's devices (single process only); default all.
      progress: progress(done, total) after each round.

    Returns:
      dict(bpd [N] float64, prior_bpd [N], decoder_bpd [N] (the L_0 term), mean, stderr (std(ddof=1) /
      sqrt(N); nan for N = 1), prior_mean, decoder_mean, num_examples).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty uint8 [N, H, W, C] array, got shape {images.shape}.")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 in 0..max_value (mapped by data.to_float), got {images.dtype}.")
    if per_device_batch < 1:
        raise ValueError(f"per_device_batch must be a positive integer, got {per_device_batch}.")
    check_choice("prediction", prediction, diffusion.PREDICTIONS)
    check_choice("variance", variance, diffusion.VARIANCES)
    n = images.shape[0]
    if labels is not None:
        labels = np.asarray(labels, np.int32)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},) (one per image), got {labels.shape}.")
    fn = _pmapped_bpd(prediction, variance, bool(clip_denoised), parallel.pmap_devices(devices), labels is not None)
    replicated = parallel.replicate(functional.as_pytree(model_fn), devices)

    def round_fn(index):  # index [local devices, per_device]; the padding (index >= n) repeats images
        take = index % n
        y = None if labels is None else labels[take]
        return fn(replicated, sched, rng, data.to_float(images[take], max_value), index, y)

    bpd, prior, decoder = (np.asarray(v, np.float64) for v in parallel.map_sharded(
        round_fn, n, per_device_batch=per_device_batch, devices=devices, progress=progress))
    stderr = float(np.std(bpd, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return dict(bpd=bpd, prior_bpd=prior, decoder_bpd=decoder, mean=float(bpd.mean()), stderr=stderr,
                prior_mean=float(prior.mean()), decoder_mean=float(decoder.mean()), num_examples=n)
