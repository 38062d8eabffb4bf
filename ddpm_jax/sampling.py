"""Samplers: ancestral (Ho et al. 2020, alg. 2) and DDIM (Song et al. 2021), each ONE compiled `lax.scan`.

Randomness is per sample: sample i of a call draws from fold_in(rng, first_index + i), its x_T from
fold_in(that, T) and its step-t noise from fold_in(that, t). A sample is therefore the same whatever the
batch it is drawn in or the number of devices (see `sample_sharded`).

Pass `model_fn` as a `jax.tree_util.Partial` (`functional.bind(unet.apply, params)`) so that params are
traced inputs: each sampler then compiles once per shape and setting, whatever the params.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from ddpm_jax import diffusion, functional, parallel, processes, schedules, solvers
from ddpm_jax.keys import example_keys
from ddpm_jax.diffusion import PREDICTIONS, VARIANCES
from ddpm_jax.reverse_loop import (Trajectory, initial_noise, known_pixels, per_sample_normal,  # noqa: F401
                                   reverse_loop)  # Trajectory: public as sampling.Trajectory
from ddpm_jax.validation import check_choice
from ddpm_jax.schedules import Schedule

SPACINGS = ("uniform", "trailing")  # ddim_sample's own names ("uniform" is the DDIM paper's, `sample`'s "leading")
SAMPLERS = ("ancestral", "ddim") + solvers.SOLVERS
DEFAULT_NUM_STEPS = dict({"ddim": 50}, **{name: 20 for name in solvers.SOLVERS})  # ancestral: all T


def sampler_timesteps(sched: Schedule, sampler: str, num_steps: int | None = None,
                      spacing: str | None = None) -> tuple[int, ...]:
    """The timesteps `sampler` visits, noisiest first, before its last step to alpha_bar = 1 (t = -1).

    All T, from T - 1 to 0, for "ancestral". num_steps None: DEFAULT_NUM_STEPS; spacing None: the sampler's own
    default ("leading" for DDIM, `solvers.DEFAULT_SPACING` for the solvers). Needs a concrete Schedule.
    For a continuous process (`processes`): its float times `proc.levels(num_steps)`, [N + 1] ending at 0.
    """
    check_choice("sampler", sampler, SAMPLERS)
    if processes.is_process(sched):
        _check_process_sampler(sched, sampler, spacing)
        return tuple(float(t) for t in sched.levels(DEFAULT_NUM_STEPS[sampler] if num_steps is None else num_steps))
    if spacing is not None:
        check_choice("spacing", spacing, schedules.SPACINGS)
    if sampler == "ancestral":
        if num_steps not in (None, sched.num_timesteps) or spacing is not None:
            raise ValueError(f"ancestral sampling visits all T = {sched.num_timesteps} timesteps: it takes no "
                             f"num_steps or spacing (got {num_steps}, {spacing}); use 'ddim' with eta=1 for "
                             "ancestral-like sampling over fewer steps.")
        return tuple(range(sched.num_timesteps - 1, -1, -1))
    num_steps, spacing = step_defaults(sampler, num_steps, spacing)
    return tuple(int(t) for t in schedules.spaced_timesteps(sched, num_steps, spacing))


def _check_process_sampler(proc, sampler: str, spacing: str | None = None) -> None:
    """ValueError for "ancestral" or a spacing on a continuous process."""
    check_choice("sampler", sampler, SAMPLERS)
    if sampler == "ancestral":
        raise ValueError(
            f"sampler 'ancestral' (Ho et al. alg. 2) samples the discrete VP process of a Schedule; a continuous "
            f"process ({type(proc).__name__}) takes 'ddim' (with eta > 0 for stochastic steps), 'dpm++2m-sde' or an "
            f"ODE solver: {', '.join(solvers.PROCESS_SOLVERS)}."
        )
    if spacing is not None:
        raise ValueError(f"spacing {spacing!r} picks a Schedule's timesteps; a process has its own levels "
                         "(proc.levels(num_steps)): pass float `timesteps` to choose others.")


def check_known(known, shape):
    """(images, mask) as float32 arrays: images of `shape`, mask broadcastable to it, values in [0, 1]."""
    images, mask = (jnp.asarray(a, jnp.float32) for a in known)
    if bool(jnp.any((mask < 0) | (mask > 1))):
        raise ValueError("mask values must be in [0, 1] (1 = generate, 0 = keep).")
    if images.shape != tuple(shape):
        raise ValueError(f"the known images have shape {images.shape}; expected the samples' {tuple(shape)}.")
    try:
        mask = jnp.broadcast_to(mask, images.shape)
    except ValueError:
        raise ValueError(f"the mask's shape {mask.shape} does not broadcast to the images' {images.shape} "
                         "(use [B, H, W, C], [B, H, W, 1] or [H, W, 1]).") from None
    return images, mask


def step_defaults(sampler: str, num_steps: int | None = None, spacing: str | None = None) -> tuple[int, str]:
    """(num_steps, spacing) with None replaced by the sampler's defaults (not for "ancestral")."""
    num_steps = DEFAULT_NUM_STEPS[sampler] if num_steps is None else num_steps
    return num_steps, spacing or ("leading" if sampler == "ddim" else solvers.DEFAULT_SPACING[sampler])


def sample(
    model_fn: Callable,
    sched: Schedule | processes.Process,
    rng,
    shape,
    *,
    sampler: str = "dpm++2m",
    num_steps: int | None = None,
    prediction: str = "eps",
    clip_denoised: bool = False,
    x_T=None,
    spacing: str | None = None,
    eta: float = 0.0,
    variance: str = "fixed_small",
    timesteps=None,
    first_index: int = 0,
    trajectory_steps: int = 0,
    known=None,
):
    """Every sampler behind one entry: x_0 [B, ...] (or (x_0, Trajectory) with trajectory_steps > 0).

    sampler: "ancestral" (Ho et al. alg. 2 over all T steps, with `variance`), "ddim" (Song et al., with `eta`),
      or a solver of `ddpm_jax.solvers`: "euler", "heun" (Karras et al. 2022), "dpm++2m", "dpm++3m",
      "dpm++2m-sde" (Lu et al. 2022), "unipc" (Zhao et al. 2023).
    num_steps, spacing: how many and which timesteps are visited (`sampler_timesteps`; spacings
      `schedules.SPACINGS`: "linspace", "leading", "trailing", "karras"); or give `timesteps` (decreasing ints).
    x_T: the state at the first visited timestep (t = T - 1 for ancestral and the linspace/trailing spacings),
      in the variance-preserving coordinates of `q_sample`; drawn per sample from fold_in(rng, first_index + i)
      if None. model_fn(x_t, t) is called with int32 t [B] at the visited timesteps only.
    known: (images, mask) for inpainting (mask 1 = generate, 0 = keep; see `editing.inpaint`).

    `sched` may also be a continuous process (`processes.rectified_flow()`, `edm()`, `vdm(gamma_fn)`): then
    every sampler but "ancestral" runs over `proc.levels(num_steps)` (or float `timesteps` [N + 1] ending at 0;
    no spacing), model_fn(x_t, t) gets float32 t [B] as it is, `prediction` may also be "velocity", and x_T is
    the state at the first level, sigma(t_0) z if drawn (see `solvers.solve`).
    """
    if sampler != "ddim" and eta != 0:
        raise ValueError(f"eta is DDIM's stochasticity (0 = deterministic); sampler {sampler!r} takes none, "
                         f"got eta={eta}.")
    if processes.is_process(sched):
        _check_process_sampler(sched, sampler, spacing)
        if timesteps is None:
            timesteps = sampler_timesteps(sched, sampler, num_steps)
        return solvers.solve(
            model_fn, sched, rng, shape, solver=sampler, timesteps=timesteps, prediction=prediction,
            clip_denoised=clip_denoised, x_T=x_T, first_index=first_index, trajectory_steps=trajectory_steps,
            known=None if known is None else check_known(known, shape), eta=eta)
    if timesteps is None:
        timesteps = sampler_timesteps(sched, sampler, num_steps, spacing)
    else:
        check_choice("sampler", sampler, SAMPLERS)
    if known is not None:
        known = check_known(known, shape)
    common = dict(prediction=prediction, clip_denoised=clip_denoised, x_T=x_T, first_index=first_index,
                  trajectory_steps=trajectory_steps, known=known)
    if sampler == "ancestral":
        ts = solvers.check_timesteps(timesteps, sched.num_timesteps)
        if ts[-1] != 0 or np.any(np.diff(ts) != -1):
            raise ValueError("ancestral sampling visits every timestep down to 0: its timesteps must be "
                             f"consecutive, from some start to 0; got {len(ts)} from {ts[0]} to {ts[-1]}.")
        return _ancestral_from(model_fn, sched, rng, shape, ts[0], variance=variance, **common)
    if sampler == "ddim":
        return _ddim_over(model_fn, sched, rng, shape, solvers.check_timesteps(timesteps, sched.num_timesteps),
                          eta=eta, **common)
    return solvers.solve(model_fn, sched, rng, shape, solver=sampler, timesteps=timesteps, **common)


def ddim_timesteps(num_timesteps: int, num_steps: int, spacing: str = "uniform") -> np.ndarray:
    """The increasing timesteps a DDIM sampler visits: int32 [S].

    "uniform": range(0, T, T // num_steps), as the DDIM paper (S may exceed num_steps when it does not divide
    T). "trailing": round(T - k T / num_steps) - 1 for k < num_steps, which starts at t = T - 1 (Lin et al.
    2024, for zero-terminal-SNR schedules).
    """
    check_choice("timestep spacing", spacing, SPACINGS)
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_timesteps}] (the schedule's T), got {num_steps}.")
    if spacing == "uniform":
        return np.arange(0, num_timesteps, num_timesteps // num_steps, dtype=np.int32)
    return np.round(np.arange(num_timesteps, 0, -num_timesteps / num_steps)).astype(np.int32)[::-1] - 1


# ---------------------------------------------------------------- ancestral sampling


def _inpainting(known, keys, sched, ts):
    """The loop's projection onto the known pixels (None without `known`); levels: ts, then alpha_bar = 1."""
    if known is None:
        return None
    lv = schedules.levels(sched, ts)
    return known_pixels(known, keys, lv.alpha, lv.sigma, sched.num_timesteps)


@functools.partial(
    jax.jit, static_argnames=("shape", "start", "prediction", "variance", "clip_denoised", "trajectory_steps")
)
def _ancestral(model_fn, sched, rng, x_T, first_index, known, shape, start, prediction, variance, clip_denoised,
               trajectory_steps):
    T = sched.num_timesteps
    keys = example_keys(rng, shape[0], first_index)
    ts = np.arange(start, -1, -1, dtype=np.int32)

    def step(x, i):
        t_scalar = jnp.asarray(ts)[i]
        t = jnp.full((shape[0],), t_scalar, jnp.int32)
        out = diffusion.p_mean_variance(
            sched, model_fn(x, t), x, t, prediction=prediction, variance=variance, clip_denoised=clip_denoised
        )
        noise = per_sample_normal(keys, t_scalar, shape)
        # No noise at t = 0 (Ho alg. 2, line 4): the sample is the mean.
        x_prev = out["mean"] + jnp.where(t_scalar > 0, jnp.exp(0.5 * out["log_variance"]), 0.0) * noise
        return x_prev, out["pred_x0"]

    return reverse_loop(step, initial_noise(keys, x_T, shape, T), ts, trajectory_steps,
                        project=_inpainting(known, keys, sched, ts))


def ancestral_sample(
    model_fn: Callable,
    sched: Schedule,
    rng,
    shape,
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip_denoised: bool = True,
    x_T=None,
    first_index: int = 0,
    trajectory_steps: int = 0,
):
    """Ho et al. alg. 2: x_{t-1} = mu_theta(x_t, t) + sigma_t z for t = T-1 .. 0, no noise at the last step.

    Args:
      model_fn: model_fn(x_t [B,H,W,C], t [B]) -> [B,H,W,C] (or 2C channels for variance="learned_range").
      shape: (B, H, W, C) of the samples.
      x_T: start from this noise [B,H,W,C] instead of drawing it.
      first_index: global index of sample 0 (its randomness is fold_in(rng, first_index + i)).
      trajectory_steps: K > 0 also returns a `Trajectory` of K evenly spaced steps.
    Returns:
      x_0 float32 [B,H,W,C], or (x_0, Trajectory) when trajectory_steps > 0.
    """
    return _ancestral_from(model_fn, sched, rng, shape, sched.num_timesteps - 1, prediction=prediction,
                           variance=variance, clip_denoised=clip_denoised, x_T=x_T, first_index=first_index,
                           trajectory_steps=trajectory_steps)


def _ancestral_from(model_fn, sched, rng, shape, start, *, prediction, variance, clip_denoised, x_T, first_index,
                    trajectory_steps, known=None):
    """Ancestral sampling from timestep `start` (x_T is the state there) down to t = 0."""
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("variance", variance, VARIANCES)
    x, trajectory = _ancestral(
        functional.as_pytree(model_fn), sched, rng, x_T, jnp.int32(first_index), known,
        tuple(shape), int(start), prediction, variance, clip_denoised, trajectory_steps,
    )
    return (x, trajectory) if trajectory_steps else x


# ---------------------------------------------------------------- DDIM


def _alpha_bar(sched: Schedule, t):
    """alpha_bar at t [B], with alpha_bar = 1 where t = -1 (the end of a DDIM trajectory)."""
    return jnp.where(t >= 0, sched.alphas_cumprod[jnp.maximum(t, 0)], 1.0)


def ddim_step(
    sched: Schedule, model_output, x_t, t, t_prev, noise, eta=0.0, *, prediction: str = "eps",
    clip_denoised: bool = True,
):
    """One DDIM update from t to t_prev < t (Song et al. eq. 12; t_prev = -1 means alpha_bar = 1).

    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma noise, with
    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev) (eq. 16). eta = 1 gives the
    ancestral step with the posterior variance; the learned-variance channels of a 2C output are ignored.
    Shapes: x_t, noise [B,H,W,C]; t, t_prev int32 [B]. Returns (x_prev, pred_x0).
    """
    pred = diffusion.prediction_channels(model_output, x_t)
    x0, eps = diffusion.x0_and_eps(sched, pred, x_t, t, prediction, clip_denoised)
    abar_t = diffusion.at(sched.alphas_cumprod, t, x_t)
    abar_prev = diffusion.at(_alpha_bar(sched, t_prev), jnp.arange(t.shape[0]), x_t)
    sigma = eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))
    direction = jnp.sqrt(jnp.maximum(1.0 - abar_prev - sigma**2, 0.0)) * eps
    return jnp.sqrt(abar_prev) * x0 + direction + sigma * noise, x0


@functools.partial(
    jax.jit, static_argnames=("shape", "timesteps", "prediction", "clip_denoised", "trajectory_steps"),
)
def _ddim(model_fn, sched, rng, x_T, first_index, eta, known, shape, timesteps, prediction, clip_denoised,
          trajectory_steps):
    T = sched.num_timesteps
    keys = example_keys(rng, shape[0], first_index)
    seq = np.asarray(timesteps[::-1], np.int32)  # increasing
    ts, ts_prev = seq[::-1], np.concatenate([[-1], seq[:-1]])[::-1].astype(np.int32)

    def step(x, i):
        t = jnp.full((shape[0],), jnp.asarray(ts)[i], jnp.int32)
        t_prev = jnp.full((shape[0],), jnp.asarray(ts_prev)[i], jnp.int32)
        noise = per_sample_normal(keys, t[0], shape)
        return ddim_step(
            sched, model_fn(x, t), x, t, t_prev, noise, eta, prediction=prediction, clip_denoised=clip_denoised
        )

    return reverse_loop(step, initial_noise(keys, x_T, shape, T), ts, trajectory_steps,
                        project=_inpainting(known, keys, sched, ts))


def ddim_sample(
    model_fn: Callable,
    sched: Schedule,
    rng,
    shape,
    *,
    num_steps: int = 50,
    eta: float = 0.0,
    prediction: str = "eps",
    clip_denoised: bool = True,
    x_T=None,
    spacing: str = "uniform",
    first_index: int = 0,
    trajectory_steps: int = 0,
):
    """DDIM sampling (Song et al. 2021) over `ddim_timesteps(T, num_steps, spacing)`, last step to alpha_bar = 1.

    eta = 0 is deterministic given x_T; eta = 1 with num_steps = T is ancestral sampling with
    fixed_small variance. Other arguments and the return value as `ancestral_sample`; eta is traced (no
    recompilation per eta).
    """
    timesteps = ddim_timesteps(sched.num_timesteps, num_steps, spacing)[::-1]
    return _ddim_over(model_fn, sched, rng, shape, timesteps, eta=eta, prediction=prediction,
                      clip_denoised=clip_denoised, x_T=x_T, first_index=first_index, trajectory_steps=trajectory_steps)


def _ddim_over(model_fn, sched, rng, shape, timesteps, *, eta, prediction, clip_denoised, x_T, first_index,
               trajectory_steps, known=None):
    """DDIM over decreasing `timesteps` (noisiest first), then a last step to alpha_bar = 1."""
    check_choice("prediction", prediction, PREDICTIONS)
    x, trajectory = _ddim(
        functional.as_pytree(model_fn), sched, rng, x_T, jnp.int32(first_index), jnp.float32(eta), known,
        tuple(shape), tuple(int(t) for t in timesteps), prediction, clip_denoised, trajectory_steps,
    )
    return (x, trajectory) if trajectory_steps else x


@functools.partial(jax.jit, static_argnames=("num_steps", "prediction", "spacing"))
def _ddim_invert(model_fn, sched, x0, num_steps, prediction, spacing):
    seq = ddim_timesteps(sched.num_timesteps, num_steps, spacing)
    seq_prev = np.concatenate([[-1], seq[:-1]]).astype(np.int32)
    batch = x0.shape[0]

    def step(x, ts):
        t_from, t_to = (jnp.full((batch,), s, jnp.int32) for s in ts)
        # The model is evaluated at the level being moved to (as in DDIM inversion practice): eps(x, t_to).
        _, eps = diffusion.x0_and_eps(sched, diffusion.prediction_channels(model_fn(x, t_to), x), x, t_to, prediction)
        abar_from = diffusion.at(_alpha_bar(sched, t_from), jnp.arange(batch), x)
        abar_to = diffusion.at(sched.alphas_cumprod, t_to, x)
        x0_pred = (x - jnp.sqrt(1.0 - abar_from) * eps) / jnp.sqrt(abar_from)
        return jnp.sqrt(abar_to) * x0_pred + jnp.sqrt(1.0 - abar_to) * eps, None

    x_T, _ = jax.lax.scan(step, x0.astype(jnp.float32), (jnp.asarray(seq_prev), jnp.asarray(seq)))
    return x_T


def ddim_invert(
    model_fn: Callable, sched: Schedule, x0, *, num_steps: int = 50, prediction: str = "eps",
    spacing: str = "uniform",
):
    """DDIM inversion: x_0 [B,H,W,C] -> x_T along the deterministic (eta = 0) path, visiting the timesteps of
    `ddim_sample` in reverse order. `ddim_sample(..., x_T=ddim_invert(...), eta=0, clip_denoised=False)` with
    the same steps returns x_0 up to the discretization error of the ODE.
    """
    check_choice("prediction", prediction, PREDICTIONS)
    ddim_timesteps(sched.num_timesteps, num_steps, spacing)
    return _ddim_invert(functional.as_pytree(model_fn), sched, x0, num_steps, prediction, spacing)


# ---------------------------------------------------------------- conditioning and many devices


def _guided(model_fn, labels, guidance_scale, null_label, x_t, t):
    channels = x_t.shape[-1]
    both = model_fn(
        jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]),
        jnp.concatenate([labels, jnp.broadcast_to(null_label, labels.shape)]),
    )
    cond, uncond = jnp.split(both, 2)
    guided = uncond[..., :channels] + guidance_scale * (cond[..., :channels] - uncond[..., :channels])
    return jnp.concatenate([guided, cond[..., channels:]], axis=-1)


def classifier_free_guidance(model_fn: Callable, labels, guidance_scale, null_label) -> Partial:
    """model_fn(x_t, t) = uncond + s (cond - uncond) (Ho & Salimans 2022, eq. 6 with s = 1 + w).

    `model_fn(x_t, t, y)` is a conditional model whose condition `null_label` means "no condition": labels int32
    [B] with a null class (an int), or prompts' tokens [B, L] with the empty prompt's tokens [L] (Stable
    Diffusion's eps_empty + s (eps_text - eps_empty)). s = 1 is the conditional model, s = 0 the unconditional
    one. Learned-variance channels are taken from the conditional output. Both passes run as one batch of 2B.
    """
    return Partial(_guided, functional.as_pytree(model_fn), jnp.asarray(labels, jnp.int32),
                   jnp.float32(guidance_scale), jnp.asarray(null_label, jnp.int32))


def with_labels(model_fn, labels, x_t, t):
    """model_fn(x_t, t, labels) as a model of (x_t, t): bind with `Partial(with_labels, model_fn, labels)`."""
    return model_fn(x_t, t, labels)


def _device_sampler(sampler: str, options: dict):
    """device_sample(model_fn, sched, rng, first_index, labels, guidance_scale) for one device's batch."""
    options = dict(options)
    null_label = options.pop("null_label", None)
    sample_fn = functools.partial(sample, sampler=sampler)

    def device_sample(model_fn, sched, rng, first_index, labels, guidance_scale):
        if labels is not None:
            if null_label is None:
                model_fn = Partial(with_labels, model_fn, labels)
            else:
                model_fn = classifier_free_guidance(model_fn, labels, guidance_scale, null_label)
        return sample_fn(model_fn, sched, rng, first_index=first_index, **options)

    return device_sample


def sample_sharded(
    model_fn: Callable,
    sched: Schedule,
    rng,
    num_samples: int,
    image_shape,
    *,
    sampler: str = "ddim",
    labels=None,
    guidance_scale: float = 1.0,
    null_label: int | None = None,
    per_device_batch: int | None = None,
    devices=None,
    progress: Callable[[int, int], None] | None = None,
    clip_denoised: bool = True,
    **sampler_options,
):
    """Draw `num_samples` images [N, H, W, C] with `sampler` across `devices` via pmap (default: all local
    devices, and with several processes all devices of all processes, every process receiving all samples).

    Sample i draws its randomness from fold_in(rng, i), so the same rng gives the same images on any number of
    devices. `labels` int32 [N] (or [N, L] tokens) condition a model_fn(x_t, t, y); with `null_label` they are
    guided with `guidance_scale` (classifier-free guidance). Rounds of `per_device_batch` samples per device
    (default: all at once) bound memory; `progress(done, total)` is called after each round. `sampler_options` go to
    `sample` (num_steps, spacing, eta, prediction, variance, ...); the timesteps are chosen here, once, from the
    concrete schedule. clip_denoised defaults to True here, as in `ancestral_sample` and `ddim_sample`.
    """
    options = dict(sampler_options, clip_denoised=clip_denoised)
    if "timesteps" not in options:
        options["timesteps"] = sampler_timesteps(sched, sampler, options.pop("num_steps", None),
                                                 options.pop("spacing", None))
    if labels is not None:
        labels = np.asarray(labels, np.int32)
        if labels.ndim < 1 or labels.shape[0] != num_samples:
            raise ValueError(f"labels must have shape ({num_samples}, ...) (one per sample), got {labels.shape}.")
    if null_label is not None:
        options["null_label"] = null_label
    model_fn = functional.as_pytree(model_fn)

    def round_fn(index):  # index [local devices, per_device]: global sample indices
        shape = (index.shape[1],) + tuple(image_shape)
        pmapped = _pmapped_sampler(sampler, tuple(sorted(dict(options, shape=shape).items())),
                                   parallel.pmap_devices(devices), labels is not None)
        # Padding samples (index >= N) reuse labels, then are dropped.
        round_labels = None if labels is None else labels[index % num_samples]
        return pmapped(model_fn, sched, rng, index[:, 0], round_labels, jnp.float32(guidance_scale))

    return parallel.map_sharded(round_fn, num_samples, per_device_batch=per_device_batch, devices=devices,
                                progress=progress)


@functools.lru_cache(maxsize=32)
def _pmapped_sampler(sampler: str, options: tuple, devices: tuple, has_labels: bool):
    sample = _device_sampler(sampler, dict(options))
    in_axes = (None, None, None, 0, 0 if has_labels else None, None)
    return parallel.pmap(sample, in_axes=in_axes, devices=devices)
