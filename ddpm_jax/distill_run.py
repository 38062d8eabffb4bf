"""Distilled students as runs: `distill(teacher, workdir, method, overrides)` builds the student's config from the
teacher's and trains it with `train.train_and_evaluate`, so every round is checkpointed and resumed like any run.

    python -m ddpm_jax distill --teacher runs/mnist --method progressive --workdir runs/mnist_pd \
        [--config.distill.teacher_steps=8] [--config.train.num_steps=2000]
    python -m ddpm_jax sample --workdir runs/mnist_pd --steps 2       # the round distilled for 2 steps

A student's config is the teacher's saved config with a section `distill` (`DEFAULTS`: what the method reads,
the teacher's workdir, checkpoint step and prediction), the student's training settings (`TRAIN_DEFAULTS`, then
the command's --config overrides) and its own sampler in config.sample (`config_schema.DISTILLED_SAMPLERS`).

- progressive (Salimans & Ho 2022): rounds N = teacher_steps / 2, ..., 1, round N in WORKDIR/steps_<N>, its student
  (initialized from its teacher, the round before; the first: the teacher run) trained config.train.num_steps
  steps to take in one DDIM step what its teacher takes in two. WORKDIR/distill.json lists the finished rounds
  (`runs.resolve_workdir`). config.distill.steps and .timesteps record each round's student and the levels it
  samples (`distillation.progressive_times`).
- consistency (Song et al. 2023): WORKDIR is the run; its EMA (decay mu = config.train.ema_decay, default 0.95,
  no warmup) is the target network theta-, and what it samples with (in 1 .. num_levels steps).
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Sequence

import ml_collections

from ddpm_jax import checkpoint, config_schema, configs, distillation, runs, train, validation
from ddpm_jax.files import check_writable, write_text

DEFAULTS = {
    # teacher_steps: the teacher's steps, halved each round down to 1; solver: the first round's teacher step
    # (`distillation.PROGRESSIVE_SOLVERS`; later rounds': DDIM); steps, timesteps: set per round
    "progressive": dict(teacher_steps=8, weighting="truncated_snr", solver=distillation.PROGRESSIVE_SOLVER, steps=None,
                        timesteps=None),
    # num_levels: N of the teacher's Karras discretization (Song et al.: 18 on CIFAR-10); solver: its ODE step
    "consistency": dict(num_levels=18, solver="heun"),
}
# The student's training: a constant learning rate of 4e-4 (Song et al. 2023's for consistency distillation on
# CIFAR-10, used for progressive distillation's short rounds too), no warmup, no evaluation (and no post-hoc EMA:
# `student_config`).
TRAIN_DEFAULTS = dict(num_steps=1000, learning_rate=4e-4, lr_schedule="constant", warmup_steps=0, sample_every=0,
                      eval_every=0, keep_best=False)
# The EMA: progressive, what the next round and the samples use, warmed up so that it forgets the teacher it starts
# from (0.999^1000 would keep 37% of it); consistency, the target network, with Song et al.'s constant mu for CD on
# CIFAR-10.
EMA = {"progressive": dict(ema_decay=0.999, ema_warmup=True), "consistency": dict(ema_decay=0.95, ema_warmup=False)}


def student_config(teacher: str, method: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The student's config (module notes) from the run in `teacher`, validated; config.distill.teacher_step is
    the teacher's newest checkpoint that restores unless an override names one. ValueError for a method, teacher
    or override no student can take; FileNotFoundError for a teacher workdir without config or checkpoint."""
    validation.check_choice("distillation method (--method)", method, distillation.METHODS)
    config = runs.load_config(teacher)
    if config.get("distill", None) is not None:
        raise ValueError(f"{teacher!r} holds a distilled student: distill the original teacher (a progressive chain "
                         "already distills each round from the one before).")
    config_schema.check_distillable(config)
    config.distill = ml_collections.ConfigDict(dict(method=method, teacher=os.path.abspath(teacher),
                                                    teacher_step=None,
                                                    teacher_prediction=config.diffusion.prediction,
                                                    **DEFAULTS[method]))
    config.train.update(TRAIN_DEFAULTS, **EMA[method])
    config.train.posthoc_ema = None  # a section of the teacher's is replaced, not updated
    config.diffusion.importance_sampling = False
    config.sample.update(sampler=config_schema.DISTILLED_SAMPLERS[method], spacing=None, eta=0.0,
                         num_steps=1 if method == "consistency" else None)
    configs.apply_overrides(config, overrides)
    if config.distill.teacher_step is None:
        config.distill.teacher_step = checkpoint.restore_params(teacher)[1]
    config_schema.validate_config(config)
    return config


def distill(teacher: str, workdir: str, method: str, overrides: Sequence[str] = (), *, progress: bool = True) -> dict:
    """Distill the run in `teacher` into WORKDIR by `method` ("progressive" or "consistency"), resuming what is
    there. Returns dict(rounds=[dict(steps (progressive) or num_levels, workdir, step, loss, seconds)]): one per
    progressive round, one for consistency; a resumed round that was finished trains 0 steps."""
    config = student_config(teacher, method, overrides)
    if method == "consistency":
        if os.path.exists(os.path.join(workdir, runs.CHAIN_FILE)):
            raise ValueError(f"{workdir!r} holds a progressive-distillation chain: give a new --workdir.")
        return dict(rounds=[_train(config, workdir, progress, num_levels=config.distill.num_levels)])
    if os.path.exists(os.path.join(workdir, runs.CONFIG_FILE)):
        raise ValueError(f"{workdir!r} holds a run: a progressive-distillation chain keeps its rounds in a directory "
                         "of its own; give a new --workdir.")
    check_writable(workdir, "the rounds of progressive distillation go there")
    os.makedirs(workdir, exist_ok=True)
    chain = dict(method=method, teacher=config.distill.teacher, rounds={})
    path = os.path.join(workdir, runs.CHAIN_FILE)
    if os.path.exists(path):
        with open(path) as f:
            chain["rounds"] = json.load(f)["rounds"]
    process = configs.create_schedule(config)
    results = []
    steps = config.distill.teacher_steps // 2
    while steps >= 1:
        round_config = copy.deepcopy(config)
        round_config.distill.update(steps=steps, timesteps=distillation.progressive_times(process, steps))
        name = f"steps_{steps}"
        results.append(_train(round_config, os.path.join(workdir, name), progress, steps=steps))
        chain["rounds"][str(steps)] = name
        write_text(path, json.dumps(chain, indent=2))
        # the next round's teacher: this round's student, which samples with DDIM
        config.distill.update(teacher=os.path.abspath(os.path.join(workdir, name)),
                              teacher_step=round_config.train.num_steps,
                              teacher_prediction=config.diffusion.prediction, solver="ddim")
        steps //= 2
    return dict(rounds=results)


def _train(config, workdir: str, progress: bool, **what) -> dict:
    """One student trained (or resumed) to config.train.num_steps in `workdir`, timed."""
    start = time.perf_counter()
    result = train.train_and_evaluate(config, workdir, progress=progress)
    return dict(what, workdir=workdir, step=result["step"], loss=result["metrics"].get("loss"),
                seconds=time.perf_counter() - start)
