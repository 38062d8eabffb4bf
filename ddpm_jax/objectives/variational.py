"""The variational diffusion objective (Kingma et al. 2021): the VLB of a `vdm.VDM` model, continuous (eq. 17)
or T-step (eq. 15), its schedule learned or fixed."""

from __future__ import annotations

import dataclasses

from ddpm_jax import likelihood, vdm


@dataclasses.dataclass(frozen=True)
class VDM:
    """`vdm.training_loss_and_grads` with `loss_options` (num_steps, antithetic); the times of a global batch
    are spread antithetically over all devices, hence `global_batch`."""

    loss_options: dict

    def loss_and_grads(self, model, params, x0, rng, *, labels, rngs, first_index, global_batch, importance, frozen,
                       ema_params):
        del importance, frozen, ema_params  # VDM draws its times antithetically instead; no teacher
        return vdm.training_loss_and_grads(model, params, x0, rng, labels=labels, rngs=rngs,
                                           first_index=first_index, global_batch=global_batch, **self.loss_options)

    def check_bits_per_dim(self) -> None:
        """VDM defines bits/dim: its continuous VLB."""

    def bits_per_dim_dataset(self, model, params, images, rng, **options) -> dict:
        """The continuous VLB in bits/dim (Kingma et al. eq. 17 and its end terms) of uint8 images [N, H, W, C]
        (`likelihood.vdm_bits_per_dim_dataset`, its `options`)."""
        return likelihood.vdm_bits_per_dim_dataset(vdm.bind_eps(model, params), vdm.bind_gamma(model, params),
                                                   images, rng, **options)
