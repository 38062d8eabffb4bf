"""Text conditioning: a word tokenizer, a small Transformer text encoder, and the U-Net that attends to it.

    tok = Tokenizer(build_vocabulary(captions), max_length=8)
    tokens = tok.encode(["three left of eight", ""])      # int32 [2, 8]: <bos> word ids, then <pad>
    model = TextUNet(unet=UNet(..., cross_attention=True), encoder=TextEncoder(vocab_size=tok.vocab_size,
                     max_length=8))
    eps = model.apply(params, z_t, t, tokens)              # the denoiser of z_t given the prompts

Every prompt starts with <bos>, so the empty prompt "" is the sequence (<bos>) with one real token: the null
condition of classifier-free guidance (as Stable Diffusion's empty prompt), which training drops prompts to
(`TextUNet.null_label`). The interface between the encoder and the U-Net is tokens [B, L] -> (embeddings
[B, L, D], mask bool [B, L]); a frozen pretrained encoder with that signature can replace `TextEncoder`.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.models.unet import attention

PAD, BOS = 0, 1
SPECIAL_TOKENS = ("<pad>", "<bos>")


def words(prompt: str) -> list[str]:
    """A prompt's words: lower-cased, split on whitespace."""
    return prompt.lower().split()


def build_vocabulary(captions: Iterable[str]) -> tuple[str, ...]:
    """The sorted set of words in `captions` (the tokenizer's vocabulary, special tokens excluded)."""
    return tuple(sorted({w for c in captions for w in words(c)}))


def empty_prompt(max_length: int) -> tuple[int, ...]:
    """The tokens of the empty prompt "": (<bos>, <pad>, ..., <pad>), the null condition of guidance."""
    return (BOS,) + (PAD,) * (max_length - 1)


class Tokenizer(NamedTuple):
    """Words -> ids: <pad> = 0, <bos> = 1, vocabulary[i] = i + 2; sequences of `max_length` (<bos> included)."""

    vocabulary: tuple[str, ...]
    max_length: int

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary) + len(SPECIAL_TOKENS)

    @property
    def null_tokens(self) -> tuple[int, ...]:
        """The empty prompt's tokens: (<bos>, <pad>, ...), length max_length."""
        return empty_prompt(self.max_length)

    def encode(self, prompts: Sequence[str], *, allow_empty: bool = True) -> np.ndarray:
        """Prompts -> int32 [N, max_length]. ValueError for an unknown word (the known ones are listed), an empty
        prompt when not `allow_empty`, or a prompt longer than max_length - 1 words."""
        index = {w: i + len(SPECIAL_TOKENS) for i, w in enumerate(self.vocabulary)}
        out = np.full((len(prompts), self.max_length), PAD, np.int32)
        out[:, 0] = BOS
        for n, prompt in enumerate(prompts):
            ws = words(prompt)
            if not ws and not allow_empty:
                raise ValueError("the prompt is empty: give a caption of at most "
                                 f"{self.max_length - 1} of the model's words ({', '.join(self.vocabulary)}).")
            unknown = [w for w in ws if w not in index]
            if unknown:
                raise ValueError(f"prompt {prompt!r}: unknown word(s) {', '.join(map(repr, unknown))}; the model "
                                 f"knows {len(self.vocabulary)} words: {', '.join(self.vocabulary)}.")
            if len(ws) > self.max_length - 1:
                raise ValueError(f"prompt {prompt!r} has {len(ws)} words; the text encoder takes at most "
                                 f"{self.max_length - 1} (max_length {self.max_length}, one for <bos>).")
            out[n, 1:1 + len(ws)] = [index[w] for w in ws]
        return out

    def decode(self, tokens: np.ndarray) -> list[str]:
        """int [N, L] -> the prompts (special tokens dropped)."""
        names = SPECIAL_TOKENS + tuple(self.vocabulary)
        return [" ".join(names[i] for i in row if i >= len(SPECIAL_TOKENS)) for row in np.asarray(tokens)]


class TransformerLayer(nn.Module):
    """Pre-LayerNorm Transformer encoder layer: x [B, L, D], mask bool [B, L] -> [B, L, D]."""

    num_heads: int = 4
    mlp_ratio: int = 4
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        B, L, D = x.shape
        h = nn.LayerNorm(dtype=self.dtype, name="norm1")(x)
        q, k, v = (nn.Dense(D, dtype=self.dtype, name=n)(h).reshape(B, L, self.num_heads, D // self.num_heads)
                   for n in ("q", "k", "v"))
        x = x + nn.Dense(D, dtype=self.dtype, name="proj")(attention(q, k, v, mask).reshape(B, L, D))
        h = nn.LayerNorm(dtype=self.dtype, name="norm2")(x)
        h = nn.Dense(self.mlp_ratio * D, dtype=self.dtype, name="mlp_in")(h)
        return x + nn.Dense(D, dtype=self.dtype, name="mlp_out")(nn.gelu(h))


class TextEncoder(nn.Module):
    """tokens int32 [B, L] -> (embeddings [B, L, width], mask bool [B, L]; True = not <pad>).

    Token + learned position embeddings, `depth` pre-LN Transformer layers attending only to real tokens, a final
    LayerNorm (as CLIP's text tower, without its causal mask).
    """

    vocab_size: int
    max_length: int
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] != self.max_length:
            raise ValueError(f"tokens must be [B, {self.max_length}] (max_length), got shape {tokens.shape}")
        if self.width % self.num_heads:
            raise ValueError(f"width ({self.width}) must be divisible by num_heads ({self.num_heads})")
        mask = tokens != PAD
        x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02), name="token_emb")(tokens)
        x = x + self.param("pos_emb", nn.initializers.normal(0.02), (self.max_length, self.width))
        for i in range(self.depth):
            x = TransformerLayer(self.num_heads, dtype=self.dtype, name=f"layer_{i}")(x.astype(self.dtype), mask)
        return nn.LayerNorm(dtype=self.dtype, name="norm_out")(x), mask


class TextUNet(nn.Module):
    """A text-conditioned denoiser: x [B, H, W, C], t [B], y tokens int32 [B, L] (None: the empty prompt)
    -> [B, H, W, C_out]. The encoder's (embeddings, mask) are the cross-attention context of `unet`, a U-Net or
    a `dit.DiT` with cross_attention=True; both are trained together (one params tree: {"encoder": ...,
    "unet": ...})."""

    unet: nn.Module
    encoder: TextEncoder

    @property
    def num_classes(self) -> None:
        return None

    @property
    def null_label(self) -> tuple[int, ...]:
        """The null condition: the empty prompt's tokens [L]."""
        return empty_prompt(self.encoder.max_length)

    @property
    def learn_sigma(self) -> bool:
        return self.unet.learn_sigma

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        if y is None:
            y = jnp.broadcast_to(jnp.asarray(self.null_label, jnp.int32), (x.shape[0], self.encoder.max_length))
        return self.unet(x, t, context=self.encoder(y), train=train)
