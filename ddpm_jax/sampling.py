"""Every sampler behind one entry, `sample`: a step of the one compiled loop (`reverse_loop.run`) over the one
denoiser (`denoiser.denoiser`), named in `SAMPLERS` with its defaults.

    x0 = sampling.sample(model_fn, sched, rng, shape, sampler="dpm++2m", num_steps=20)   # a Schedule or a process

`SAMPLERS` is the table: "ancestral" (Ho et al. 2020, alg. 2) and "ddim" (Song et al. 2021) are `steps`, the ODE and
SDE solvers (Karras et al. 2022, Lu et al. 2022, Zhao et al. 2023) are `solvers`. Each row holds the sampler's
default number of steps, spacing and clipping: the one place these are decided, for every entry (`sample`,
`ancestral_sample`, `ddim_sample`, `sample_sharded`, `editing`, the CLI via the run's config). The DDPM-family
samplers clip x0 to [-1, 1] by default, as Ho et al.'s and diffusers' DDPM/DDIM schedulers do; the solvers do not,
as diffusers' multistep schedulers and k-diffusion do not.

Randomness is per sample: sample i of a call draws from fold_in(rng, first_index + i) (`reverse_loop`), so a sample
is the same whatever the batch it is drawn in or the number of devices (see `sample_sharded`). Pass `model_fn` as a
`jax.tree_util.Partial` (`functional.bind(unet.apply, params)`) so that params are traced inputs: the loop then
compiles once per shape and setting, whatever the params.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from ddpm_jax import diffusion, functional, parallel, processes, schedules, solvers, steps
from ddpm_jax.diffusion import VARIANCES
from ddpm_jax.reverse_loop import Sampler, Trajectory, no_state, run  # noqa: F401  (sampling.Trajectory)
from ddpm_jax.validation import check_choice
from ddpm_jax.schedules import Schedule

SAMPLERS = {"ancestral": steps.ANCESTRAL, "ddim": steps.DDIM, **solvers.SOLVERS}
DEFAULT_SAMPLER = "dpm++2m"


def sampler_timesteps(sched: Schedule, sampler: str, num_steps: int | None = None,
                      spacing: str | None = None) -> tuple:
    """The levels `sampler` visits, noisiest first, before its last step to the clean end.

    On a Schedule: int timesteps, all T from T - 1 to 0 for "ancestral", else `schedules.spaced_timesteps` with
    the sampler's defaults (`SAMPLERS[sampler].num_steps` and `.spacing`) where num_steps or spacing is None;
    needs a concrete Schedule. On a continuous process (`processes`): its float times `proc.levels(num_steps)`,
    [N + 1] ending at 0.
    """
    row = sampler_row(sampler)
    if processes.is_process(sched):
        _check_process_sampler(sched, sampler, spacing)
        return tuple(float(t) for t in sched.levels(step_defaults(sampler, num_steps)[0]))
    if spacing is not None:
        check_choice("spacing", spacing, schedules.SPACINGS)
    if row.num_steps is None:
        if num_steps not in (None, sched.num_timesteps) or spacing is not None:
            raise ValueError(f"ancestral sampling visits all T = {sched.num_timesteps} timesteps: it takes no "
                             f"num_steps or spacing (got {num_steps}, {spacing}); use 'ddim' with eta=1 for "
                             "ancestral-like sampling over fewer steps.")
        return tuple(range(sched.num_timesteps - 1, -1, -1))
    num_steps, spacing = step_defaults(sampler, num_steps, spacing)
    return tuple(int(t) for t in schedules.spaced_timesteps(sched, num_steps, spacing))


def sampler_row(sampler: str | Sampler) -> Sampler:
    """The `Sampler` of a name of `SAMPLERS` (ValueError for another name), or `sampler` itself if it is one: a
    new sampler is a step function, `reverse_loop.Sampler(step, ...)`, passed wherever a name is."""
    if isinstance(sampler, Sampler):
        return sampler
    check_choice("sampler", sampler, SAMPLERS)
    return SAMPLERS[sampler]


def step_defaults(sampler: str | Sampler, num_steps: int | None = None,
                  spacing: str | None = None) -> tuple[int, str]:
    """(num_steps, spacing) with None replaced by the sampler's defaults in `SAMPLERS` (not for "ancestral")."""
    row = sampler_row(sampler)
    return (row.num_steps if num_steps is None else num_steps), (spacing or row.spacing)


def _check_process_sampler(proc, sampler: str, spacing: str | None = None) -> None:
    """ValueError for "ancestral" or a spacing on a continuous process."""
    if sampler_row(sampler).discrete_only:
        raise ValueError(
            f"sampler {sampler!r} (Ho et al. alg. 2) samples the discrete VP process of a Schedule; a continuous "
            f"process ({type(proc).__name__}) takes 'ddim' (with eta > 0 for stochastic steps), 'dpm++2m-sde' or an "
            f"ODE solver: {', '.join(solvers.PROCESS_SOLVERS)}."
        )
    if spacing is not None:
        raise ValueError(f"spacing {spacing!r} picks a Schedule's timesteps; a process has its own levels "
                         "(proc.levels(num_steps)): pass float `timesteps` to choose others.")


def sample(
    model_fn: Callable,
    sched: Schedule | processes.Process,
    rng,
    shape,
    *,
    sampler: str | Sampler = DEFAULT_SAMPLER,
    num_steps: int | None = None,
    prediction: str = "eps",
    clip_denoised: bool | None = None,
    x_T=None,
    spacing: str | None = None,
    eta: float = 0.0,
    variance: str = "fixed_small",
    timesteps=None,
    first_index: int = 0,
    trajectory_steps: int = 0,
    known=None,
    resample: int = 1,
    noise=None,
):
    """Every sampler behind one entry: x_0 [B, ...] (or (x_0, Trajectory) with trajectory_steps > 0).

    sampler: a `reverse_loop.Sampler` (a new one: its step function and defaults) or a name of `SAMPLERS`:
      "ancestral" (Ho et al. alg. 2 over all T steps, with `variance`), "ddim" (Song
      et al., with `eta`), or a solver of `ddpm_jax.solvers`: "euler", "heun" (Karras et al. 2022), "dpm++2m",
      "dpm++3m", "dpm++2m-sde" (Lu et al. 2022), "unipc" (Zhao et al. 2023).
    num_steps, spacing: how many and which timesteps are visited (`sampler_timesteps`; spacings
      `schedules.SPACINGS`: "linspace", "leading", "trailing", "karras"); or give `timesteps` (decreasing ints).
      None: the sampler's defaults in `SAMPLERS`.
    clip_denoised: clip x0 to [-1, 1]; None: the sampler's default (True for "ancestral" and "ddim", else False).
    x_T: the state at the first visited timestep (t = T - 1 for ancestral and the linspace/trailing spacings),
      in the variance-preserving coordinates of `q_sample`; drawn per sample from fold_in(rng, first_index + i)
      if None. model_fn(x_t, t) is called with int32 t [B] at the visited timesteps only.
    known: (images, mask) for inpainting (mask 1 = generate, 0 = keep; see `editing.inpaint`); with
      `resample` = U > 1 each step is taken U times (RePaint; one-step samplers only: "ancestral", "ddim",
      "euler", "heun").
    noise: [N, B, ...] standard normal draws replacing a stochastic sampler's own (e.g. to replay another
      implementation's; see `solvers.solve`).

    `sched` may also be a continuous process (`processes.rectified_flow()`, `edm()`, `vdm(gamma_fn)`): then
    every sampler but "ancestral" runs over `proc.levels(num_steps)` (or float `timesteps` [N + 1] ending at 0;
    no spacing), model_fn(x_t, t) gets float32 t [B] as it is, `prediction` may also be "velocity", and x_T is
    the state at the first level, sigma(t_0) z if drawn (see `solvers.solve`).
    """
    row = sampler_row(sampler)
    if row.step is not steps.ddim and eta != 0:
        raise ValueError(f"eta is DDIM's stochasticity (0 = deterministic); sampler {sampler!r} takes none, "
                         f"got eta={eta}.")
    if processes.is_process(sched):
        _check_process_sampler(sched, sampler, spacing)
    if timesteps is None:
        timesteps = sampler_timesteps(sched, sampler, num_steps, spacing)
    if row.discrete_only:
        check_choice("variance", variance, VARIANCES)
        ts = solvers.check_timesteps(timesteps, sched.num_timesteps)
        if ts[-1] != 0 or np.any(np.diff(ts) != -1):
            raise ValueError("ancestral sampling visits every timestep down to 0: its timesteps must be "
                             f"consecutive, from some start to 0; got {len(ts)} from {ts[0]} to {ts[-1]}.")
    if resample != 1:
        row = _resampled(row, sampler, resample, known, noise)
    return solvers.run_checked(
        model_fn, sched, rng, shape, name=str(sampler), sampler=row, timesteps=timesteps, prediction=prediction,
        clip_denoised=row.clip_denoised if clip_denoised is None else clip_denoised, x_T=x_T,
        first_index=first_index, trajectory_steps=trajectory_steps, noise=noise, known=known, eta=eta,
        variance=variance if row.discrete_only else "fixed_small")


def check_resample(resample) -> None:
    """ValueError unless `resample` (RePaint's U) is an integer >= 1."""
    if isinstance(resample, bool) or not isinstance(resample, (int, np.integer)) or resample < 1:
        raise ValueError(f"resample must be an integer >= 1 (RePaint's U; 1 = none), got {resample!r}.")


def _resampled(row, sampler: str, resample, known, noise):
    """`steps.resampled(row, resample)` after checking that resampling applies."""
    check_resample(resample)
    if known is None:
        raise ValueError(f"resample={resample} (RePaint) resamples the known pixels of inpainting: pass `known`.")
    if row.init is not no_state:
        raise ValueError(f"resampling (resample={resample}) needs a one-step sampler: "
                         f"{', '.join(n for n, r in SAMPLERS.items() if r.init is no_state)}; got {sampler!r}.")
    if noise is not None:
        raise ValueError("noise replaces one draw per step; resampling draws more: pass no noise with resample.")
    return steps.resampled(row, int(resample))


def ddim_timesteps(num_timesteps: int, num_steps: int, spacing: str = "leading") -> np.ndarray:
    """The increasing timesteps a DDIM sampler visits: int32 [S] (`schedules.spaced_steps`; its reverse is what
    `sample` visits).

    "leading" (alias "uniform", the DDIM code's name): range(0, T, T // num_steps), as the DDIM paper (S may
    exceed num_steps when it does not divide T). "trailing": round(T - k T / num_steps) - 1 for k < num_steps,
    which starts at t = T - 1 (Lin et al. 2024, for zero-terminal-SNR schedules). "linspace" as diffusers.
    """
    return schedules.spaced_steps(num_timesteps, num_steps, spacing)


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
    return sample(model_fn, sched, rng, shape, sampler="ancestral", prediction=prediction, variance=variance,
                  clip_denoised=clip_denoised, x_T=x_T, first_index=first_index, trajectory_steps=trajectory_steps)


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
    return steps.ddim_update(sched, x0, eps, x_t, t, t_prev, noise, eta), x0


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
    spacing: str = "leading",
    first_index: int = 0,
    trajectory_steps: int = 0,
):
    """DDIM sampling (Song et al. 2021) over `ddim_timesteps(T, num_steps, spacing)`, last step to alpha_bar = 1.

    eta = 0 is deterministic given x_T; eta = 1 with num_steps = T is ancestral sampling with
    fixed_small variance. Other arguments and the return value as `ancestral_sample`; eta is traced (no
    recompilation per eta).
    """
    return sample(model_fn, sched, rng, shape, sampler="ddim", eta=eta, prediction=prediction,
                  clip_denoised=clip_denoised, x_T=x_T, first_index=first_index, trajectory_steps=trajectory_steps,
                  timesteps=ddim_timesteps(sched.num_timesteps, num_steps, spacing)[::-1])


def ddim_invert(
    model_fn: Callable, sched: Schedule | processes.Process, x0, *, num_steps: int = 50, prediction: str = "eps",
    spacing: str = "leading",
):
    """DDIM inversion: x_0 [B,H,W,C] -> x_T along the deterministic (eta = 0) path, visiting the timesteps of
    `ddim_sample` in reverse order (`steps.ddim_inversion`). `ddim_sample(..., x_T=ddim_invert(...), eta=0,
    clip_denoised=False)` with the same steps returns x_0 up to the discretization error of the ODE. On a
    continuous process: its levels `proc.levels(num_steps)` in reverse (no spacing).
    """
    x0 = jnp.asarray(x0, jnp.float32)
    if processes.is_process(sched):
        _check_process_sampler(sched, "ddim", None if spacing == "leading" else spacing)
        processes.check_prediction(sched, prediction, sched.levels(num_steps)[:1])
        times = tuple(float(t) for t in sched.levels(num_steps)[::-1])
    else:
        check_choice("prediction", prediction, diffusion.PREDICTIONS)
        times = tuple(int(t) for t in ddim_timesteps(sched.num_timesteps, num_steps, spacing))
    x_T, _ = run(functional.as_pytree(model_fn), sched, jax.random.PRNGKey(0), x0, jnp.int32(0), None,
                 jnp.float32(0.0), None, sampler=steps.DDIM_INVERSION, shape=x0.shape, times=times,
                 prediction=prediction, clip_denoised=False, invert=True)
    return x_T


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
    sampler: str = DEFAULT_SAMPLER,
    labels=None,
    guidance_scale: float = 1.0,
    null_label: int | None = None,
    per_device_batch: int | None = None,
    devices=None,
    layout: parallel.Pmap | parallel.Sharded | None = None,
    progress: Callable[[int, int], None] | None = None,
    clip_denoised: bool | None = None,
    **sampler_options,
):
    """Draw `num_samples` images [N, H, W, C] with `sampler` across `devices` via pmap (default: all local
    devices, and with several processes all devices of all processes, every process receiving all samples), or on
    all devices of a `layout` (`parallel.Pmap`, or `parallel.Sharded`: jit over its mesh, the params split along
    FSDP as in training; the same per-device sampler, the same samples up to float reduction order).

    Sample i draws its randomness from fold_in(rng, i), so the same rng gives the same images on any number of
    devices. `labels` int32 [N] (or [N, L] tokens) condition a model_fn(x_t, t, y); with `null_label` they are
    guided with `guidance_scale` (classifier-free guidance). Rounds of `per_device_batch` samples per device
    (default: all at once) bound memory; `progress(done, total)` is called after each round. `sampler_options` go to
    `sample` (num_steps, spacing, eta, prediction, variance, ...); the timesteps are chosen here, once, from the
    concrete schedule. clip_denoised None is the sampler's default (`SAMPLERS`), as in `sample`.
    """
    options = dict(sampler_options, clip_denoised=sampler_row(sampler).clip_denoised if clip_denoised is None
                   else clip_denoised)
    if "timesteps" not in options:
        options["timesteps"] = sampler_timesteps(sched, sampler, options.pop("num_steps", None),
                                                 options.pop("spacing", None))
    if labels is not None:
        labels = np.asarray(labels, np.int32)
        if labels.ndim < 1 or labels.shape[0] != num_samples:
            raise ValueError(f"labels must have shape ({num_samples}, ...) (one per sample), got {labels.shape}.")
    if null_label is not None:
        options["null_label"] = null_label
    layout = parallel.layout_of(devices, layout)
    placed = layout.put_state(functional.as_pytree(model_fn))  # once: replicated (pmap) or split along FSDP

    def round_fn(index):  # index [local devices, per_device]: global sample indices
        shape = (index.shape[1],) + tuple(image_shape)
        mapped = _mapped_sampler(sampler, tuple(sorted(dict(options, shape=shape).items())), layout,
                                 labels is not None)
        # Padding samples (index >= N) reuse labels, then are dropped.
        round_labels = None if labels is None else labels[index % num_samples]
        return mapped(placed, sched, rng, index[:, 0], round_labels, jnp.float32(guidance_scale))

    return parallel.map_sharded(round_fn, num_samples, per_device_batch=per_device_batch, layout=layout,
                                progress=progress)


@functools.lru_cache(maxsize=32)
def _mapped_sampler(sampler: str, options: tuple, layout, has_labels: bool):
    sample = _device_sampler(sampler, dict(options))
    in_axes = (layout.placed_axis, None, None, 0, 0 if has_labels else None, None)
    return layout.map(sample, in_axes)
