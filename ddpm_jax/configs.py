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

from ddpm_jax import diffusion, functional, sampling, schedules
from ddpm_jax.models.unet import UNet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def base_config() -> ml_collections.ConfigDict:
    """Every field an experiment has, at Ho et al.'s CIFAR-10 settings (experiments override what differs)."""
    return ml_collections.ConfigDict(dict(
        seed=0,
        data=dict(source="cifar10", data_dir=None, random_flip=True),
        model=dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1,
                   scale_shift_norm=False, num_classes=None, num_heads=1, norm_groups=32, dtype="float32",
                   remat=False),
        diffusion=dict(schedule="linear", num_timesteps=1000, zero_terminal_snr=False, schedule_options={},
                       prediction="eps", variance="fixed_large", loss_type="mse", weighting="none",
                       hybrid_lambda=1e-3, min_snr_gamma=5.0, p2_k=1.0, p2_gamma=1.0, importance_sampling=False),
        train=dict(num_steps=800_000, batch_size=128, optimizer="adam", learning_rate=2e-4, lr_schedule="constant",
                   warmup_steps=5000, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0,
                   ema_decay=0.9999, ema_warmup=False, label_dropout=0.0, steps_per_call=1,
                   log_every=100, checkpoint_every=10_000, sample_every=50_000, keep_checkpoints=3),
        sample=dict(sampler="ddim", num_steps=50, eta=0.0, num_images=64, clip_denoised=True,
                    per_device_batch=None),
    ))


def create_model(config: ml_collections.ConfigDict) -> UNet:
    """The U-Net of config.model; learn_sigma follows config.diffusion.variance == "learned_range"."""
    m = config.model
    diffusion.check_choice("model dtype", m.get("dtype", "float32"), tuple(DTYPES))
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


def sample(
    config: ml_collections.ConfigDict,
    params,
    rng,
    num_samples: int,
    image_shape: Sequence[int],
    *,
    sampler: str | None = None,
    num_steps: int | None = None,
    eta: float | None = None,
    labels=None,
    guidance_scale: float = 1.0,
    progress=None,
) -> np.ndarray:
    """`num_samples` images [N, H, W, C] in [-1, 1] from U-Net params, across all local devices.

    Sampler settings default to config.sample; `labels` [N] condition a class-conditional model, guided with
    `guidance_scale` (classifier-free guidance; 1 = plain conditional).
    """
    model = create_model(config)
    sched = create_schedule(config)
    s, d = config.sample, config.diffusion
    sampler = sampler or s.sampler
    options = dict(prediction=d.prediction, clip_denoised=s.clip_denoised)
    if sampler == "ddim":
        options.update(num_steps=num_steps or s.num_steps, eta=s.eta if eta is None else eta)
    elif sampler == "ancestral":
        options.update(variance=d.variance)
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
        per_device_batch=s.get("per_device_batch", None),
        progress=progress,
        **options,
    )


# ---------------------------------------------------------------- config files and overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Apply command-line overrides "--config.train.batch_size=64" (or "train.batch_size=64") in place.

    Values are Python literals (64, 1e-3, (1, 2), True, None) or else strings; ConfigDict's type checks
    apply, so a wrong type is an error naming the field.
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
    return ml_collections.ConfigDict(_tuples(json.loads(text)))


def _tuples(value):
    """JSON lists back to tuples, as configs write sequences."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


# Sections whose change makes a checkpoint mean something else (another model shape, another process).
COMPATIBILITY_KEYS = ("model", "diffusion", "data.source")


def incompatibilities(saved: ml_collections.ConfigDict, current: ml_collections.ConfigDict) -> list[str]:
    """Dotted names of the fields in COMPATIBILITY_KEYS where the two configs differ."""
    flat_saved, flat_now = _flatten(saved.to_dict()), _flatten(current.to_dict())
    keys = sorted(set(flat_saved) | set(flat_now))
    return [
        k for k in keys
        if any(k == c or k.startswith(c + ".") for c in COMPATIBILITY_KEYS)
        and _tuples(flat_saved.get(k)) != _tuples(flat_now.get(k))
    ]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
