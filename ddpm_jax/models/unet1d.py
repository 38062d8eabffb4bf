"""The U-Net of Ho et al. for sequences: x [B, L, C] (a window of L steps of a C-variate series).

The same Module as the 2-D `unet.UNet`, its layers acting on one spatial axis: 3-tap convolutions (for 3x3),
stride-2 3-tap downsampling, nearest-neighbour upsampling by 2 along L, GroupNorm over L, self-attention over
the L positions of the levels whose length is in `attn_resolutions`, and the same sinusoidal time embedding
(Dense(4ch) -> swish -> Dense(4ch)) added in every ResnetBlock. Parameter names are the 2-D model's.

    model = unet1d.preset("series")
    params = model.init({'params': key}, jnp.zeros([1, 48, 1]), jnp.zeros([1], jnp.int32))
    eps = model.apply(params, x_t, t)          # x_t [B, 48, 1] -> [B, 48, 1]

L must be divisible by 2 ** (len(ch_mult) - 1), the number of times the model halves it.

Presets (`PRESETS`, built by `preset(name, **overrides)`):

    series   L x 1   ch 32, (1, 2, 2), 1 block,  attn (24, 12): L/2 and L/4 for L = 48   639,041
    tiny     16 x 1  ch 32, (1, 2),    1 block,  attn (8,): at L/2 for L = 16               344,609
"""

from __future__ import annotations

from typing import Any

import jax

from ddpm_jax.models.unet import UNet

__all__ = ["UNet1D", "PRESETS", "preset"]


class UNet1D(UNet):
    """The DDPM U-Net on sequences: x [B, L, C] float, t [B] int (or float), y [B] int or None -> [B, L, C_out].

    Fields as `unet.UNet`; `attn_resolutions` are lengths (a level of length l gets attention when l is in it).
    """

    def _check_x(self, x: jax.Array) -> None:
        if x.ndim != 3:
            raise ValueError(f"x must be a batch of sequences [B, L, C], got shape {x.shape}")
        if self.patch_size != 1:
            raise ValueError(f"patch_size applies to images; the 1-D U-Net needs patch_size=1, got {self.patch_size}")
        length, halvings = x.shape[1], len(self.ch_mult) - 1
        if length % 2 ** halvings:
            raise ValueError(
                f"sequence length L = {length} cannot be halved {halvings} times by ch_mult={tuple(self.ch_mult)}: "
                f"L must be a multiple of {2 ** halvings} (make the window, context + horizon, such a multiple, or "
                "use fewer levels)")


PRESETS: dict[str, dict[str, Any]] = {
    # The forecasting experiments (windows of 48 monthly values): 8 GroupNorm groups and scale-shift norm, as the
    # CPU-sized 2-D presets.
    "series": dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(24, 12), dropout=0.0,
                   norm_groups=8, scale_shift_norm=True),
    # For tests.
    "tiny": dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0, norm_groups=8),
}


def preset(name: str, **overrides: Any) -> UNet1D:
    """The UNet1D of a named preset (`PRESETS`), keyword overrides going to its fields."""
    if name not in PRESETS:
        raise ValueError(f"Unknown 1-D U-Net preset {name!r}; accepted: {', '.join(PRESETS)}.")
    return UNet1D(**{**PRESETS[name], **overrides})
