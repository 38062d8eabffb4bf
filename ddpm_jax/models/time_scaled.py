"""A network of integer timesteps 0..T-1 (the U-Net's sinusoidal embedding, Ho et al.) fed a continuous level:
flow matching's t in [0, 1] (`TimeScaled`), EDM's sigma through its preconditioning (`EDMPreconditioned`)."""

from __future__ import annotations

import flax.linen as nn

from ddpm_jax import processes


class _Wrapper(nn.Module):
    """A network `net` behind a change of its input level; conditioning as the net's."""

    net: nn.Module

    @property
    def num_classes(self):
        return self.net.num_classes

    @property
    def null_label(self):
        return self.net.null_label


class TimeScaled(_Wrapper):
    """net(x, scale * t, y, train): t float32 [B] in [0, 1] (flow matching's time) spread over the range of
    timesteps the embedding was designed for, as flow-matching code does with DDPM U-Nets."""

    scale: float = 1000.0

    def __call__(self, x, t, y=None, train: bool = False):
        return self.net(x, t * self.scale, y, train=train)


class EDMPreconditioned(_Wrapper):
    """EDM's preconditioned denoiser (Karras et al. 2022, eq. 7 and table 1; EDM's EDMPrecond): D(x, sigma) =
    c_skip x + c_out net(c_in x, c_noise), an x_0 model of sigma float32 [B]. c_noise = ln(sigma) / 4 reaches the
    U-Net's timestep embedding as `scale` c_noise (the embedding was made for timesteps 0..T-1)."""

    sigma_data: float = 0.5
    scale: float = 1000.0

    def __call__(self, x, sigma, y=None, train: bool = False):
        s = sigma.reshape(sigma.shape + (1,) * (x.ndim - 1))
        raw = self.net(processes.edm_c_in(s, self.sigma_data) * x, self.scale * processes.edm_c_noise(sigma), y,
                       train=train)
        return processes.edm_c_skip(s, self.sigma_data) * x + processes.edm_c_out(s, self.sigma_data) * raw
