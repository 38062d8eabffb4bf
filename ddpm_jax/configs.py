"""The ConfigDict boundary: build models, schedules and loss options from an experiment config.

Library functions take plain arguments; only this module (with train.py, `runs`, which samples and forecasts a
run, `config_schema` and the CLI) reads a ConfigDict.
An experiment config has the sections seed, data, model, diffusion, train, sample (see experiments/).
"""

from __future__ import annotations

import ast
import dataclasses
import json
from typing import Callable, NamedTuple, Sequence

import jax.numpy as jnp
import ml_collections

from ddpm_jax import data, distillation, objectives, parallel, processes, schedules, validation, vdm
from ddpm_jax.models import unet
from ddpm_jax.models.autoencoder import Autoencoder
from ddpm_jax.models.dit import DiT
from ddpm_jax.models.text import TextEncoder, TextUNet, Tokenizer
from ddpm_jax.models.unet import UNet
from ddpm_jax.models.time_scaled import EDMPreconditioned, TimeScaled
from ddpm_jax.models.unet1d import UNet1D

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# config.model.arch: U-Net or Diffusion Transformer on images [B, H, W, C]; U-Net on sequences [B, L, C]
ARCHITECTURES = {"unet": UNet, "dit": DiT, "unet1d": UNet1D}


def base_config() -> ml_collections.ConfigDict:
    """Every field an experiment has, at Ho et al.'s CIFAR-10 settings (experiments override what differs)."""
    return ml_collections.ConfigDict(dict(
        seed=0,
        data=dict(source="cifar10", data_dir=None, image_size=None, random_flip=True),
        model=dict(**unet.PRESETS["ddpm_cifar10"],
                   scale_shift_norm=False, num_classes=None, num_heads=1, norm_groups=32, dtype="float32",
                   remat=False, patch_size=1, cross_attention_positions=False),
        diffusion=dict(schedule="linear", num_timesteps=1000, zero_terminal_snr=False, schedule_options={},
                       prediction="eps", variance="fixed_large", loss_type="mse", weighting="none",
                       hybrid_lambda=1e-3, min_snr_gamma=5.0, p2_k=1.0, p2_gamma=1.0, importance_sampling=False),
        train=dict(num_steps=800_000, batch_size=128, optimizer="adam", learning_rate=2e-4, lr_schedule="constant",
                   warmup_steps=5000, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0,
                   ema_decay=0.9999, ema_warmup=False, label_dropout=0.0, steps_per_call=1,
                   log_every=100, checkpoint_every=10_000, sample_every=50_000, keep_checkpoints=3,
                   async_checkpointing=True, checkpoint_if_busy="skip",
                   # post-hoc EMA (EDM2): None (off) or dict(sigma_rels=(0.05, 0.10), snapshot_every=N), see
                   # posthoc_ema.py
                   posthoc_ema=None,
                   # FID/IS every eval_every steps (0: off) of eval_samples EMA samples, scored by eval_feature_net
                   # ("classifier:DIR" | "inception:WEIGHTS.npz" | "inception:packaged"); keep_best: WORKDIR/best
                   # holds the checkpoint of the best FID (train_eval.py)
                   eval_every=0, eval_samples=500, eval_feature_net=None, keep_best=False,
                   # "pmap" or "sharded": jit over a mesh of mesh.data x mesh.fsdp devices (-1: the rest), see
                   # parallel.py; resuming on another layout or device count is fine
                   parallelism="pmap", mesh=dict(data=-1, fsdp=1)),
        # sampler: `sampling.DEFAULT_SAMPLER`; num_steps and spacing None: the sampler's own (`sampling.SAMPLERS`)
        sample=dict(sampler="dpm++2m", num_steps=None, spacing=None, eta=0.0, num_images=64, clip_denoised=True,
                    per_device_batch=None),
    ))


def use_flow_matching(config: ml_collections.ConfigDict, t_distribution: str = "uniform") -> ml_collections.ConfigDict:
    """`config` switched to flow matching, in place (and returned): objective "flow", the velocity target, weighting
    "none" (its MSE has its own), t ~ `t_distribution` ("uniform" or "logit_normal")."""
    config.diffusion.update(objective="flow", prediction="velocity", weighting="none")
    config.diffusion.flow = ml_collections.ConfigDict(dict(t_distribution=t_distribution))
    return config


def objective(config: ml_collections.ConfigDict) -> str:
    """config.diffusion.objective: "ddpm" (also when the field is absent), "vdm", a variational diffusion model
    (Kingma et al. 2021) with the options of config.diffusion.vdm (see experiments/digits_vdm.py), or "flow", flow
    matching on rectified flow (config.diffusion.prediction "velocity", "x0" or "v"; config.diffusion.flow =
    dict(t_distribution="uniform" | "logit_normal"), optional; see experiments/digits_flow.py), or "edm", Karras et
    al. 2022's preconditioned x0 model and weighted loss on `processes.edm` (config.diffusion.edm, optional; see
    experiments/digits_edm.py), checked here."""
    name = config.diffusion.get("objective", "ddpm")
    validation.check_choice("objective (config.diffusion.objective)", name, OBJECTIVES)
    OBJECTIVES[name].check(config)
    return name


def data_options(config: ml_collections.ConfigDict) -> dict:
    """Keyword arguments of `data.load_arrays` and `data.image_shape` from config.data: data_dir, the image_size
    of an image folder, and the window (context, horizon, test_size) of a series source."""
    window = config.data.get("window", None)
    return dict(data_dir=config.data.get("data_dir", None), image_size=config.data.get("image_size", None),
                window=None if window is None else window.to_dict())


def data_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The shape of one example of config.data: (H, W, C) for images, (context + horizon, C) for series."""
    return data.image_shape(config.data.source, **data_options(config))


def _check_plain_mse(d: ml_collections.ConfigDict, needs: str, prediction: str | None = None) -> None:
    """A continuous-process objective (CONTINUOUS_OBJECTIVES) trains a plain MSE: refuse a learned variance, another
    loss type or weighting, importance sampling and (given `prediction`) another prediction; `needs` starts the
    message."""
    importance = d.get("importance_sampling", False)
    if ((prediction is not None and d.prediction != prediction) or d.variance == "learned_range"
            or d.loss_type != "mse" or d.weighting != "none" or importance):
        got = ([repr(d.prediction)] if prediction is not None else []) + [
            repr(d.variance), repr(d.loss_type), repr(d.weighting), str(importance)]
        raise ValueError(f"{needs}variance other than 'learned_range', loss_type 'mse', weighting 'none' and "
                         f"importance_sampling False; got {', '.join(got)}.")


def create_model(config: ml_collections.ConfigDict) -> UNet | DiT | vdm.VDM | TextUNet:
    """The network of config.model (config.model.arch, default "unet": `ARCHITECTURES`; "dit" reads the DiT's
    fields, hidden_size, depth, num_heads, mlp_ratio, patch_size, pos_embed, from the section); learn_sigma follows
    config.diffusion.variance == "learned_range". With config.diffusion.objective = "vdm", a `vdm.VDM` around
    that network; with a section config.model.text, a `TextUNet`: the network with cross-attention and the text
    encoder of that section (see `tokenizer`)."""
    m = config.model
    text = m.get("text", None)
    validation.check_choice("model dtype", m.get("dtype", "float32"), tuple(DTYPES))
    validation.check_choice("model architecture (config.model.arch)", m.get("arch", "unet"), tuple(ARCHITECTURES))
    net = module_from_section(ARCHITECTURES[m.get("arch", "unet")], m,
                              learn_sigma=config.diffusion.variance == "learned_range",
                              dtype=DTYPES[m.get("dtype", "float32")], cross_attention=text is not None)
    if text is not None:
        encoder = TextEncoder(vocab_size=tokenizer(config).vocab_size, max_length=text.max_length, width=text.width,
                              depth=text.depth, num_heads=text.num_heads, dtype=net.dtype)
        return TextUNet(unet=net, encoder=encoder)
    return OBJECTIVES[objective(config)].model(config, net)


def module_from_section(cls, section: ml_collections.ConfigDict, **derived):
    """`cls(**fields)`: every field of the Flax module `cls` that the config section sets (sequences as tuples; the
    section's other keys, such as arch or text, are not fields and are left out), then `derived` (fields computed
    from elsewhere in the config, which win)."""
    names = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    given = {k: tuples(v) for k, v in section.to_dict().items() if k in names}
    return cls(**dict(given, **derived))


def tokenizer(config: ml_collections.ConfigDict) -> Tokenizer:
    """The tokenizer of config.model.text: its vocabulary (filled in from the training captions when a run starts,
    and saved with the run's config) and max_length."""
    text = config.model.text
    if not text.get("vocabulary", None):
        raise ValueError("config.model.text.vocabulary is empty: training fills it in from the data's captions "
                         "(a run's saved config has it).")
    return Tokenizer(tuple(text.vocabulary), int(text.max_length))


def create_autoencoder(config: ml_collections.ConfigDict) -> Autoencoder | None:
    """The first-stage autoencoder of config.autoencoder (latent diffusion), or None without that section."""
    a = config.get("autoencoder", None)
    if a is None:
        return None
    return Autoencoder(ch=a.ch, ch_mult=tuple(a.ch_mult), num_res_blocks=a.num_res_blocks,
                       latent_channels=a.latent_channels, out_channels=a.out_channels, norm_groups=a.norm_groups)


def autoencoder_train_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The first stage's training settings: base_config()'s train section updated with config.autoencoder.train."""
    t = base_config().train
    t.update(config.autoencoder.train.to_dict())
    return t


def create_schedule(config: ml_collections.ConfigDict, params=None) -> schedules.Schedule | processes.Process:
    """The process the samplers use: the discrete schedule (also DDPM's VLB's); a VDM's is its gamma on the T-grid
    (`vdm.sampling_schedule`), which for a learned schedule lives in the params: pass them; flow matching's is
    `processes.rectified_flow`."""
    return OBJECTIVES[objective(config)].process(config, params)


def create_objective(config: ml_collections.ConfigDict):
    """The training objective of config.diffusion (`ddpm_jax.objectives`): DDPM's denoising loss on the config's
    schedule with its loss options, VDM's VLB, or flow matching; with a section config.distill, the distillation
    of config.distill.method (`objectives.Progressive`, `objectives.Consistency`) on the teacher's process."""
    distill = config.get("distill", None)
    if distill is None:
        return OBJECTIVES[objective(config)].objective(config)
    process, prediction = create_schedule(config), config.diffusion.prediction
    teacher_prediction = distill.get("teacher_prediction", None)
    if distill.method == "progressive":
        return objectives.Progressive(process, prediction, int(distill.steps), distill.weighting, teacher_prediction,
                                      distill.get("solver", distillation.PROGRESSIVE_SOLVER))
    return objectives.Consistency(process, prediction, int(distill.num_levels), distill.solver, teacher_prediction)


def create_layout(config: ml_collections.ConfigDict, devices=None) -> parallel.Pmap | parallel.Sharded:
    """The run's device layout: config.train.parallelism ("pmap", the default, or "sharded" over a mesh of
    config.train.mesh's shape) over `devices` (default: all devices, of all processes). Training runs on it, and
    a run's sampling (`runs.sample`) and bits/dim (`evaluate`) too."""
    t_cfg = config.train
    mesh = t_cfg.get("mesh", None)
    return parallel.make_layout(t_cfg.get("parallelism", "pmap"), None if mesh is None else mesh.to_dict(), devices)


def _edm_process(config: ml_collections.ConfigDict) -> processes.EDM:
    """EDM's process from config.diffusion.edm (sigma_min, sigma_max, sigma_data, rho, P_mean, P_std; any left out
    take Karras et al.'s values)."""
    return processes.edm(**dict(config.diffusion.get("edm", {})))


def _flow_t_distribution(config: ml_collections.ConfigDict) -> str:
    return config.diffusion.get("flow", {}).get("t_distribution", "uniform")


def loss_options(config: ml_collections.ConfigDict) -> dict:
    """Keyword arguments of `losses.training_losses` from config.diffusion (of `vdm.training_loss_and_grads` for a
    VDM): the objective's own (`create_objective(config).loss_options`)."""
    return create_objective(config).loss_options


# ---------------------------------------------------------------- one row per objective


def _ddpm_loss_options(config: ml_collections.ConfigDict) -> dict:
    d = config.diffusion
    return dict(
        prediction=d.prediction, variance=d.variance, loss_type=d.loss_type, weighting=d.weighting,
        hybrid_lambda=d.hybrid_lambda, min_snr_gamma=d.min_snr_gamma, p2_k=d.p2_k, p2_gamma=d.p2_gamma,
    )


def _discrete_schedule(config: ml_collections.ConfigDict, params=None) -> schedules.Schedule:
    d = config.diffusion
    betas = schedules.get_betas(
        d.schedule, d.num_timesteps, zero_terminal_snr=d.get("zero_terminal_snr", False),
        **dict(d.get("schedule_options", {})),
    )
    return schedules.make_schedule(betas)


def _check_flow(config: ml_collections.ConfigDict) -> None:
    d = config.diffusion
    validation.check_choice("prediction of flow matching (config.diffusion.prediction)", d.prediction,
                            objectives.flow.PREDICTIONS)
    validation.check_choice("flow matching's t distribution (config.diffusion.flow.t_distribution)",
                            _flow_t_distribution(config), processes.T_DISTRIBUTIONS)
    _check_plain_mse(d, "flow matching regresses its prediction's target with a plain MSE: it needs "
                        "config.diffusion.")


def _check_edm(config: ml_collections.ConfigDict) -> None:
    _check_plain_mse(config.diffusion, "EDM trains its preconditioned denoiser, an x0 model, with its own weighting: "
                                       "it needs config.diffusion.prediction = 'x0', ", prediction="x0")


def _check_vdm(config: ml_collections.ConfigDict) -> None:
    d = config.diffusion
    if "vdm" not in d:
        raise ValueError("config.diffusion.objective = 'vdm' needs the section config.diffusion.vdm (schedule, "
                         "gamma_min, gamma_max, schedule_features, loss_steps, antithetic): see "
                         "experiments/digits_vdm.py.")
    validation.check_choice("VDM schedule (config.diffusion.vdm.schedule)", d.vdm.schedule, vdm.SCHEDULES)
    validation.check_count("config.diffusion.vdm.loss_steps", d.vdm.loss_steps, 0)
    if d.prediction != "eps" or d.variance == "learned_range" or d.get("importance_sampling", False):
        raise ValueError("a VDM predicts eps with a fixed reverse variance and samples t itself: it needs "
                         "config.diffusion.prediction = 'eps', variance 'fixed_small' or 'fixed_large' and "
                         f"importance_sampling False; got {d.prediction!r}, {d.variance!r}, "
                         f"{d.get('importance_sampling', False)}.")


def _vdm_model(config: ml_collections.ConfigDict, net) -> vdm.VDM:
    v = config.diffusion.vdm
    return vdm.VDM(unet=net, schedule=v.schedule, gamma_min=v.gamma_min, gamma_max=v.gamma_max,
                   schedule_features=v.schedule_features, num_timesteps=config.diffusion.num_timesteps)


def _vdm_schedule(config: ml_collections.ConfigDict, params=None) -> schedules.Schedule:
    """A VDM's gamma on the T-grid (`vdm.sampling_schedule`); a learned schedule lives in the params."""
    d = config.diffusion
    if params is not None:
        return vdm.sampling_schedule(create_model(config), params)
    if d.vdm.schedule == "learned":
        raise ValueError("a learned VDM schedule is part of the params: call create_schedule(config, params).")
    fixed = {"linear": vdm.linear_gamma, "cosine": vdm.cosine_gamma}[d.vdm.schedule]
    return vdm.discrete_schedule(fixed(d.vdm.gamma_min, d.vdm.gamma_max), d.num_timesteps)


def _time_scale(config: ml_collections.ConfigDict) -> float:
    """A continuous level fed to the U-Net as T t (`models.time_scaled`): the time range its embedding was made for."""
    return float(config.diffusion.num_timesteps)


class ObjectiveRecipe(NamedTuple):
    """How a config builds one objective (config.diffusion.objective): its checks of config.diffusion, the model
    around the network, the process the samplers use (given the params, for a learned one), the training
    objective (`ddpm_jax.objectives`). A new objective is its module in objectives/ and one row of `OBJECTIVES`."""

    check: Callable
    model: Callable
    process: Callable
    objective: Callable
    continuous: bool = False  # sampled on a continuous process: no "ancestral", no bits/dim


OBJECTIVES = {
    "ddpm": ObjectiveRecipe(
        check=lambda config: None, model=lambda config, net: net, process=_discrete_schedule,
        objective=lambda config: objectives.Denoising(_discrete_schedule(config), _ddpm_loss_options(config))),
    "vdm": ObjectiveRecipe(
        check=_check_vdm, model=_vdm_model, process=_vdm_schedule,
        objective=lambda config: objectives.VDM(dict(num_steps=config.diffusion.vdm.loss_steps,
                                                     antithetic=config.diffusion.vdm.antithetic))),
    "flow": ObjectiveRecipe(
        check=_check_flow, model=lambda config, net: TimeScaled(net=net, scale=_time_scale(config)),
        process=lambda config, params=None: processes.rectified_flow(_flow_t_distribution(config)),
        objective=lambda config: objectives.flow_matching(config.diffusion.prediction, _flow_t_distribution(config)),
        continuous=True),
    "edm": ObjectiveRecipe(
        check=_check_edm,
        model=lambda config, net: EDMPreconditioned(net=net, sigma_data=_edm_process(config).sigma_data,
                                                    scale=_time_scale(config)),
        process=lambda config, params=None: _edm_process(config),
        objective=lambda config: objectives.edm(_edm_process(config)), continuous=True),
}
CONTINUOUS_OBJECTIVES = tuple(name for name, row in OBJECTIVES.items() if row.continuous)


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
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:  # the file and line first, then what Python says
        raise ValueError(f"{e.filename}, line {e.lineno}: {e.msg} (a syntax error in the config file)\n"
                         f"    {(e.text or '').strip()}") from None
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
