"""Distillation objectives: a student (initialized from its teacher) trained to take fewer steps. The teacher's
params are the run's frozen params (`TrainState.frozen["teacher"]`), the math is `distillation`'s.

- `Progressive` (Salimans & Ho 2022, Algorithm 2): one student DDIM step onto the teacher's two.
- `Consistency` (Song et al. 2023, Algorithm 2): f_theta at a level onto the target network f_theta- (the run's
  EMA params, decay mu = config.train.ema_decay) one teacher ODE step less noisy; distance L2.

Example i draws its level and noise from fold_in(rng, first_index + i) (0: level, 1: noise), as every objective.
Neither defines a likelihood.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ddpm_jax import distillation
from ddpm_jax.denoiser import denoiser
from ddpm_jax.keys import example_keys, per_example


def _at(values, x):
    """values [B] shaped [B, 1, ..., 1] to broadcast against x [B, ...]."""
    return values.reshape(values.shape + (1,) * (x.ndim - 1))


def _draws(rng, x0, first_index, num_levels):
    """(level index [B] uniform in [0, num_levels), noise [B, ...]) of each example's key."""
    keys = example_keys(rng, x0.shape[0], first_index)
    j = per_example(lambda k: jax.random.randint(jax.random.fold_in(k, 0), (), 0, num_levels), keys)
    noise = per_example(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x0.shape[1:], jnp.float32), keys)
    return j, noise


def _noised(lv, j, x0, noise):
    """x_t = alpha x0 + sigma eps at each example's level index j [B] of the levels `lv`."""
    return _at(lv.alpha[j], x0) * x0 + _at(lv.sigma[j], x0) * noise


def _regression(predict, params, target, weight=1.0):
    """((loss, aux), grads) of weight ||target - predict(params)||^2 (mean over pixels, weight [B] or a scalar),
    averaged over the batch; aux: loss and mse per example."""
    def loss_fn(params):
        mse = jnp.mean(jnp.square(target - predict(params)), axis=tuple(range(1, target.ndim)))
        return jnp.mean(weight * mse), dict(loss=weight * mse, mse=mse)

    return jax.value_and_grad(loss_fn, has_aux=True)(params)


def _student(model, labels, rngs):
    """params -> model_fn(x, t) of the student in training (dropout on)."""
    return lambda params: lambda x, t: model.apply(params, x, t, labels, train=True, rngs=rngs)


class _Distillation:
    """What both objectives share: their teacher, read as `teacher_prediction` (None: the student's `prediction`),
    and no likelihood (`check_bits_per_dim` raises, with the objective's `name`)."""

    def _teacher(self, model, frozen):
        """denoise(x, t, labels) -> `denoiser.Denoised` of the frozen teacher (no dropout)."""
        prediction = self.teacher_prediction or self.prediction

        def denoise(x, t, labels):
            return denoiser(lambda x, t: model.apply(frozen["teacher"], x, t, labels), self.process, prediction)(x, t)

        return denoise

    def check_bits_per_dim(self) -> None:
        raise ValueError(f"a {self.name}-distilled student defines no bits/dim (it is trained to match its "
                         "teacher's sampler, not a likelihood): pass bpd_examples=0 (--bpd-examples 0) with a "
                         "feature network for FID/IS.")


@dataclasses.dataclass(frozen=True)
class Progressive(_Distillation):
    """Salimans & Ho 2022, Algorithm 2, for a student of `num_steps` = N steps (`distillation` notes): a level of
    the student's grid, z = alpha x0 + sigma eps, the teacher's two steps on the grid of 2N (`solver`, a key of
    `distillation.PROGRESSIVE_SOLVERS`: DDIM as in the paper, or Heun for a first round), the target x~,
    the loss w(t) ||x~ - x_theta(z)||^2 (mean over pixels) with w `weighting`. The student reads its network as
    `prediction`, the teacher as `teacher_prediction` (sec. 4: a v or x0 student of an eps teacher)."""

    process: Any
    prediction: str
    num_steps: int
    weighting: str = "truncated_snr"
    teacher_prediction: str | None = None  # None: the student's
    solver: str = distillation.PROGRESSIVE_SOLVER
    name = "progressive"

    def loss_and_grads(self, model, params, x0, rng, *, labels, rngs, first_index, global_batch, importance, frozen,
                       ema_params):
        del global_batch, importance, ema_params
        lv = distillation.levels(self.process, distillation.progressive_times(self.process, 2 * self.num_steps))
        k, noise = _draws(rng, x0, first_index, self.num_steps)
        j = 2 * k  # the student's level on the teacher's grid
        z = _noised(lv, j, x0, noise)
        teacher, step = self._teacher(model, frozen), distillation.PROGRESSIVE_SOLVERS[self.solver]
        z1 = distillation.teacher_step(step, self.process, lv, teacher, z, j, labels)
        z2 = distillation.teacher_step(step, self.process, lv, teacher, z1, j + 1, labels)
        target = jax.lax.stop_gradient(distillation.ddim_x0_target(
            z, z2, _at(lv.alpha[j], z), _at(lv.sigma[j], z), _at(lv.alpha[j + 2], z), _at(lv.sigma[j + 2], z)))
        weight = distillation.snr_weight(lv.alpha[j], lv.sigma[j], self.weighting)
        student = _student(model, labels, rngs)
        return _regression(lambda p: denoiser(student(p), self.process, self.prediction)(z, lv.t[j]).x0, params,
                           target, weight)


@dataclasses.dataclass(frozen=True)
class Consistency(_Distillation):
    """Song et al. 2023, Algorithm 2, on the teacher's discretization of `num_levels` = N levels: a level n + 1
    (index j in [0, N - 2], noisiest first), x = alpha x0 + sigma eps there, the teacher's ODE step (`solver`,
    `distillation.TEACHER_SOLVERS`) to level n, the loss lambda d(f_theta(x_{n+1}), f_theta-(x^_n)) with
    lambda = 1 and d the squared L2 distance (mean over pixels); theta- are the EMA params. Student and target read
    the network as `prediction`, the teacher as `teacher_prediction`."""

    process: Any
    prediction: str
    num_levels: int
    solver: str = "heun"
    teacher_prediction: str | None = None  # None: the student's
    name = "consistency"

    def loss_and_grads(self, model, params, x0, rng, *, labels, rngs, first_index, global_batch, importance, frozen,
                       ema_params):
        del global_batch, importance
        lv = distillation.levels(self.process, distillation.consistency_times(self.process, self.num_levels))
        eps = lv.sigma_ve[self.num_levels - 1]
        sigma_d = distillation.sigma_data(self.process)
        j, noise = _draws(rng, x0, first_index, self.num_levels - 1)
        x = _noised(lv, j, x0, noise)
        teacher = self._teacher(model, frozen)
        x_next = distillation.teacher_step(distillation.TEACHER_SOLVERS[self.solver], self.process, lv, teacher, x,
                                           j, labels)

        def f(apply_fn, x, i):
            d = denoiser(apply_fn, self.process, self.prediction)(x, lv.t[i])
            return distillation.consistency_output(x / _at(lv.alpha[i], x), d.x0, _at(lv.sigma_ve[i], x), eps,
                                                   sigma_d)

        target = jax.lax.stop_gradient(f(lambda x, t: model.apply(ema_params, x, t, labels), x_next, j + 1))
        student = _student(model, labels, rngs)
        return _regression(lambda p: f(student(p), x, j), params, target)
