"""The config schema: every field of a run's ConfigDict checked against what the library accepts, before anything
loads or compiles (`validate_config`). It sits above the modules whose names it checks (diffusion, losses,
sampling, optimizers, ...) and below the trainer and the CLI; the checks it is made of are `validation`'s.
"""

from __future__ import annotations

import copy
import dataclasses

from ddpm_jax import (configs, data, diffusion, distillation, losses, optimizers, parallel, posthoc_ema, sample_quality,
                      sampling, schedules)
from ddpm_jax.models import dit
from ddpm_jax.validation import check_choice, check_count, check_number, check_sampler_settings, warn_once


def validate_config(config, *, training: bool = True) -> None:
    """Refuse the config values no run can mean and warn once about suspicious ones, before anything loads or
    compiles. `training=False` skips config.train (for sampling from a trained run)."""
    m, d, s = config.model, config.diffusion, config.sample
    check_choice("model dtype (config.model.dtype)", m.get("dtype", "float32"), tuple(configs.DTYPES))
    if m.get("num_classes", None) is not None:
        check_count("config.model.num_classes", m.num_classes)
    check_number("config.model.dropout", m.get("dropout", 0.0), 0.0, 1.0, high_open=True)
    check_choice("model architecture (config.model.arch)", m.get("arch", "unet"), tuple(configs.ARCHITECTURES))
    if m.get("arch", "unet") == "dit":
        _validate_dit(m)
    check_count("config.diffusion.num_timesteps", d.num_timesteps)
    objective = configs.objective(config)  # checks the objective's own section and prediction
    if objective not in configs.CONTINUOUS_OBJECTIVES:
        check_choice("prediction (config.diffusion.prediction)", d.prediction, diffusion.PREDICTIONS)
    elif s.sampler == "ancestral":
        raise ValueError(f"sampler 'ancestral' (config.sample.sampler) walks a discrete schedule's T steps; "
                         f"{objective} samples a continuous process: use one of {', '.join(n for n, r in sampling.SAMPLERS.items() if not r.discrete_only)}.")
    check_choice("variance (config.diffusion.variance)", d.variance, diffusion.VARIANCES)
    check_choice("loss type (config.diffusion.loss_type)", d.loss_type, losses.LOSS_TYPES)
    check_choice("weighting (config.diffusion.weighting)", d.weighting, losses.WEIGHTINGS)
    if config.get("distill", None) is None:
        check_choice("sampler (config.sample.sampler)", s.sampler, sampling.SAMPLERS)
    else:
        _validate_distill(config)
    if s.get("spacing", None) is not None:
        check_choice("spacing (config.sample.spacing)", s.spacing, schedules.SPACINGS)
    check_sampler_settings(s.num_steps if s.sampler != "ancestral" else None, s.eta)
    check_count("config.sample.num_images", s.num_images)
    if s.get("per_device_batch", None) is not None:
        check_count("config.sample.per_device_batch", s.per_device_batch)
    if data.parse_source(config.data.source).kind == "series":
        _validate_series(config)
    if config.get("autoencoder", None) is not None:
        a = config.autoencoder
        for name in ("ch", "num_res_blocks", "latent_channels", "out_channels", "norm_groups"):
            check_count(f"config.autoencoder.{name}", a[name])
        check_number("config.autoencoder.kl_weight", a.kl_weight, 0.0)
        if s.clip_denoised:
            raise ValueError("latent diffusion samples latents, which are not confined to [-1, 1]: set "
                             "config.sample.clip_denoised = False.")
        if training:
            _validate_train(configs.autoencoder_train_config(config))
    if config.model.get("text", None) is not None:
        text = config.model.text
        for name in ("max_length", "width", "depth", "num_heads"):
            check_count(f"config.model.text.{name}", text[name], 2 if name == "max_length" else 1)
    if training:
        _validate_train(config.train)
        if config.data.random_flip and (why := data.one_sided(config.data.source)):
            warn_once(f"config.data.random_flip = True on {config.data.source!r}: {why}, so a flip makes images the "
                      "data never hold and the model draws them mirrored too; set config.data.random_flip = False.")
        _validate_posthoc_ema(config.train.get("posthoc_ema", None))
        _validate_eval(config)


DISTILLED_SAMPLERS = {"progressive": "ddim", "consistency": "consistency"}  # what a student samples with


def check_distillable(config) -> None:
    """ValueError unless a run of `config` can teach a student: a pixel-space image run of the objectives "ddpm",
    "flow" or "edm" (a VDM's schedule lives in its params, which the student would change; a latent or text run's
    frozen first stage and prompts are not distilled here)."""
    objective = configs.objective(config)
    if objective == "vdm":
        raise ValueError("a VDM teacher cannot be distilled here: its noise schedule lives in the params the student "
                         "trains (a learned one would drift). Distill a 'ddpm', 'flow' or 'edm' run.")
    if config.get("autoencoder", None) is not None or config.model.get("text", None) is not None:
        raise ValueError("a latent or text-to-image teacher cannot be distilled here (its frozen first stage and "
                         "prompts are not part of the student): distill a pixel-space 'ddpm', 'flow' or 'edm' run.")
    if data.parse_source(config.data.source).kind == "series":
        raise ValueError("a series (forecasting) teacher cannot be distilled here: forecasts inpaint with the "
                         "run's sampler. Distill an image run.")


def _validate_distill(config) -> None:
    """config.distill (a distilled student, `distill_run`): the method's fields, a teacher it can take, and the
    student's own sampler in config.sample.sampler."""
    d = config.distill
    check_choice("distillation method (config.distill.method)", d.method, distillation.METHODS)
    check_distillable(config)
    if not isinstance(d.get("teacher", None), str):
        raise ValueError(f"config.distill.teacher must be the teacher's workdir, got {d.get('teacher', None)!r}.")
    if d.get("teacher_step", None) is not None:
        check_count("config.distill.teacher_step", d.teacher_step, 0)
    check_choice(f"sampler of a {d.method}-distilled student (config.sample.sampler)", config.sample.sampler,
                 (DISTILLED_SAMPLERS[d.method],))
    if d.get("teacher_prediction", None) is not None:  # the teacher's parametrization; the student's may differ
        _check_teacher_prediction(config, d.teacher_prediction)
    if d.method == "progressive":
        check_count("config.distill.teacher_steps", d.teacher_steps, 2)
        if d.teacher_steps & (d.teacher_steps - 1):
            raise ValueError("config.distill.teacher_steps must be a power of 2 (each round halves the steps down to "
                             f"1), got {d.teacher_steps}.")
        T = config.diffusion.num_timesteps
        if configs.objective(config) == "ddpm" and d.teacher_steps > T:
            raise ValueError(f"config.distill.teacher_steps = {d.teacher_steps} DDIM steps need as many distinct "
                             f"timesteps; the teacher's schedule has T = {T}.")
        check_choice("distillation weighting (config.distill.weighting)", d.weighting, distillation.WEIGHTINGS)
        check_choice("progressive teacher solver (config.distill.solver, the first round's)",
                     d.get("solver", distillation.PROGRESSIVE_SOLVER), distillation.PROGRESSIVE_SOLVERS)
        if d.get("steps", None) is not None:
            check_count("config.distill.steps", d.steps)
            if d.teacher_steps % d.steps:
                raise ValueError(f"config.distill.steps = {d.steps} must divide teacher_steps = {d.teacher_steps}.")
    else:
        check_count("config.distill.num_levels", d.num_levels, 2)
        if configs.objective(config) == "ddpm" and d.num_levels > config.diffusion.num_timesteps:
            raise ValueError(f"config.distill.num_levels = {d.num_levels} levels are distinct timesteps of the "
                             f"teacher's schedule, which has T = {config.diffusion.num_timesteps}.")
        check_choice("teacher ODE solver (config.distill.solver)", d.solver, distillation.TEACHER_SOLVERS)


def _check_teacher_prediction(config, prediction) -> None:
    """config.distill.teacher_prediction: a prediction the teacher's objective takes (as config.diffusion.prediction
    is checked for the student)."""
    name = "teacher prediction (config.distill.teacher_prediction)"
    if configs.objective(config) not in configs.CONTINUOUS_OBJECTIVES:
        check_choice(name, prediction, diffusion.PREDICTIONS)
        return
    teacher = copy.deepcopy(config)
    teacher.diffusion.prediction = prediction
    try:
        configs.objective(teacher)  # the objective's own check of its prediction
    except ValueError as e:
        raise ValueError(f"{name} {prediction!r} is not one the teacher's objective takes: {e}") from None


def _validate_posthoc_ema(section) -> None:
    """config.train.posthoc_ema: None, or dict(sigma_rels=distinct numbers in (0, 0.289), snapshot_every=N >= 1)."""
    if section is None:
        return
    if set(section.keys()) != {"sigma_rels", "snapshot_every"}:
        raise ValueError("config.train.posthoc_ema must be None (off) or dict(sigma_rels=(0.05, 0.1), "
                         f"snapshot_every=N), got {section.to_dict()}.")
    sigma_rels = section.sigma_rels
    if not isinstance(sigma_rels, (tuple, list)) or not sigma_rels or len(set(sigma_rels)) != len(sigma_rels):
        raise ValueError("config.train.posthoc_ema.sigma_rels must be a non-empty tuple of distinct numbers, got "
                         f"{sigma_rels!r}.")
    for value in sigma_rels:
        posthoc_ema.check_sigma_rel("config.train.posthoc_ema.sigma_rels", value)
    check_count("config.train.posthoc_ema.snapshot_every", section.snapshot_every)


def _validate_eval(config) -> None:
    """Evaluation during training: eval_every >= 0; when on, an image run (no latent, text or series data),
    eval_samples >= 2 and a feature network that is there and fits the data (`check_feature_network_spec`);
    keep_best only with it."""
    t = config.train
    check_count("config.train.eval_every", t.get("eval_every", 0), 0)
    if not t.get("eval_every", 0):
        if t.get("keep_best", False):
            raise ValueError("config.train.keep_best keeps the checkpoint of the best FID, which needs FID during "
                             "training: set config.train.eval_every > 0 (and eval_feature_net), or keep_best False.")
        return
    if (data.parse_source(config.data.source).kind == "series" or config.get("autoencoder", None) is not None
            or config.model.get("text", None) is not None):
        raise ValueError("config.train.eval_every measures FID/IS of pixel-space image models; this run is a "
                         "series, latent or text-to-image run: set config.train.eval_every = 0.")
    check_count("config.train.eval_samples", t.eval_samples, 2)
    sample_quality.check_feature_network_spec(t.get("eval_feature_net", None), configs.data_shape(config),
                                              f"config.train.eval_feature_net (for config.train.eval_every = "
                                              f"{t.eval_every} on {config.data.source!r})")


def _validate_dit(m) -> None:
    """A DiT section (config.model.arch = "dit"): only fields the DiT reads (a U-Net field such as ch or dropout
    left in it would be silently ignored), positive sizes, heads that divide the width, a known position embedding
    (the sin-cos one needs a width divisible by 4)."""
    fields = [f.name for f in dataclasses.fields(dit.DiT) if f.name not in ("parent", "name")]
    unread = sorted(set(m.keys()) - set(fields) - {"arch", "text"})
    if unread:
        raise ValueError(f"config.model sets {', '.join(unread)}, which a DiT (arch 'dit') does not read; its fields "
                         f"are {', '.join(fields)} (and text): see experiments/mnist_dit.py.")
    net = configs.module_from_section(dit.DiT, m)
    for name in ("hidden_size", "depth", "num_heads", "patch_size"):
        check_count(f"config.model.{name}", getattr(net, name))
    check_number("config.model.mlp_ratio", net.mlp_ratio, 0.0, low_open=True)
    check_choice("position embedding (config.model.pos_embed)", net.pos_embed, dit.POS_EMBEDS)
    if net.hidden_size % net.num_heads or (net.pos_embed == "sincos" and net.hidden_size % 4):
        raise ValueError(f"config.model.hidden_size = {net.hidden_size} must be divisible by num_heads "
                         f"({net.num_heads}) and, for the sin-cos position embedding, by 4.")


def _validate_series(config) -> None:
    """A series run: a window whose length the U-Net can halve, no image grids, no flips."""
    window = config.data.get("window", None)
    fields = ("context", "horizon", "test_size")
    if window is None or set(window.keys()) != set(fields):
        raise ValueError(f"a series source ({config.data.source!r}) needs config.data.window = dict(context=L, "
                         f"horizon=H, test_size=S) (steps), got {None if window is None else window.to_dict()}.")
    check_count("config.data.window.context", window.context, 2)
    check_count("config.data.window.horizon", window.horizon)
    check_count("config.data.window.test_size", window.test_size)
    check_count("config.data.period", config.data.get("period", 0), 0)
    halvings = len(config.model.ch_mult) - 1
    width = window.context + window.horizon
    if width % 2 ** halvings:
        raise ValueError(f"the window, context + horizon = {window.context} + {window.horizon} = {width} steps, "
                         f"cannot be halved {halvings} times by the U-Net (config.model.ch_mult = "
                         f"{tuple(config.model.ch_mult)}): make it a multiple of {2 ** halvings}, or use fewer levels.")
    if config.train.get("sample_every", 0) or config.data.random_flip:
        raise ValueError("a series run draws no image grids and flips nothing: set config.train.sample_every = 0 and "
                         "config.data.random_flip = False.")


def _validate_train(t) -> None:
    check_choice("optimizer (config.train.optimizer)", t.optimizer, optimizers.OPTIMIZERS)
    check_choice("lr schedule (config.train.lr_schedule)", t.lr_schedule, optimizers.LR_SCHEDULES)
    check_choice("config.train.checkpoint_if_busy", t.get("checkpoint_if_busy", "skip"), ("skip", "wait"))
    check_choice("parallelism (config.train.parallelism)", t.get("parallelism", "pmap"), parallel.PARALLELISMS)
    if t.get("mesh", None) is not None:
        parallel.check_mesh_shape(t.mesh.to_dict())
    for name in ("num_steps", "batch_size", "steps_per_call", "log_every", "checkpoint_every", "keep_checkpoints"):
        check_count(f"config.train.{name}", t[name])
    for name in ("warmup_steps", "sample_every"):
        check_count(f"config.train.{name}", t[name], 0)
    check_number("config.train.learning_rate", t.learning_rate, 0.0, low_open=True)
    if t.learning_rate > 1:
        warn_once(f"config.train.learning_rate = {t.learning_rate} is above 1: Adam moves every weight by up to "
                  "the learning rate per step, so training will likely diverge (typical: 1e-4 .. 1e-3).")
    for name in ("b1", "b2"):
        check_number(f"config.train.{name}", t[name], 0.0, 1.0, high_open=True)
    check_number("config.train.eps", t.eps, 0.0, low_open=True)
    check_number("config.train.ema_decay", t.ema_decay, 0.0, 1.0)
    check_number("config.train.label_dropout", t.get("label_dropout", 0.0), 0.0, 1.0, high_open=True)
    for name in ("weight_decay", "grad_clip"):
        check_number(f"config.train.{name}", t[name], 0.0)
