"""One home for checks of user-facing values: names from a fixed set, numbers in a range, whole configs.

The Python API and the CLI call these same functions, so both refuse the same values with the same message.
Values no run can mean are refused (ValueError naming the value and what is accepted) before anything is
loaded or compiled; legal values that are rarely meant (a learning rate above 1, DDIM's eta above 1) give one
`SuspiciousValueWarning` per process.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Iterable

import numpy as np


class SuspiciousValueWarning(UserWarning):
    """A legal value that is rarely meant: a learning rate above 1, DDIM's eta above 1."""


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """A SuspiciousValueWarning with `message`, the first time this message comes up in the process."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, SuspiciousValueWarning, stacklevel=3)


def check_choice(kind: str, value, accepted: Iterable[str]) -> None:
    """Raise ValueError naming `value` and the accepted names unless it is one of them."""
    accepted = tuple(accepted)
    if value not in accepted:
        raise ValueError(f"Unknown {kind} {value!r}; accepted: {', '.join(accepted)}.")


def check_count(name: str, value, minimum: int = 1) -> None:
    """Raise ValueError unless `value` is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def check_number(name: str, value, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> None:
    """Raise ValueError unless `value` is a finite real number between `low` and `high` (None: unbounded), the
    ends excluded where `low_open` / `high_open`."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and bool(np.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lower = "(-inf" if low is None else f"{'(' if low_open else '['}{low}"
        upper = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {lower}, {upper}, got {value!r}.")


def check_eta(eta, name: str = "eta") -> None:
    """DDIM's eta: refused below 0; above 1 (noisier than ancestral sampling, which DDIM allows) a warning."""
    check_number(name, eta, 0.0)
    if eta > 1:
        warn_once(f"DDIM eta = {eta} is above 1: each step adds more noise than ancestral sampling (eta = 1). "
                  "DDIM allows it, but it is rarely meant; 0 is deterministic.")


def check_labels(labels, num_classes: int, where: str) -> None:
    """Raise ValueError unless every label is in [0, num_classes), the range of a class-conditional model."""
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"{where}: labels must be in [0, {num_classes}) for a model with config.model.num_classes = "
            f"{num_classes}; {int(bad.sum())} of {labels.size} are outside it (min {labels.min()}, max "
            f"{labels.max()}). Fix the labels, or set config.model.num_classes to cover them.")


def parse_labels(text: str, name: str = "--labels") -> np.ndarray:
    """Comma-separated integer class labels ("3,7,1") as int32 [K]; ValueError naming the entry that is not one."""
    values = []
    for entry in str(text).split(","):
        try:
            values.append(int(entry))
        except ValueError:
            raise ValueError(f"{name} takes comma-separated integer class labels (e.g. {name} 3,7,1), got "
                             f"{entry.strip()!r} in {text!r}.") from None
    return np.asarray(values, np.int32)


def check_run_labels(labels, num_classes, text: bool, name: str = "--labels") -> None:
    """Labels given for a run: a text-conditional run takes a prompt, an unconditional one none, a
    class-conditional one labels in [0, num_classes). Checked from the run's config, before anything loads."""
    if text:
        raise ValueError(f"a text-conditional run takes --prompt, not {name}.")
    if num_classes is None:
        raise ValueError(f"{name} needs a class-conditional run; this one is unconditional (config.model.num_classes "
                         "is None): leave out the labels.")
    check_labels(labels, num_classes, name)


def check_evaluation_counts(num_samples, bpd_examples, samples_name: str = "num_samples",
                            bpd_name: str = "bpd_examples", *, feature_net=True,
                            feature_name: str = "feature_net") -> None:
    """evaluate's two counts: samples for the sample metrics (>= 0) and images for bits/dim (None: all; >= 0);
    both 0 would measure nothing and write an empty report, so that is refused; so is bits/dim 0 without a
    feature network (`feature_net` None: the sample metrics need one, so nothing would be measured either).
    `feature_net`: the feature network given (a spec or a network), or None; the default counts as given."""
    check_count(samples_name, num_samples, 0)
    if bpd_examples is not None:
        check_count(bpd_name, bpd_examples, 0)
    if num_samples == 0 and bpd_examples == 0:
        raise ValueError(f"{samples_name} 0 and {bpd_name} 0 leave nothing to evaluate: give {samples_name} >= 1 "
                         f"(with a feature network) for FID/IS/KID/precision-recall, or {bpd_name} >= 1 (or leave "
                         "it out: all images of the split) for bits/dim.")
    if bpd_examples == 0 and feature_net is None:
        raise ValueError(f"{bpd_name} 0 without {feature_name} leaves nothing to evaluate: the sample metrics need "
                         f"a feature network and {bpd_name} 0 skips bits/dim. Give {feature_name} classifier:DIR, "
                         f"inception:WEIGHTS.npz or inception:packaged (with {samples_name} >= 1) for "
                         f"FID/IS/KID/precision-recall, or {bpd_name} >= 1 (or leave it out: all images of the "
                         "split) for bits/dim.")


def check_guidance(guidance_scale, conditional: bool, has_labels: bool) -> None:
    """Classifier-free guidance: a scale other than 1 needs a class-conditional model and labels."""
    check_number("guidance scale", guidance_scale)
    if guidance_scale != 1 and not (conditional and has_labels):
        raise ValueError(
            f"guidance scale {guidance_scale} needs class labels: classifier-free guidance mixes the conditional and "
            "unconditional predictions of a class-conditional model. "
            + ("Pass labels (--labels)." if conditional else "This model is unconditional (config.model.num_classes "
               "is None): use guidance scale 1."))


def check_sampler_settings(num_steps=None, eta=None) -> None:
    """A sampler's num_steps (None: its default; else an integer >= 1; the schedule bounds it when sampling) and
    eta (None, or see `check_eta`)."""
    if num_steps is not None:
        check_count("num_steps", num_steps)
    if eta is not None:
        check_eta(eta)


def validate_config(config, *, training: bool = True) -> None:
    """Refuse the config values no run can mean and warn once about suspicious ones, before anything loads or
    compiles. `training=False` skips config.train (for sampling from a trained run)."""
    # Imported here: these modules import this one for check_choice.
    from ddpm_jax import configs, data, diffusion, losses, sampling, schedules, train

    m, d, s = config.model, config.diffusion, config.sample
    check_choice("model dtype (config.model.dtype)", m.get("dtype", "float32"), tuple(configs.DTYPES))
    if m.get("num_classes", None) is not None:
        check_count("config.model.num_classes", m.num_classes)
    check_number("config.model.dropout", m.dropout, 0.0, 1.0, high_open=True)
    check_count("config.diffusion.num_timesteps", d.num_timesteps)
    check_choice("prediction (config.diffusion.prediction)", d.prediction, diffusion.PREDICTIONS)
    check_choice("variance (config.diffusion.variance)", d.variance, diffusion.VARIANCES)
    check_choice("loss type (config.diffusion.loss_type)", d.loss_type, losses.LOSS_TYPES)
    check_choice("weighting (config.diffusion.weighting)", d.weighting, losses.WEIGHTINGS)
    check_choice("sampler (config.sample.sampler)", s.sampler, sampling.SAMPLERS)
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
            _validate_train(configs.autoencoder_train_config(config), train)
    if config.model.get("text", None) is not None:
        text = config.model.text
        for name in ("max_length", "width", "depth", "num_heads"):
            check_count(f"config.model.text.{name}", text[name], 2 if name == "max_length" else 1)
    if training:
        _validate_train(config.train, train)


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


def _validate_train(t, train) -> None:
    check_choice("optimizer (config.train.optimizer)", t.optimizer, train.OPTIMIZERS)
    check_choice("lr schedule (config.train.lr_schedule)", t.lr_schedule, train.LR_SCHEDULES)
    check_choice("config.train.checkpoint_if_busy", t.get("checkpoint_if_busy", "skip"), ("skip", "wait"))
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
