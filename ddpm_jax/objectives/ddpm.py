"""DDPM's objective (Ho et al. 2020; Nichol & Dhariwal 2021): `losses.training_loss` on a discrete schedule."""

from __future__ import annotations

import dataclasses

import jax

from ddpm_jax import losses
from ddpm_jax.schedules import Schedule


@dataclasses.dataclass(frozen=True)
class DDPM:
    """t uniform on the schedule's T steps (or importance-sampled), eps ~ N(0, I), the loss of `loss_options`
    (`losses.training_losses`: prediction, variance, loss_type, weighting, ...)."""

    sched: Schedule
    loss_options: dict

    def loss_and_grads(self, model, params, x0, rng, *, labels, rngs, first_index, global_batch, importance):
        del global_batch  # each example draws its own t

        def loss_fn(params):
            def model_fn(x, t):
                return model.apply(params, x, t, labels, train=True, rngs=rngs)

            return losses.training_loss(model_fn, self.sched, x0, rng, first_index=first_index,
                                        importance=importance, **self.loss_options)

        return jax.value_and_grad(loss_fn, has_aux=True)(params)
