"""The ConfigDict boundary: build models, schedules, loss options and samplers from an experiment config.

Library functions take plain arguments; only this module (with train.py and the CLI) reads a ConfigDict.
An experiment config has the sections seed, data, model, diffusion, train, sample (see experiments/).
"""

from __future__ import annotations

import ast
import json
from typing import Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np

from ddpm_jax import functional, sampling, schedules, validation
from ddpm_jax.models import unet
from ddpm_jax.models.unet import UNet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def base_config() -> ml_collections.ConfigDict:
    """Every field an experiment has, at Ho et al.'s CIFAR-10 settings (experiments override what differs)."""
    return ml_collections.ConfigDict(dict(
        seed=0,
        data=dict(source="cifar10", data_dir=None, random_flip=True),
        model=dict(**unet.PRESETS["ddpm_cifar10"],
                   scale_shift_norm=False, num_classes=None, num_heads=1, norm_groups=32, dtype="float32",
                   remat=False),
        diffusion=dict(schedule="linear", num_timesteps=1000, zero_terminal_snr=False, schedule_options={},
                       prediction="eps", variance="fixed_large", loss_type="mse", weighting="none",
                       hybrid_lambda=1e-3, min_snr_gamma=5.0, p2_k=1.0, p2_gamma=1.0, importance_sampling=False),
        train=dict(num_steps=800_000, batch_size=128, optimizer="adam", learning_rate=2e-4, lr_schedule="constant",
                   warmup_steps=5000, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0,
                   ema_decay=0.9999, ema_warmup=False, label_dropout=0.0, steps_per_call=1,
                   log_every=100, checkpoint_every=10_000, sample_every=50_000, keep_checkpoints=3),
        sample=dict(sampler="ddim", num_steps=50, spacing=None, eta=0.0, num_images=64, clip_denoised=True,
                    per_device_batch=None),
    ))


def create_model(config: ml_collections.ConfigDict) -> UNet:
    """The U-Net of config.model; learn_sigma follows config.diffusion.variance == "learned_range"."""
    m = config.model
    validation.check_choice("model dtype", m.get("dtype", "float32"), tuple(DTYPES))
    return UNet(
        ch=m.ch,
        ch_mult=tuple(m.ch_mult),
        num_res_blocks=m.num_res_blocks,
        attn_resolutions=tuple(m.attn_resolutions),
        dropout=m.dropout,
        learn_sigma=config.diffusion.variance == "learned_range",
        scale_shift_norm=m.get("scale_shift_norm", False),
        num_classes=m.get("num_classes", None),
        num_heads=m.get("num_heads", 1),
        norm_groups=m.get("norm_groups", 32),
        dtype=DTYPES[m.get("dtype", "float32")],
        remat=m.get("remat", False),
    )


def create_schedule(config: ml_collections.ConfigDict) -> schedules.Schedule:
    d = config.diffusion
    betas = schedules.get_betas(
        d.schedule, d.num_timesteps, zero_terminal_snr=d.get("zero_terminal_snr", False),
        **dict(d.get("schedule_options", {})),
    )
    return schedules.make_schedule(betas)


def loss_options(config: ml_collections.ConfigDict) -> dict:
    """Keyword arguments of `losses.training_losses` from config.diffusion."""
    d = config.diffusion
    return dict(
        prediction=d.prediction, variance=d.variance, loss_type=d.loss_type, weighting=d.weighting,
        hybrid_lambda=d.hybrid_lambda, min_snr_gamma=d.min_snr_gamma, p2_k=d.p2_k, p2_gamma=d.p2_gamma,
    )


def sampler_options(config: ml_collections.ConfigDict, sampler: str | None = None, num_steps: int | None = None,
                    spacing: str | None = None, eta: float | None = None) -> dict:
    """The sampler and its keyword arguments (`sampling.sample`'s) from explicit values, else config.sample."""
    s, d = config.sample, config.diffusion
    own = sampler is None or sampler == s.sampler  # the config's settings belong to its own sampler
    sampler = sampler or s.sampler
    validation.check_choice("sampler", sampler, sampling.SAMPLERS)
    options = dict(sampler=sampler, prediction=d.prediction, clip_denoised=s.clip_denoised)
    if sampler == "ancestral":
        return dict(options, variance=d.variance)
    options.update(num_steps=num_steps if num_steps is not None else (s.num_steps if own else None),
                   spacing=spacing if spacing is not None else (s.get("spacing", None) if own else None))
    if sampler == "ddim":
        options["eta"] = eta if eta is not None else (s.eta if own else 0.0)
    elif eta:
        raise ValueError(f"eta is DDIM's; sampler {sampler!r} takes none (got eta={eta}).")
    return options


def sample(
    config: ml_collections.ConfigDict,
    params,
    rng,
    num_samples: int,
    image_shape: Sequence[int],
    *,
    sampler: str | None = None,
    num_steps: int | None = None,
    spacing: str | None = None,
    eta: float | None = None,
    labels=None,
    guidance_scale: float = 1.0,
    progress=None,
) -> np.ndarray:
    """`num_samples` images [N, H, W, C] in [-1, 1] from U-Net params, across all local devices.

    Sampler settings default to config.sample (its num_steps, spacing and eta apply when `sampler` is the
    config's sampler; other samplers default to their own, see `sampling.sampler_timesteps`); `labels` [N]
    condition a class-conditional model, guided with `guidance_scale` (classifier-free guidance; 1 = plain
    conditional).
    """
    model = create_model(config)
    sched = create_schedule(config)
    options = sampler_options(config, sampler, num_steps, spacing, eta)
    sampler = options.pop("sampler")
    conditional = model.num_classes is not None
    if labels is not None and not conditional:
        raise ValueError("labels were given but the model is unconditional (config.model.num_classes is None).")
    return sampling.sample_sharded(
        functional.bind(model.apply, params),
        sched,
        rng,
        num_samples,
        tuple(image_shape),
        sampler=sampler,
        labels=labels,
        guidance_scale=guidance_scale,
        null_label=model.null_label if conditional and labels is not None else None,
        per_device_batch=config.sample.get("per_device_batch", None),
        progress=progress,
        **options,
    )


# ---------------------------------------------------------------- config files and overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Apply command-line overrides "--config.train.batch_size=64" (or "train.batch_size=64") in place.

    Values are Python literals (64, 1e-3, (1, 2), True, None) or else strings; ConfigDict's type checks
    apply, so a wrong type is an error naming the field.

    Not `ml_collections.config_flags`: it cannot override fields whose default is None (model.num_classes,
    data.data_dir, sample.per_device_batch: "UnsupportedOperationError: Type NoneType ... not supported") unless
    they are declared as typed placeholders, which a config read back from a run's config.json is not; it
    reads sys.argv unless handed an argv, and an unknown field fails with a bare AttributeError.
    """
    for item in overrides:
        key, sep, text = item.removeprefix("--").removeprefix("config.").partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like --config.section.field=value")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        parent = config
        *path, field = key.split(".")
        for name in path:
            if name not in parent:
                raise ValueError(f"unknown config field {key!r}: no section {name!r}")
            parent = parent[name]
        if field not in parent:
            raise ValueError(f"unknown config field {key!r}; fields here: {', '.join(sorted(parent.keys()))}")
        if isinstance(parent[field], tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            parent[field] = value
        except TypeError as e:
            raise ValueError(f"bad value for {key!r}: {e}") from None
    return config


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """get_config() of an experiment file, with overrides applied."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("experiment_config", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load config file {path!r}: expected a Python file defining get_config().")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} defines no get_config().")
    return apply_overrides(module.get_config(), overrides)


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def from_json(text: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(tuples(json.loads(text)))


def tuples(value):
    """JSON lists back to tuples, as configs write sequences."""
    if isinstance(value, dict):
        return {k: tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(tuples(v) for v in value)
    return value
