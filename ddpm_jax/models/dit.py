"""DiT, the Diffusion Transformer of Peebles & Xie 2023 ("Scalable Diffusion Models with Transformers"), as a Flax
linen Module with the U-Net's call: x [B, H, W, C], t [B], y [B] or None -> [B, H, W, C_out] float32.

As the paper (sec. 3.2, fig. 3) and its reference code (facebookresearch/DiT, `models.py`) build it:

* patchify: each p x p patch is a token, linearly embedded to `hidden_size` D (a conv with kernel = stride = p,
  written as `patchify` + Dense), plus the fixed 2-D sine-cosine position embedding (`sincos_pos_embed`);
* the condition c = timestep embedding (`timestep_embedding` of 256 frequencies -> Dense -> SiLU -> Dense) +
  class embedding (a table of num_classes + 1 rows; row num_classes is the null label, as the U-Net's);
* `depth` DiT blocks with adaLN-Zero (`DiTBlock`): a zero-initialized Dense of SiLU(c) gives each block the shift,
  scale and gate of its attention and MLP branches, so every block is the identity at initialization;
* the final layer (`FinalLayer`): adaLN of LayerNorm(x), a zero-initialized Dense to p*p*C_out, unpatchify; a fresh
  model outputs exactly zero.

Details as the reference: LayerNorms without affine parameters, eps 1e-6; one qkv projection, biases on; MLP of
ratio `mlp_ratio` with the tanh-approximated GELU; Dense kernels xavier-uniform, biases zero; the timestep MLP and
the class table normal(0.02). Options beyond the paper: `pos_embed="learned"` (normal(0.02), fixes the image size
the parameters fit), `learn_sigma` (2C outputs: the prediction, then Nichol & Dhariwal's v, as the U-Net),
`cross_attention` to a text encoding (`CrossAttention`, placed as PixArt-alpha, Chen et al. 2023), `dtype` (compute
dtype; params stay float32) and `remat` (`nn.remat` of every block).

Presets (`PRESETS`, `preset("DiT-XL/2")`: the size, then the patch size). Exact parameter counts with learn_sigma,
1000 classes, on 32x32x4 latents (256x256 images), patch 2, from `jax.eval_shape`; the reference also counts its
frozen sin-cos table (256 D values) as parameters, the paper's figures below include it:

    DiT-S/2    D  384, depth 12,  6 heads   32,865,056 (+ 98,304 = 32,963,360; paper: 33M)
    DiT-B/2    D  768, depth 12, 12 heads  130,315,808 (+196,608 = 130,512,416; paper: 130M)
    DiT-L/2    D 1024, depth 24, 16 heads  457,840,672 (+262,144 = 458,102,816; paper: 458M)
    DiT-XL/2   D 1152, depth 28, 16 heads  674,834,720 (+294,912 = 675,129,632; paper: 675M)

XLA's FLOPs of the forward / 2 (the paper counts a multiply-add as one flop) give Table 1's Gflops at patch 4
(1.42, 5.58, 19.75, 29.11; paper: 1.4, 5.6, 19.7, 29.1) and 118.9 for DiT-XL/2 (Table 4: 118.6; XLA also counts
the elementwise ops).

Usage::

    model = dit.preset("DiT-S/2", num_classes=1000, learn_sigma=True)
    params = model.init(key, jnp.zeros([1, 32, 32, 4]), jnp.zeros([1], jnp.int32))
    out = model.apply(params, z_t, t, y)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.models.unet import attention, check_conditioning, depth_to_space, space_to_depth
from ddpm_jax.validation import check_choice

__all__ = ["DiT", "DiTBlock", "FinalLayer", "CrossAttention", "timestep_embedding", "sincos_pos_embed", "patchify",
           "unpatchify", "POS_EMBEDS", "PRESETS", "preset_fields", "preset"]

LN_EPS = 1e-6
FREQUENCY_DIM = 256  # width of the sinusoidal timestep features (the reference's frequency_embedding_size)
POS_EMBEDS = ("sincos", "learned")


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """The sinusoidal timestep features DiT uses (GLIDE's / ADM's): t [B] int or float -> [B, dim] float32,
    [cos(t f_k), sin(t f_k)] with f_k = max_period^(-k / half), k = 0..half-1, half = dim // 2, zero-padded by one
    column when dim is odd. (The U-Net's `get_timestep_embedding`, Ho et al.'s, is [sin, cos] with k / (half - 1).)
    The frequencies are computed in float64 and cast once to float32."""
    half = dim // 2
    freqs = np.exp(-np.log(max_period) * np.arange(half, dtype=np.float64) / half)
    args = jnp.asarray(t).astype(jnp.float32)[:, None] * jnp.asarray(freqs, jnp.float32)[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=1)
    return jnp.pad(emb, [(0, 0), (0, dim % 2)])


def sincos_pos_embed(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """The fixed 2-D sine-cosine position embedding (MAE's `get_2d_sincos_pos_embed`, which DiT uses): float64
    [grid_h * grid_w, dim], tokens in row-major order. The first dim/2 channels embed a token's column c, the last
    dim/2 its row r, each as [sin(pos w_k), cos(pos w_k)] with w_k = 10000^(-k / (dim/4)), k = 0..dim/4-1."""
    if dim % 4:
        raise ValueError(f"the sin-cos position embedding needs hidden_size divisible by 4, got {dim}")
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64), indexing="ij")

    def one_axis(pos):
        out = pos.reshape(-1, 1) * omega[None, :]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_axis(cols), one_axis(rows)], axis=1)


def patchify(x: jax.Array, p: int) -> jax.Array:
    """[B, H, W, C] -> tokens [B, (H/p) (W/p), p*p*C]: the patches in row-major order, each flattened (row, column,
    channel), the order the reference's unpatchify reads."""
    x = space_to_depth(x, p)
    return x.reshape(x.shape[0], -1, x.shape[-1])


def unpatchify(tokens: jax.Array, p: int, grid_h: int, grid_w: int) -> jax.Array:
    """Tokens [B, grid_h * grid_w, p*p*C] -> [B, grid_h p, grid_w p, C], the inverse of `patchify`."""
    return depth_to_space(tokens.reshape(tokens.shape[0], grid_h, grid_w, tokens.shape[-1]), p)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN: x [B, N, D] * (1 + scale) + shift, scale and shift [B, D] (one per example)."""
    return x * (1 + scale[:, None]) + shift[:, None]


def _layer_norm(name: str, dtype: Any, affine: bool = False) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, use_bias=affine, use_scale=affine, dtype=dtype, name=name)


def _dense(features: int, name: str, dtype: Any, init=nn.initializers.xavier_uniform()) -> nn.Dense:
    return nn.Dense(features, kernel_init=init, dtype=dtype, name=name)


def _heads(x: jax.Array, num_heads: int) -> jax.Array:
    """[B, N, D] -> [B, N, num_heads, D / num_heads]."""
    return x.reshape(x.shape[:2] + (num_heads, x.shape[-1] // num_heads))


class CrossAttention(nn.Module):
    """Cross-attention of the tokens to a text encoding, with a residual: x [B, N, D], context [B, L, E], mask bool
    [B, L] (True = a real token) -> [B, N, D]. LayerNorm(x) -> q; LayerNorm(context) -> k, v (D each); attention
    over the L tokens, padding masked; a zero-initialized output projection, so a block stays the identity at
    initialization. Not in the DiT paper: PixArt-alpha (Chen et al. 2023) puts it between the
    self-attention and the MLP, without adaLN, as `DiTBlock` does."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array) -> jax.Array:
        B, N, D = x.shape
        if context.ndim != 3 or context.shape[0] != B or mask.shape != context.shape[:2]:
            raise ValueError(f"context must be [B, L, E] with B = {B} and mask [B, L]; got context "
                             f"{context.shape}, mask {mask.shape}")
        q = _dense(D, "q", self.dtype)(_layer_norm("norm", self.dtype, affine=True)(x))
        c = _layer_norm("norm_context", self.dtype, affine=True)(context.astype(self.dtype))
        k, v = _dense(D, "k", self.dtype)(c), _dense(D, "v", self.dtype)(c)
        h = attention(_heads(q, self.num_heads), _heads(k, self.num_heads), _heads(v, self.num_heads), mask)
        return x + _dense(D, "proj", self.dtype, nn.initializers.zeros)(h.reshape(B, N, D))


class DiTBlock(nn.Module):
    """A DiT block with adaLN-Zero (sec. 3.2, fig. 3): tokens x [B, N, D], condition c [B, D], context (text
    embeddings [B, L, E], mask [B, L]) or None -> [B, N, D].

        shift1, scale1, gate1, shift2, scale2, gate2 = Dense_6D(SiLU(c))          (zero-initialized)
        x = x + gate1 * SelfAttention(LN(x) (1 + scale1) + shift1)
        x = CrossAttention(x, context)                                             (with a context only)
        x = x + gate2 * MLP(LN(x) (1 + scale2) + shift2)
    """

    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array, context: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        B, N, D = x.shape
        dt = self.dtype
        modulation = _dense(6 * D, "adaLN_modulation", dt, nn.initializers.zeros)(nn.silu(c))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(modulation, 6, axis=-1)
        h = _modulate(_layer_norm("norm1", dt)(x), shift1, scale1)
        q, k, v = jnp.split(_dense(3 * D, "attn_qkv", dt)(h), 3, axis=-1)
        h = attention(_heads(q, self.num_heads), _heads(k, self.num_heads), _heads(v, self.num_heads))
        x = x + gate1[:, None] * _dense(D, "attn_proj", dt)(h.reshape(B, N, D))
        if context is not None:
            x = CrossAttention(self.num_heads, dt, name="cross_attn")(x, *context)
        h = _modulate(_layer_norm("norm2", dt)(x), shift2, scale2)
        h = _dense(D, "mlp_fc2", dt)(nn.gelu(_dense(int(D * self.mlp_ratio), "mlp_fc1", dt)(h), approximate=True))
        return x + gate2[:, None] * h


class FinalLayer(nn.Module):
    """x [B, N, D], c [B, D] -> [B, N, features]: shift, scale = Dense_2D(SiLU(c)) (zero-initialized), then a
    zero-initialized Dense of LN(x) (1 + scale) + shift."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        modulation = _dense(2 * x.shape[-1], "adaLN_modulation", self.dtype, nn.initializers.zeros)(nn.silu(c))
        shift, scale = jnp.split(modulation, 2, axis=-1)
        h = _modulate(_layer_norm("norm_final", self.dtype)(x), shift, scale)
        return _dense(self.features, "linear", self.dtype, nn.initializers.zeros)(h)


class DiT(nn.Module):
    """The Diffusion Transformer: x [B, H, W, C] float, t [B] int (0-based timesteps) or float (a continuous level),
    y [B] int or None -> [B, H, W, C_out] float32. The call and the conditioning fields are the U-Net's, so every
    objective, sampler, `vdm.VDM`, `text.TextUNet` and the trainer take either network.

    Attributes:
      hidden_size, depth, num_heads, mlp_ratio: the Transformer (D, blocks, heads, MLP width / D); default DiT-XL.
      patch_size: p, the side of a patch; p must divide H and W. The (H/p)(W/p) tokens set the compute (the paper's
        Gflops grow as 1/p^2 at a nearly equal parameter count).
      pos_embed: "sincos" (fixed, the paper's) or "learned".
      out_channels: total output channels; default C, or 2C with learn_sigma.
      learn_sigma: output the prediction, then the variance interpolation v (2C channels by default).
      num_classes: class conditioning: an Embed(num_classes + 1, D) added to the timestep embedding; row
        num_classes (`null_label`) is the unconditional label, used when y is None; the trainer's label dropout
        (config.train.label_dropout) drops labels to it.
      cross_attention: every block attends to `context` = (embeddings [B, L, E], mask bool [B, L]), which the call
        then needs (`CrossAttention`).
      dtype: compute dtype (params stay float32; the output is cast to float32).
      remat: rematerialize every block in the backward pass (same outputs and gradients, less memory).
    """

    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 2
    pos_embed: str = "sincos"
    out_channels: int | None = None
    learn_sigma: bool = False
    num_classes: int | None = None
    cross_attention: bool = False
    dtype: Any = jnp.float32
    remat: bool = False

    @property
    def null_label(self) -> int | None:
        """The label of the null (unconditional) class: num_classes (None without class conditioning)."""
        return self.num_classes

    def _check_inputs(self, x: jax.Array, t: jax.Array, y: jax.Array | None, context) -> None:
        check_choice("position embedding (pos_embed)", self.pos_embed, POS_EMBEDS)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        if x.ndim != 4:
            raise ValueError(f"x must be NHWC [B, H, W, C], got shape {x.shape}")
        H, W, p = x.shape[1], x.shape[2], self.patch_size
        if p < 1 or H % p or W % p:
            raise ValueError(f"patch size {p} must be a positive int that divides the image size {H}x{W}")
        check_conditioning(self, x.shape[0], t, y)
        if self.cross_attention != (context is not None):
            raise ValueError("a DiT with cross_attention=True needs context=(embeddings [B, L, E], mask [B, L]), "
                             "and one without takes none")

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None, *,
                 context: tuple[jax.Array, jax.Array] | None = None, train: bool = False) -> jax.Array:
        """`train` is accepted for the denoisers' common call; the DiT has no dropout."""
        x, t = jnp.asarray(x), jnp.asarray(t)
        y = None if y is None else jnp.asarray(y)
        self._check_inputs(x, t, y, context)
        B, H, W, C = x.shape
        p, D, dt = self.patch_size, self.hidden_size, self.dtype
        grid_h, grid_w = H // p, W // p
        if self.out_channels is not None:
            out_ch = self.out_channels
        else:
            out_ch = 2 * C if self.learn_sigma else C

        h = _dense(D, "x_embedder", dt)(patchify(x, p).astype(dt))
        if self.pos_embed == "sincos":
            pos = jnp.asarray(sincos_pos_embed(D, grid_h, grid_w), jnp.float32)
        else:
            pos = self.param("pos_embed", nn.initializers.normal(0.02), (grid_h * grid_w, D), jnp.float32)
        h = h + pos.astype(dt)

        normal = nn.initializers.normal(0.02)
        c = _dense(D, "t_embedder_0", dt, normal)(timestep_embedding(t, FREQUENCY_DIM))
        c = _dense(D, "t_embedder_1", dt, normal)(nn.silu(c))
        if self.num_classes is not None:
            if y is None:
                y = jnp.full((B,), self.null_label, jnp.int32)
            c = c + nn.Embed(self.num_classes + 1, D, embedding_init=normal, dtype=dt, name="label_emb")(y)

        block = nn.remat(DiTBlock) if self.remat else DiTBlock
        for i in range(self.depth):
            h = block(self.num_heads, self.mlp_ratio, dtype=dt, name=f"block_{i}")(h, c, context)
        h = FinalLayer(p * p * out_ch, dtype=dt, name="final_layer")(h, c)
        return unpatchify(h, p, grid_h, grid_w).astype(jnp.float32)


# ----- Named sizes: the paper's Table 1 (mlp ratio 4), and the CPU-sized models of experiments/. -----

PRESETS: dict[str, dict[str, Any]] = {
    "DiT-S": dict(hidden_size=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "DiT-B": dict(hidden_size=768, depth=12, num_heads=12, mlp_ratio=4.0),
    "DiT-L": dict(hidden_size=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    "DiT-XL": dict(hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4.0),
    # CPU-sized, at the forward FLOPs of the U-Nets they stand beside (benchmarks/dit_vs_unet.py).
    # experiments/digits_dit.py, 8x8x1, 16 tokens; class-conditional: 1,272,324 params (U-Net 756,417)
    "digits": dict(hidden_size=128, depth=4, num_heads=4, mlp_ratio=4.0, patch_size=2),
    # experiments/mnist_dit.py, 28x28x1, 49 tokens; class-conditional: 1,869,072 params (U-Net 717,633)
    "mnist": dict(hidden_size=128, depth=6, num_heads=4, mlp_ratio=4.0, patch_size=4),
}


def preset_fields(name: str) -> dict[str, Any]:
    """The DiT fields of a named preset: a key of `PRESETS`, the paper's sizes optionally with their patch size
    after a slash, as the paper names its models ("DiT-XL/2" is DiT-XL with patch_size 2)."""
    size, slash, patch = name.partition("/")
    if size not in PRESETS or (slash and (not patch.isdigit() or "patch_size" in PRESETS[size])):
        paper = [n for n in PRESETS if n.startswith("DiT-")]
        raise ValueError(f"Unknown DiT preset {name!r}; accepted: {', '.join(PRESETS)}; the paper's sizes also with "
                         f"a patch size ({', '.join(n + '/2' for n in paper)}, /4, /8).")
    return dict(PRESETS[size], **({"patch_size": int(patch)} if slash else {}))


def preset(name: str, **overrides: Any) -> DiT:
    """The DiT of a named preset (`preset_fields`), keyword overrides going to its fields:
    preset("DiT-B/4", num_classes=1000, learn_sigma=True)."""
    return DiT(**{**preset_fields(name), **overrides})
