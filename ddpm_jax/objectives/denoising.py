"""The denoising objective of `losses.training_loss`, on a discrete schedule (DDPM: Ho et al. 2020, Nichol &
Dhariwal 2021) or on a continuous process (flow matching: Lipman et al. 2023, Liu et al. 2023)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from ddpm_jax import functional, likelihood, losses, processes


@dataclasses.dataclass(frozen=True)
class Denoising:
    """Example i: t and noise from fold_in(rng, first_index + i), x_t = alpha(t) x0 + sigma(t) eps, the loss of
    `loss_options` on the model's output (`losses.training_losses`). `process`: a `Schedule` (t uniform on its T
    steps or importance-sampled; prediction eps/x0/v, learned variance, hybrid and VLB losses, weightings) or a
    `processes` process (t from its training distribution; "mse" on the prediction's target)."""

    process: Any
    loss_options: dict
    name: str = "ddpm"  # the config's name of the objective, for messages

    def loss_and_grads(self, model, params, x0, rng, *, labels, rngs, first_index, global_batch, importance, frozen,
                       ema_params):
        del global_batch, frozen, ema_params  # each example draws its own t; no teacher, no target network

        def loss_fn(params):
            def model_fn(x, t):
                return model.apply(params, x, t, labels, train=True, rngs=rngs)

            return losses.training_loss(model_fn, self.process, x0, rng, first_index=first_index,
                                        importance=importance, **self.loss_options)

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    def check_bits_per_dim(self) -> None:
        """ValueError if this objective defines no bits/dim: on a continuous process the likelihood needs the ODE's
        divergence, which is not implemented here."""
        if processes.is_process(self.process):
            raise ValueError(f"objective {self.name!r} defines no bits/dim here (its likelihood needs the ODE's "
                             "divergence): pass bpd_examples=0 (--bpd-examples 0) with a feature network for "
                             "FID/IS/KID/precision-recall.")

    def bits_per_dim_dataset(self, model, params, images, rng, **options) -> dict:
        """The T-step VLB in bits/dim (Ho et al. eq. 5) of uint8 images [N, H, W, C] under the model with `params`
        (`likelihood.bits_per_dim_dataset`, its `options`: max_value, labels, per_device_batch, progress)."""
        self.check_bits_per_dim()
        return likelihood.bits_per_dim_dataset(
            functional.bind(model.apply, params), self.process, images, rng,
            prediction=self.loss_options.get("prediction", "eps"),
            variance=self.loss_options.get("variance", "fixed_small"), clip_denoised=True, **options)
