"""The denoising objective of `losses.training_loss`, on a discrete schedule (DDPM: Ho et al. 2020, Nichol &
Dhariwal 2021) or on a continuous process (flow matching: Lipman et al. 2023, Liu et al. 2023)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from ddpm_jax import losses


@dataclasses.dataclass(frozen=True)
class Denoising:
    """Example i: t and noise from fold_in(rng, first_index + i), x_t = alpha(t) x0 + sigma(t) eps, the loss of
    `loss_options` on the model's output (`losses.training_losses`). `process`: a `Schedule` (t uniform on its T
    steps or importance-sampled; prediction eps/x0/v, learned variance, hybrid and VLB losses, weightings) or a
    `processes` process (t from its training distribution; "mse" on the prediction's target)."""

    process: Any
    loss_options: dict

    def loss_and_grads(self, model, params, x0, rng, *, labels, rngs, first_index, global_batch, importance):
        del global_batch  # each example draws its own t

        def loss_fn(params):
            def model_fn(x, t):
                return model.apply(params, x, t, labels, train=True, rngs=rngs)

            return losses.training_loss(model_fn, self.process, x0, rng, first_index=first_index,
                                        importance=importance, **self.loss_options)

        return jax.value_and_grad(loss_fn, has_aux=True)(params)
