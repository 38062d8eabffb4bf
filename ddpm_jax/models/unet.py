"""The U-Net of Ho et al. 2020 (appendix B), as a Flax linen Module.

A line-by-line port of their reference TF code (`diffusion_tf/models/unet.py`, `diffusion_tf/nn.py`):

* timestep embedding: sinusoidal (`get_timestep_embedding`) -> Dense(4ch) -> swish -> Dense(4ch);
* conv_in 3x3 to `ch`; per level `num_res_blocks` ResnetBlocks, each followed by self-attention when the
  feature map's height is in `attn_resolutions`; a 3x3 stride-2 conv (or 2x2 average pool) between levels;
* middle: ResnetBlock, attention, ResnetBlock;
* up path: `num_res_blocks + 1` ResnetBlocks per level on the concatenated skip connection, nearest-neighbour
  upsample + 3x3 conv between levels;
* out: GroupNorm -> swish -> 3x3 conv.

GroupNorm has 32 groups and eps 1e-6 (tf.contrib's group_norm; `GroupNorm` below computes what flax's
nn.GroupNorm does, faster on CPU), swish is x * sigmoid(x), every conv/dense kernel is initialized with
variance_scaling(scale, 'fan_avg', 'uniform') and biases with zeros. The layers the reference
builds with `init_scale=0.` (the second conv of each ResnetBlock, the attention output projection and conv_out)
start at exactly zero here (the reference uses scale 1e-10, i.e. numerically almost zero), so a freshly
initialized model outputs exactly zero. Parameter names follow the reference's variable scopes
(`temb_dense0`, `down_0_block_1`, `mid_attn_1`, `up_2_upsample`, `conv_out`, ...).

Options beyond Ho et al. (all off by default): `learn_sigma` (2C outputs: the prediction, then the variance
interpolation v of Nichol & Dhariwal), `scale_shift_norm` (Nichol & Dhariwal's adaptive GroupNorm),
`num_classes` (a class embedding added to the time embedding, with a null label for classifier-free guidance),
`num_heads` (multi-head attention), `dtype` (compute dtype for mixed precision; params stay float32), `remat`
(recompute each ResnetBlock's and AttnBlock's activations in the backward pass: less memory, more compute) and
`fourier_features` (Kingma et al. 2021's base-2 Fourier features of the input, concatenated to it). `t` may be
float as well as int: a variational diffusion model conditions on a rescaled gamma_t (`ddpm_jax.vdm.VDM`).

Named configs (`PRESETS`, built by `preset(name, **overrides)`; `CONFIGS` maps each name to its builder). The
experiments in experiments/ take their architecture from these; exact parameter counts, checked with
`jax.eval_shape`:

    ddpm_cifar10        32x32x3   ch 128, (1, 2, 2, 2),       2 blocks, attn (16,)   35,746,307  (paper: 35.7M)
    ddpm_celeba64       64x64x3   ch 128, (1, 2, 2, 2),       2 blocks, attn (16,)   35,746,307
    ddim_celeba64       64x64x3   ch 128, (1, 2, 2, 2, 4),    2 blocks, attn (16,)   78,700,803  (DDIM's model)
    ddpm_256           256x256x3  ch 128, (1, 1, 2, 2, 4, 4), 2 blocks, attn (16,)  113,673,219  (paper: 114M)
    digits               8x8x1    ch  32, (1, 2),             1 block,  attn (4,)       755,009
    mnist               28x28x1   ch  32, (1, 2, 2),          1 block,  attn (7,)     1,191,233
    tiny                 8x8x3    ch  32, (1, 2),             1 block,  attn (4,)       702,499

The count of a convolutional U-Net does not depend on the image size, only on the input/output channels
(and on `learn_sigma`, `num_classes`, `scale_shift_norm`).

Usage::

    model = ddpm_cifar10()
    params = model.init({'params': key}, jnp.zeros([1, 32, 32, 3]), jnp.zeros([1], jnp.int32))
    eps = model.apply(params, x_t, t)                                            # eval: no dropout
    eps = model.apply(params, x_t, t, train=True, rngs={'dropout': dropout_key})  # train: dropout on
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "UNet",
    "GroupNorm",
    "ResnetBlock",
    "AttnBlock",
    "CrossAttnBlock",
    "attention",
    "Downsample",
    "Upsample",
    "get_timestep_embedding",
    "base2_fourier_features",
    "space_to_depth",
    "depth_to_space",
    "count_params",
    "check_conditioning",
    "PRESETS",
    "preset",
    "CONFIGS",
    "ddpm_cifar10",
    "ddpm_celeba64",
    "ddim_celeba64",
    "ddpm_256",
    "digits",
    "tiny",
]

NUM_GROUPS = 32
GROUPNORM_EPS = 1e-6


def default_init(scale: float = 1.0) -> Callable:
    """The reference's kernel initializer: variance_scaling(scale, 'fan_avg', 'uniform'); scale 0 -> zeros."""
    if scale == 0.0:
        return nn.initializers.zeros
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def swish(x: jax.Array) -> jax.Array:
    """x * sigmoid(x) (the reference's `tf.nn.swish`)."""
    return nn.swish(x)


def get_timestep_embedding(timesteps: jax.Array, embedding_dim: int) -> jax.Array:
    """Sinusoidal timestep embedding of Ho et al. (`diffusion_tf/nn.py`): [B] int or float -> [B, embedding_dim]
    float32 (a float t, such as VDM's 1000 * rescaled gamma_t, is embedded at the same frequencies).

    Frequencies exp(-k * log(10000) / (half - 1)), k = 0..half-1, half = embedding_dim // 2; the output is
    [sin(t * freq), cos(t * freq)], zero-padded by one column when embedding_dim is odd. The frequencies are
    computed in float64 and cast once to float32.
    """
    timesteps = jnp.asarray(timesteps)
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must have shape [B], got shape {timesteps.shape}")
    half_dim = embedding_dim // 2
    if half_dim < 2:
        raise ValueError(f"embedding_dim must be >= 4, got {embedding_dim}")
    freqs = np.exp(np.arange(half_dim, dtype=np.float64) * -(math.log(10000) / (half_dim - 1)))
    emb = timesteps.astype(jnp.float32)[:, None] * jnp.asarray(freqs, jnp.float32)[None, :]
    emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=1)
    if embedding_dim % 2 == 1:
        emb = jnp.pad(emb, [(0, 0), (0, 1)])
    return emb


def base2_fourier_features(x: jax.Array, exponents: Sequence[int]) -> jax.Array:
    """Kingma et al. 2021 (VDM's Fourier features): sin and cos of 2^k * 2 pi * x for k in `exponents`, per channel.

    [B, H, W, C] -> [B, H, W, 2 * C * K] float, ordered [sin (C x K, channel-major), cos (C x K)], as the VDM
    reference code. High frequencies (k = 6, 7 for 8-bit data) resolve the fine detail of a nearly clean z_t.
    """
    freqs = 2.0 * math.pi * 2.0 ** np.asarray(exponents, np.float64)
    h = x[..., :, None] * jnp.asarray(freqs, x.dtype)
    h = h.reshape(x.shape[:-1] + (x.shape[-1] * len(freqs),))
    return jnp.concatenate([jnp.sin(h), jnp.cos(h)], axis=-1)


def space_to_depth(x: jax.Array, p: int) -> jax.Array:
    """[B, H, W, C] -> [B, H/p, W/p, p*p*C]: each p x p patch becomes one position, channels ordered (row, column,
    channel) within the patch. `depth_to_space` is its inverse."""
    if p == 1:
        return x
    B, H, W, C = x.shape
    x = x.reshape(B, H // p, p, W // p, p, C).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H // p, W // p, p * p * C)


def depth_to_space(x: jax.Array, p: int) -> jax.Array:
    """[B, h, w, p*p*C] -> [B, h*p, w*p, C], the inverse of `space_to_depth`."""
    if p == 1:
        return x
    B, h, w, D = x.shape
    x = x.reshape(B, h, w, p, p, D // (p * p)).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, h * p, w * p, D // (p * p))


def count_params(params: Any) -> int:
    """Total number of scalars in a parameter pytree (arrays or `jax.ShapeDtypeStruct`s from eval_shape)."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def check_conditioning(model: nn.Module, batch: int, t: jax.Array, y: jax.Array | None) -> None:
    """The checks of a denoiser's call shared by `UNet` and `dit.DiT`: t of shape [B], labels y [B] of ints only for
    a class-conditional `model` (num_classes set), and an even `out_channels` with learn_sigma."""
    if t.shape != (batch,):
        raise ValueError(f"t must have shape [B] = ({batch},), got shape {t.shape}")
    if model.num_classes is None:
        if y is not None:
            raise ValueError("y was given but the model has no class conditioning (num_classes=None)")
    elif y is not None:
        if y.shape != (batch,):
            raise ValueError(f"y must have shape [B] = ({batch},) of int labels in [0, {model.num_classes}], "
                             f"got shape {y.shape}")
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
    if model.out_channels is not None and model.learn_sigma and model.out_channels % 2:
        raise ValueError(f"with learn_sigma, out_channels (prediction + v) must be even, got {model.out_channels}")


class GroupNorm(nn.Module):
    """GroupNorm (Wu & He 2018) of [B, *spatial, C] ([B, H, W, C] or [B, L, C]): the params ('scale', 'bias') and
    result of flax's nn.GroupNorm.

    The statistics come from per-channel sums of x and x^2 over the spatial axes (float32; var = E[x^2] - E[x]^2, floored at
    0, as nn.GroupNorm computes it), folded into a per-(example, channel) affine map, so the normalization is one
    x * a + b pass, forward and backward. XLA:CPU runs this faster than nn.GroupNorm's reductions over grouped
    axes (benchmarks/group_norm.py).
    """

    num_groups: int = NUM_GROUPS
    epsilon: float = GROUPNORM_EPS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        B, *spatial, C = x.shape
        G = self.num_groups
        if C % G:
            raise ValueError(f"GroupNorm: {C} channels are not divisible into {G} groups")
        scale = self.param("scale", nn.initializers.ones, (C,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (C,), jnp.float32)
        xf = x.astype(jnp.float32)
        axes = tuple(range(1, x.ndim - 1))
        n = math.prod(spatial) * (C // G)
        mean = xf.sum(axes).reshape(B, G, C // G).sum(-1) / n                  # [B, G]
        mean_sq = jnp.square(xf).sum(axes).reshape(B, G, C // G).sum(-1) / n
        inv_std = jax.lax.rsqrt(jnp.maximum(mean_sq - jnp.square(mean), 0.0) + self.epsilon)
        a = jnp.repeat(inv_std, C // G, axis=1) * scale                            # [B, C]
        b = bias - jnp.repeat(mean, C // G, axis=1) * a
        a, b = _per_example(a, x.ndim), _per_example(b, x.ndim)
        return (xf * a + b).astype(self.dtype)


def _per_example(v: jax.Array, ndim: int) -> jax.Array:
    """[B, C] -> [B, 1, ..., 1, C] with ndim axes, to broadcast over the spatial axes of [B, *spatial, C]."""
    return v.reshape((v.shape[0],) + (1,) * (ndim - 2) + (v.shape[-1],))


def _group_norm(name: str, dtype: Any, groups: int = NUM_GROUPS) -> GroupNorm:
    return GroupNorm(num_groups=groups, epsilon=GROUPNORM_EPS, dtype=dtype, name=name)


def _conv(features: int, name: str, dtype: Any, *, kernel: int = 3, stride: int = 1,
          init_scale: float = 1.0, spatial: int = 2) -> nn.Conv:
    """A kernel^spatial convolution: 3x3 on [B, H, W, C] (spatial 2), 3 taps on [B, L, C] (spatial 1)."""
    return nn.Conv(features, (kernel,) * spatial, strides=(stride,) * spatial, padding="SAME",
                   kernel_init=default_init(init_scale), dtype=dtype, name=name)


def _dense(features: int, name: str, dtype: Any, *, init_scale: float = 1.0) -> nn.Dense:
    # Also the reference's `nin` (a 1x1 conv): Dense acts on the last axis of [B, H, W, C].
    return nn.Dense(features, kernel_init=default_init(init_scale), dtype=dtype, name=name)


class ResnetBlock(nn.Module):
    """[B, H, W, C] (or [B, L, C]), temb [B, D] -> [B, H, W, out_ch] (or [B, L, out_ch]).

    norm1 -> swish -> conv1 -> + temb_proj(swish(temb)) -> norm2 -> swish -> dropout -> conv2 (zero-init),
    plus the input (through a 1x1 `nin_shortcut` when C != out_ch). With `scale_shift_norm` the temb projection
    has 2 * out_ch units (scale, shift) and norm2's output becomes norm2(h) * (1 + scale) + shift.
    """

    out_ch: int | None = None
    dropout: float = 0.0
    scale_shift_norm: bool = False
    norm_groups: int = NUM_GROUPS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, train: bool = False) -> jax.Array:
        C, spatial = x.shape[-1], x.ndim - 2
        out_ch = C if self.out_ch is None else self.out_ch
        h = swish(_group_norm("norm1", self.dtype, self.norm_groups)(x))
        h = _conv(out_ch, "conv1", self.dtype, spatial=spatial)(h)
        emb = _dense(2 * out_ch if self.scale_shift_norm else out_ch, "temb_proj", self.dtype)(swish(temb))
        emb = _per_example(emb, x.ndim)
        if self.scale_shift_norm:
            scale, shift = jnp.split(emb, 2, axis=-1)
            h = _group_norm("norm2", self.dtype, self.norm_groups)(h) * (1 + scale) + shift
        else:
            h = _group_norm("norm2", self.dtype, self.norm_groups)(h + emb)
        h = swish(h)
        h = nn.Dropout(rate=self.dropout, deterministic=not train)(h)
        h = _conv(out_ch, "conv2", self.dtype, init_scale=0.0, spatial=spatial)(h)
        if C != out_ch:
            x = _dense(out_ch, "nin_shortcut", self.dtype)(x)
        return x + h


class AttnBlock(nn.Module):
    """Self-attention over all H*W (or L) positions with a residual: [B, H, W, C] -> [B, H, W, C] ([B, L, C] alike).

    GroupNorm -> q, k, v (1x1) -> softmax(q k^T / sqrt(C / num_heads)) v -> proj_out (1x1, zero-init) -> + x.
    num_heads = 1 is the reference's block. The softmax is computed in float32.
    """

    num_heads: int = 1
    norm_groups: int = NUM_GROUPS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        B, C, n = x.shape[0], x.shape[-1], math.prod(x.shape[1:-1])
        if C % self.num_heads:
            raise ValueError(f"attention channels ({C}) must be divisible by num_heads ({self.num_heads})")
        d = C // self.num_heads
        h = _group_norm("norm", self.dtype, self.norm_groups)(x)
        q = _dense(C, "q", self.dtype)(h).reshape(B, n, self.num_heads, d)
        k = _dense(C, "k", self.dtype)(h).reshape(B, n, self.num_heads, d)
        v = _dense(C, "v", self.dtype)(h).reshape(B, n, self.num_heads, d)
        h = attention(q, k, v).reshape(x.shape)
        h = _dense(C, "proj_out", self.dtype, init_scale=0.0)(h)
        return x + h


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Multi-head dot-product attention: q [B, Q, N, d], k and v [B, K, N, d], mask bool [B, K] (True = attend;
    None = all) -> [B, Q, N, d]. softmax(q k^T / sqrt(d)) v, the softmax in float32; masked keys get weight 0."""
    w = jnp.einsum("bqnd,bknd->bnqk", q, k) * (q.shape[-1] ** -0.5)
    w = w.astype(jnp.float32)
    if mask is not None:
        w = jnp.where(mask[:, None, None, :], w, jnp.finfo(jnp.float32).min)
    w = jax.nn.softmax(w, axis=-1).astype(v.dtype)
    return jnp.einsum("bnqk,bknd->bqnd", w, v)


class CrossAttnBlock(nn.Module):
    """Cross-attention from the image to a sequence (Rombach et al. 2022, sec. 3.3), with a residual:
    x [B, H, W, C] (or [B, L, C]), context [B, L, D], mask bool [B, L] (True = a real token) -> x's shape.

    GroupNorm(x) -> q (1x1); LayerNorm(context) -> k, v (C each) -> attention over the L tokens, padding masked
    -> proj_out (zero-init) -> + x. At least one token per example must be unmasked.

    With `positions`, a learned embedding of each position ([H, W, C], normal(1) at init: the scale of the
    normalized features) is added to the normalized x before q, so a query knows where it is: which word a
    position should read ("three left of eight") is a question of where the position is, which the
    translation-equivariant convolutions tell it only through the zero padding at the borders.
    """

    num_heads: int = 1
    norm_groups: int = NUM_GROUPS
    positions: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array) -> jax.Array:
        B, C, n = x.shape[0], x.shape[-1], math.prod(x.shape[1:-1])
        if C % self.num_heads:
            raise ValueError(f"attention channels ({C}) must be divisible by num_heads ({self.num_heads})")
        if context.ndim != 3 or context.shape[0] != B or mask.shape != context.shape[:2]:
            raise ValueError(f"context must be [B, L, D] with B = {B} and mask [B, L]; got context "
                             f"{context.shape}, mask {mask.shape}")
        d, L = C // self.num_heads, context.shape[1]
        h = _group_norm("norm", self.dtype, self.norm_groups)(x)
        if self.positions:
            h = h + self.param("pos_emb", nn.initializers.normal(1.0), x.shape[1:]).astype(self.dtype)
        c = nn.LayerNorm(dtype=self.dtype, name="norm_context")(context)
        q = _dense(C, "q", self.dtype)(h).reshape(B, n, self.num_heads, d)
        k = _dense(C, "k", self.dtype)(c).reshape(B, L, self.num_heads, d)
        v = _dense(C, "v", self.dtype)(c).reshape(B, L, self.num_heads, d)
        h = attention(q, k, v, mask).reshape(x.shape)
        h = _dense(C, "proj_out", self.dtype, init_scale=0.0)(h)
        return x + h


class Downsample(nn.Module):
    """[B, H, W, C] -> [B, H/2, W/2, C]: 3x3 stride-2 conv ('SAME' padding, as TF) or 2x2 average pool; on
    [B, L, C] -> [B, L/2, C] the same with 3 taps (2)."""

    with_conv: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        spatial = x.ndim - 2
        if self.with_conv:
            return _conv(x.shape[-1], "conv", self.dtype, stride=2, spatial=spatial)(x)
        return nn.avg_pool(x, (2,) * spatial, strides=(2,) * spatial, padding="VALID")


class Upsample(nn.Module):
    """[B, H, W, C] -> [B, 2H, 2W, C] ([B, L, C] -> [B, 2L, C]): nearest-neighbour upsampling, then (optionally)
    a 3x3 (3-tap) conv."""

    with_conv: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for axis in range(1, x.ndim - 1):
            x = jnp.repeat(x, 2, axis=axis)
        if self.with_conv:
            x = _conv(x.shape[-1], "conv", self.dtype, spatial=x.ndim - 2)(x)
        return x


class UNet(nn.Module):
    """The DDPM U-Net: x [B, H, W, C] float, t [B] int (0-based timesteps) or float (a continuous level, e.g. VDM's
    rescaled gamma_t), y [B] int or None -> [B, H, W, C_out] float32.

    Attributes:
      ch: base channels (must be divisible by the 32 GroupNorm groups).
      ch_mult: channel multiplier per resolution level; H and W must be divisible by 2 ** (len(ch_mult) - 1).
      num_res_blocks: ResnetBlocks per level on the way down (num_res_blocks + 1 on the way up).
      attn_resolutions: feature-map sizes that get self-attention; as in the reference, a level's feature-map
        height is what is compared (the side, for square images).
      dropout: dropout rate inside the ResnetBlocks, active only with train=True (needs rngs={'dropout': key}).
      out_channels: total output channels; default C, or 2C with learn_sigma.
      learn_sigma: output the prediction, then the variance interpolation v (2C channels by default).
      scale_shift_norm: Nichol & Dhariwal's adaptive GroupNorm, h = norm(h) * (1 + scale) + shift.
      num_classes: class conditioning: an Embed(num_classes + 1, 4ch) added to the time embedding; row
        num_classes (`null_label`) is the unconditional label, used when y is None.
      resamp_with_conv: conv (True) or pooling / plain nearest upsampling (False) between levels.
      num_heads: attention heads (1 in the reference).
      norm_groups: GroupNorm groups (32 in the reference). Ho et al. add the time embedding before norm2, so
        where a level has norm_groups channels (one per group) the normalization removes it: small models
        (ch 32) need fewer groups or scale_shift_norm, which conditions after the normalization.
      dtype: compute dtype (params stay float32; the output is cast to float32).
      remat: rematerialize (`nn.remat`) every ResnetBlock and AttnBlock: their activations are recomputed in the
        backward pass instead of stored. Same params, outputs and gradients; ~17% more FLOPs (XLA's count for the
        CIFAR-10 step); less memory where the compiler's scheduler frees the activations (not XLA:CPU's default).
      fourier_features: exponents k of base-2 Fourier features of x (`base2_fourier_features`) concatenated to x
        before conv_in, e.g. (6, 7) as VDM on 8-bit images; () (the default) for none.
      patch_size: p > 1 runs the network on p x p patches: the input goes through space-to-depth ([B, H, W, C] ->
        [B, H/p, W/p, p*p*C]) before conv_in and the output back through depth-to-space, so every level works
        at 1/p the side (about 1/p^2 the convolution FLOPs) and attn_resolutions count the patched sides.
        Hoogeboom et al. 2023 ("simple diffusion") downsample the same way; 1 (the default) is Ho et al.'s U-Net.
      cross_attention: every attention block is followed by a `CrossAttnBlock` (named `<block>_cross`) to the
        `context` = (embeddings [B, L, D], mask bool [B, L]) the call then needs (text conditioning, Rombach et
        al. 2022; see `models.text.TextUNet`).
      cross_attention_positions: the cross-attention queries get a learned position embedding
        (`CrossAttnBlock.positions`); fixes the image size the parameters fit.
    """

    ch: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    out_channels: int | None = None
    learn_sigma: bool = False
    scale_shift_norm: bool = False
    num_classes: int | None = None
    resamp_with_conv: bool = True
    num_heads: int = 1
    norm_groups: int = NUM_GROUPS
    dtype: Any = jnp.float32
    remat: bool = False
    fourier_features: Sequence[int] = ()
    patch_size: int = 1
    cross_attention: bool = False
    cross_attention_positions: bool = False

    @property
    def null_label(self) -> int | None:
        """The label of the null (unconditional) class: num_classes (None without class conditioning)."""
        return self.num_classes

    def _check_inputs(self, x: jax.Array, t: jax.Array, y: jax.Array | None) -> None:
        if self.norm_groups < 1 or self.ch % self.norm_groups:
            raise ValueError(f"ch must be divisible by the {self.norm_groups} GroupNorm groups (norm_groups), "
                             f"got ch={self.ch}")
        if not self.ch_mult:
            raise ValueError("ch_mult must name at least one resolution level, got ()")
        self._check_x(x)
        check_conditioning(self, x.shape[0], t, y)

    def _check_x(self, x: jax.Array) -> None:
        if x.ndim != 4:
            raise ValueError(f"x must be NHWC [B, H, W, C], got shape {x.shape}")
        B, H, W, _ = x.shape
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be a positive int, got {self.patch_size}")
        factor = 2 ** (len(self.ch_mult) - 1)
        if H % (factor * self.patch_size) or W % (factor * self.patch_size):
            patches = f" in patches of {self.patch_size}" if self.patch_size > 1 else ""
            raise ValueError(
                f"image size {H}x{W}{patches} cannot be halved {len(self.ch_mult) - 1} times by "
                f"ch_mult={tuple(self.ch_mult)}: H and W must be multiples of {factor * self.patch_size}")

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None, *,
                 context: tuple[jax.Array, jax.Array] | None = None, train: bool = False) -> jax.Array:
        x, t = jnp.asarray(x), jnp.asarray(t)
        y = None if y is None else jnp.asarray(y)
        self._check_inputs(x, t, y)
        if self.cross_attention != (context is not None):
            raise ValueError("a U-Net with cross_attention=True needs context=(embeddings [B, L, D], mask [B, L]), "
                             "and one without takes none")
        B, C, spatial = x.shape[0], x.shape[-1], x.ndim - 2
        if self.out_channels is not None:
            out_ch = self.out_channels
        else:
            out_ch = 2 * C if self.learn_sigma else C
        num_resolutions = len(self.ch_mult)
        dt = self.dtype

        resnet_block = nn.remat(ResnetBlock, static_argnums=(3,)) if self.remat else ResnetBlock  # 3: train
        attn_block = nn.remat(AttnBlock) if self.remat else AttnBlock

        def resnet(h, name, out=None):
            return resnet_block(out_ch=out, dropout=self.dropout, scale_shift_norm=self.scale_shift_norm,
                                norm_groups=self.norm_groups, dtype=dt, name=name)(h, temb, train)

        def attn(h, name):
            h = attn_block(num_heads=self.num_heads, norm_groups=self.norm_groups, dtype=dt, name=name)(h)
            if self.cross_attention:
                h = CrossAttnBlock(num_heads=self.num_heads, norm_groups=self.norm_groups, dtype=dt,
                                   positions=self.cross_attention_positions, name=f"{name}_cross")(h, *context)
            return h

        # Timestep (and class) embedding.
        temb = get_timestep_embedding(t, self.ch)
        temb = _dense(4 * self.ch, "temb_dense0", dt)(temb)
        temb = _dense(4 * self.ch, "temb_dense1", dt)(swish(temb))
        if self.num_classes is not None:
            if y is None:
                y = jnp.full((B,), self.null_label, jnp.int32)
            temb = temb + nn.Embed(self.num_classes + 1, 4 * self.ch, embedding_init=nn.initializers.normal(1.0),
                                   dtype=dt, name="label_emb")(y)

        # Downsampling.
        if self.fourier_features:
            x = jnp.concatenate([x, base2_fourier_features(x, self.fourier_features)], axis=-1)
        x = space_to_depth(x, self.patch_size)
        hs = [_conv(self.ch, "conv_in", dt, spatial=spatial)(x.astype(dt))]
        for i_level in range(num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = resnet(hs[-1], f"down_{i_level}_block_{i_block}", self.ch * self.ch_mult[i_level])
                if h.shape[1] in self.attn_resolutions:
                    h = attn(h, f"down_{i_level}_attn_{i_block}")
                hs.append(h)
            if i_level != num_resolutions - 1:
                hs.append(Downsample(self.resamp_with_conv, dtype=dt, name=f"down_{i_level}_downsample")(hs[-1]))

        # Middle.
        h = hs[-1]
        h = resnet(h, "mid_block_1")
        h = attn(h, "mid_attn_1")
        h = resnet(h, "mid_block_2")

        # Upsampling.
        for i_level in reversed(range(num_resolutions)):
            for i_block in range(self.num_res_blocks + 1):
                h = resnet(jnp.concatenate([h, hs.pop()], axis=-1), f"up_{i_level}_block_{i_block}",
                           self.ch * self.ch_mult[i_level])
                if h.shape[1] in self.attn_resolutions:
                    h = attn(h, f"up_{i_level}_attn_{i_block}")
            if i_level != 0:
                h = Upsample(self.resamp_with_conv, dtype=dt, name=f"up_{i_level}_upsample")(h)
        assert not hs

        # End.
        h = swish(_group_norm("norm_out", dt, self.norm_groups)(h))
        h = _conv(out_ch * self.patch_size ** 2, "conv_out", dt, init_scale=0.0, spatial=spatial)(h)
        return depth_to_space(h, self.patch_size).astype(jnp.float32)


# ----- Named configs: the architectures of the experiments in experiments/, which build on these presets. -----

PRESETS: dict[str, dict[str, Any]] = {
    # Ho et al.'s CIFAR-10 model: 35,746,307 parameters (the paper's 35.7M).
    "ddpm_cifar10": dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1),
    # The CIFAR-10 architecture on 64x64 CelebA (attention at the third level): 35,746,307.
    "ddpm_celeba64": dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1),
    # Song et al.'s DDIM CelebA 64x64 model: 78,700,803.
    "ddim_celeba64": dict(ch=128, ch_mult=(1, 2, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1),
    # Ho et al.'s 256x256 model (CelebA-HQ, LSUN; dropout 0 as their run scripts): 113,673,219 (paper: 114M).
    "ddpm_256": dict(ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,), dropout=0.0),
    # Nichol & Dhariwal's CIFAR-10 model (with learn_sigma=True: 52,546,438).
    "improved_cifar10": dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=3, attn_resolutions=(16, 8), num_heads=4,
                             scale_shift_norm=True, dropout=0.3),
    # CPU-sized models. ch 32 with 32 GroupNorm groups would normalize the time embedding away (one channel per
    # group): 8 or 16 groups, and scale-shift norm.
    "digits": dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0, norm_groups=8,
                   scale_shift_norm=True),  # 8x8x1: 755,009
    "mnist": dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0, norm_groups=8,
                  scale_shift_norm=True),  # 28x28x1: 1,191,233
    # For tests, 8x8x3: 702,499.
    "tiny": dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.1),
}


def preset(name: str, **overrides: Any) -> UNet:
    """The UNet of a named preset (`PRESETS`), keyword overrides going to its fields: preset("digits", dropout=0.1)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown U-Net preset {name!r}; accepted: {', '.join(PRESETS)}.")
    return UNet(**{**PRESETS[name], **overrides})


def ddpm_cifar10(**overrides: Any) -> UNet:
    return preset("ddpm_cifar10", **overrides)


def ddpm_celeba64(**overrides: Any) -> UNet:
    return preset("ddpm_celeba64", **overrides)


def ddim_celeba64(**overrides: Any) -> UNet:
    return preset("ddim_celeba64", **overrides)


def ddpm_256(**overrides: Any) -> UNet:
    return preset("ddpm_256", **overrides)


def digits(**overrides: Any) -> UNet:
    return preset("digits", **overrides)


def tiny(**overrides: Any) -> UNet:
    return preset("tiny", **overrides)


CONFIGS: dict[str, Callable[..., UNet]] = {name: functools.partial(preset, name) for name in PRESETS}
