"""The optimizer of a training config: optax's Adam/AdamW with warmup, a constant or cosine learning rate, and
gradient clipping. Its names are the config schema's (`config_schema`) as well as the trainer's."""

from __future__ import annotations

import ml_collections
import optax

from ddpm_jax.validation import check_choice

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """optax chain of config.train: clip by global norm, then Adam/AdamW with linear warmup (Ho et al.: Adam,
    lr 2e-4, 5000 warmup steps, clip 1.0), constant or cosine-decayed after warmup."""
    t = config.train
    check_choice("optimizer", t.optimizer, OPTIMIZERS)
    check_choice("lr schedule", t.lr_schedule, LR_SCHEDULES)
    warmup = optax.linear_schedule(0.0, t.learning_rate, max(t.warmup_steps, 1))
    if t.lr_schedule == "constant":
        after = optax.constant_schedule(t.learning_rate)
    else:
        after = optax.cosine_decay_schedule(t.learning_rate, max(t.num_steps - t.warmup_steps, 1))
    lr = optax.join_schedules([warmup, after], [t.warmup_steps])
    if t.optimizer == "adam":
        opt = optax.adam(lr, b1=t.b1, b2=t.b2, eps=t.eps)
    else:
        opt = optax.adamw(lr, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay)
    chain = [optax.clip_by_global_norm(t.grad_clip)] if t.grad_clip > 0 else []
    return optax.chain(*chain, opt)
