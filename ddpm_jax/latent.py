"""Latent diffusion (Rombach et al. 2022): a diffusion model of a frozen autoencoder's scaled latents.

A latent run's workdir holds the first stage beside the second:

    workdir/autoencoder/checkpoints/   the autoencoder's train state (stage 1, `train.train_and_evaluate`)
    workdir/autoencoder/latent.json    its scale factor, latent shape and reconstruction error, written when
                                       stage 1 ends
    workdir/checkpoints/               the diffusion model of z = scale * (mean + std * noise) (stage 2)

The scale factor is 1 / std of the latents of the training images, computed from data as Stable Diffusion's
0.18215 was, so the diffusion model sees latents of unit variance.

    codec = latent.load_codec(workdir, config)
    images = codec.decode(latents)                # [N, h, w, c] -> [N, H, W, C] in about [-1, 1]
    latents = codec.encode(images)                # the posterior means, scaled
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax import checkpoint
from ddpm_jax.files import write_text
from ddpm_jax.models.autoencoder import Autoencoder

AUTOENCODER_DIR = "autoencoder"
LATENT_FILE = "latent.json"


def encode(model: Autoencoder, params, scale, images: jax.Array, noise: jax.Array | None = None) -> jax.Array:
    """images [B, H, W, C] -> scale * z with z = mean + exp(logvar / 2) noise (the mean when noise is None)."""
    mean, logvar = model.apply(params, images, method=Autoencoder.encode)
    z = mean if noise is None else mean + jnp.exp(0.5 * logvar) * noise
    return scale * z


def decode(model: Autoencoder, params, scale, latents: jax.Array) -> jax.Array:
    """scaled latents [B, h, w, c] -> images [B, H, W, C] (the decoder of latents / scale)."""
    return model.apply(params, latents / scale, method=Autoencoder.decode)


def scale_factor(latents: np.ndarray) -> float:
    """1 / std of the latents (over all entries): the factor that gives them unit variance."""
    return float(1.0 / np.std(np.asarray(latents, np.float64)))


@functools.partial(jax.jit, static_argnums=(0,))
def _encode(model, params, scale, images, noise):
    return encode(model, params, scale, images, noise)


@functools.partial(jax.jit, static_argnums=(0,))
def _decode(model, params, scale, latents):
    return decode(model, params, scale, latents)


def _chunked(fn, arrays, chunk: int = 512) -> np.ndarray:
    return np.concatenate([np.asarray(fn(*(a[i:i + chunk] for a in arrays))) for i in range(0, len(arrays[0]), chunk)])


class Codec(NamedTuple):
    """A trained first stage: the autoencoder, its (EMA) params and the latent scale factor."""

    model: Autoencoder
    params: Any
    scale: float

    def encode(self, images, noise=None) -> np.ndarray:
        """images [N, H, W, C] in [-1, 1] -> scaled latents [N, h, w, c] (posterior means, or samples with noise)."""
        images = np.asarray(images, np.float32)
        if noise is None:
            noise = np.zeros((len(images),) + self.model.latent_shape(images.shape[1:]), np.float32)
        return _chunked(lambda x, n: _encode(self.model, self.params, jnp.float32(self.scale), x, n), (images, noise))

    def decode(self, latents) -> np.ndarray:
        """scaled latents [N, h, w, c] -> images [N, H, W, C], clipped to [-1, 1]."""
        out = _chunked(lambda z: _decode(self.model, self.params, jnp.float32(self.scale), z),
                       (np.asarray(latents, np.float32),))
        return np.clip(out, -1.0, 1.0)


def write_report(workdir: str, report: dict) -> None:
    """workdir/autoencoder/latent.json: scale_factor, latent_shape, reconstruction error, ..."""
    write_text(os.path.join(workdir, AUTOENCODER_DIR, LATENT_FILE), json.dumps(report, indent=2))


def read_report(workdir: str) -> dict | None:
    """The contents of workdir/autoencoder/latent.json, or None before stage 1 has ended."""
    path = os.path.join(workdir, AUTOENCODER_DIR, LATENT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_codec(workdir: str, model: Autoencoder) -> Codec:
    """The first stage of a latent run: EMA params of its newest autoencoder checkpoint and latent.json's scale."""
    report = read_report(workdir)
    if report is None:
        raise FileNotFoundError(f"{os.path.join(workdir, AUTOENCODER_DIR, LATENT_FILE)} not found: the "
                                "autoencoder stage of this latent run has not finished (run train again).")
    params, _ = checkpoint.restore_params(os.path.join(workdir, AUTOENCODER_DIR))
    return Codec(model, params, float(report["scale_factor"]))
