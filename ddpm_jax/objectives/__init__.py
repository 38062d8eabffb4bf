"""Training objectives: each one module behind one small interface, so the trainer holds no `if objective`.

    objective.loss_and_grads(model, params, x0, rng, labels=..., rngs=..., first_index=..., global_batch=...,
                             importance=..., frozen=..., ema_params=...) -> ((loss, aux), grads)

for one device's part of a global batch: `model` the Flax module, `params` its parameters, x0 [B, ...] the
(possibly encoded) data, `rng` the step's key (example i draws from fold_in(rng, first_index + i), so a global
batch gives the same draws however it is split over devices), labels the condition or None, rngs Flax's (dropout)
for train=True, global_batch the examples over all devices, importance DDPM's importance-sampling state or None,
frozen the run's untrained params (a distillation's teacher: frozen["teacher"]) or None, ema_params the EMA of
params before this step (consistency distillation's target network).
loss is the scalar to minimize, aux per-example terms [B] (and t [B]) for metrics. Where the objective defines a
likelihood, `objective.bits_per_dim_dataset(model, params, images, rng, ...)` gives it (`check_bits_per_dim()`
raises ValueError where it does not). Instances are built from a config by `configs.create_objective`.

- `Denoising` (denoising.py): `losses.training_loss` on a discrete `Schedule` (DDPM, Ho et al. 2020; Nichol &
  Dhariwal 2021: L_simple, hybrid, VLB, with the weightings of `losses`) or on a continuous process.
- `flow_matching` (flow.py): `Denoising` on rectified flow (Lipman et al. 2023, Liu et al. 2023).
- `edm` (edm.py): `Denoising` on EDM's process with its weighting, for its preconditioned x0 model (Karras et al.
  2022).
- `VDM` (variational.py, Kingma et al. 2021): the continuous or T-step VLB of a `vdm.VDM` model.
- `Progressive`, `Consistency` (distill.py): a student distilled from its teacher (Salimans & Ho 2022; Song et
  al. 2023), built from a config's `distill` section.
"""

from ddpm_jax.objectives.denoising import Denoising
from ddpm_jax.objectives.distill import Consistency, Progressive
from ddpm_jax.objectives.edm import edm
from ddpm_jax.objectives.flow import flow_matching
from ddpm_jax.objectives.variational import VDM

__all__ = ["Consistency", "Denoising", "Progressive", "VDM", "edm", "flow_matching"]
