"""A network of integer timesteps 0..T-1 (the U-Net's sinusoidal embedding, Ho et al.) fed a continuous time."""

from __future__ import annotations

import flax.linen as nn


class TimeScaled(nn.Module):
    """net(x, scale * t, y, train): t float32 [B] in [0, 1] (flow matching's time) spread over the range of
    timesteps the embedding was designed for, as flow-matching code does with DDPM U-Nets."""

    net: nn.Module
    scale: float = 1000.0

    @property
    def num_classes(self):
        return self.net.num_classes

    @property
    def null_label(self):
        return self.net.null_label

    def __call__(self, x, t, y=None, train: bool = False):
        return self.net(x, t * self.scale, y, train=train)
