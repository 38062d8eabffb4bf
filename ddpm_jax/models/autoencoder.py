"""A KL-regularized convolutional autoencoder (Rombach et al. 2022, sec. 3.1 and appendix G): the first stage of
latent diffusion.

    ae = Autoencoder(ch=32, ch_mult=(1, 2), latent_channels=4)       # f = 2: [B, 8, 16, 1] <-> [B, 4, 8, 4]
    mean, logvar = ae.apply(params, x, method=Autoencoder.encode)    # q(z | x) = N(mean, exp(logvar))
    x_rec = ae.apply(params, z, method=Autoencoder.decode)
    loss, aux = autoencoder_loss(ae, params, x, noise, kl_weight=1e-6)

Encoder: conv_in, per level `num_res_blocks` ResBlocks and a stride-2 conv between levels (the spatial factor
f = 2 ** (len(ch_mult) - 1)), a middle ResBlock, GroupNorm -> swish -> 3x3 conv to 2 * latent_channels (mean,
log-variance). The decoder mirrors it with nearest-neighbour upsampling. The loss is the squared reconstruction
error plus kl_weight times KL(q(z | x) || N(0, I)), per example (sums over pixels and latent entries).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddpm_jax.models.unet import Downsample, Upsample, _conv, _group_norm, swish


class ResBlock(nn.Module):
    """[B, H, W, C] -> [B, H, W, out_ch]: (GroupNorm -> swish -> 3x3 conv) twice, plus a (1x1) shortcut."""

    out_ch: int
    norm_groups: int = 8
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _conv(self.out_ch, "conv1", self.dtype)(swish(_group_norm("norm1", self.dtype, self.norm_groups)(x)))
        h = _conv(self.out_ch, "conv2", self.dtype)(swish(_group_norm("norm2", self.dtype, self.norm_groups)(h)))
        if x.shape[-1] != self.out_ch:
            x = nn.Dense(self.out_ch, dtype=self.dtype, name="nin_shortcut")(x)
        return x + h


class Encoder(nn.Module):
    """x [B, H, W, C] -> (mean, logvar) [B, H / f, W / f, latent_channels] float32 (logvar clipped to [-30, 20])."""

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    latent_channels: int
    norm_groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        dt = self.dtype
        h = _conv(self.ch, "conv_in", dt)(x.astype(dt))
        for level, mult in enumerate(self.ch_mult):
            for i in range(self.num_res_blocks):
                h = ResBlock(self.ch * mult, self.norm_groups, dt, name=f"down_{level}_block_{i}")(h)
            if level < len(self.ch_mult) - 1:
                h = Downsample(True, dt, name=f"down_{level}_downsample")(h)
        h = ResBlock(self.ch * self.ch_mult[-1], self.norm_groups, dt, name="mid_block")(h)
        h = swish(_group_norm("norm_out", dt, self.norm_groups)(h))
        mean, logvar = jnp.split(_conv(2 * self.latent_channels, "conv_out", dt)(h).astype(jnp.float32), 2, -1)
        return mean, jnp.clip(logvar, -30.0, 20.0)


class Decoder(nn.Module):
    """z [B, h, w, latent_channels] -> x [B, h f, w f, out_channels] float32."""

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    out_channels: int
    norm_groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        dt = self.dtype
        h = _conv(self.ch * self.ch_mult[-1], "conv_in", dt)(z.astype(dt))
        h = ResBlock(self.ch * self.ch_mult[-1], self.norm_groups, dt, name="mid_block")(h)
        for level in reversed(range(len(self.ch_mult))):
            for i in range(self.num_res_blocks):
                h = ResBlock(self.ch * self.ch_mult[level], self.norm_groups, dt, name=f"up_{level}_block_{i}")(h)
            if level > 0:
                h = Upsample(True, dt, name=f"up_{level}_upsample")(h)
        h = swish(_group_norm("norm_out", dt, self.norm_groups)(h))
        return _conv(self.out_channels, "conv_out", dt)(h).astype(jnp.float32)


class Autoencoder(nn.Module):
    """x [B, H, W, C] in [-1, 1] <-> z [B, H / f, W / f, latent_channels], f = 2 ** (len(ch_mult) - 1)."""

    ch: int = 32
    ch_mult: Sequence[int] = (1, 2)
    num_res_blocks: int = 1
    latent_channels: int = 4
    out_channels: int = 1
    norm_groups: int = 8
    dtype: Any = jnp.float32

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """(H / f, W / f, latent_channels) of images (H, W, C); ValueError if f does not divide H and W."""
        H, W = image_shape[0], image_shape[1]
        if H % self.factor or W % self.factor:
            raise ValueError(f"image size {H}x{W} is not divisible by the autoencoder's factor {self.factor} "
                             f"(ch_mult={tuple(self.ch_mult)})")
        return H // self.factor, W // self.factor, self.latent_channels

    def setup(self):
        self.encoder = Encoder(self.ch, tuple(self.ch_mult), self.num_res_blocks, self.latent_channels,
                               self.norm_groups, self.dtype)
        self.decoder = Decoder(self.ch, tuple(self.ch_mult), self.num_res_blocks, self.out_channels,
                               self.norm_groups, self.dtype)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, H, W, C] -> (mean, logvar) of q(z | x), each [B, H / f, W / f, latent_channels]."""
        self.latent_shape(x.shape[1:])
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        """z [B, h, w, latent_channels] -> x [B, h f, w f, out_channels] float32."""
        return self.decoder(z)

    def __call__(self, x: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(reconstruction of the posterior sample z = mean + exp(logvar / 2) noise, mean, logvar); noise has the
        latent's shape."""
        mean, logvar = self.encode(x)
        return self.decode(mean + jnp.exp(0.5 * logvar) * noise), mean, logvar


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example, summed over all but axis 0: [B] nats."""
    kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    return kl.reshape(kl.shape[0], -1).sum(-1)


def autoencoder_loss(model: Autoencoder, params, x: jax.Array, noise: jax.Array, kl_weight: float):
    """(mean over the batch of ||x - x_rec||^2 + kl_weight KL, aux dict(mse [B] per pixel, kl [B])); noise [B, h, w,
    latent_channels] draws the posterior sample."""
    rec, mean, logvar = model.apply(params, x, noise)
    squared = jnp.square(rec - x).reshape(x.shape[0], -1)
    kl = kl_divergence(mean, logvar)
    return jnp.mean(squared.sum(-1) + kl_weight * kl), dict(mse=squared.mean(-1), kl=kl)
