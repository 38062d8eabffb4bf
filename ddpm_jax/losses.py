"""Training losses: L_simple, the VLB and their hybrid; per-timestep weightings; timestep sampling, uniform or
importance-sampled from an explicit loss-history pytree (Nichol & Dhariwal 2021, sec. 3.3).

Shapes: x0 [B, H, W, C] float32 in [-1, 1]; t int32 [B]; per-example terms [B].
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from ddpm_jax import diffusion, processes
from ddpm_jax.diffusion import mean_flat
from ddpm_jax.validation import check_choice
from ddpm_jax.keys import example_keys, per_example
from ddpm_jax.schedules import Schedule

LOSS_TYPES = ("mse", "kl", "hybrid")
WEIGHTINGS = ("none", "min_snr", "p2")


def mse_weight(sched: Schedule, t, prediction: str, weighting: str, *, min_snr_gamma=5.0, p2_k=1.0, p2_gamma=1.0):
    """Per-example weight [B] of the MSE on the `prediction` target.

    "none": 1 (Ho's L_simple). "min_snr" (Hang et al. 2023): min(SNR, gamma) in x_0-error units, i.e.
    min(SNR, gamma) / SNR for eps, min(SNR, gamma) for x0, min(SNR, gamma) / (SNR + 1) for v.
    "p2" (Choi et al. 2022): 1 / (k + SNR)^gamma on the eps error; for x0 and v the same weighting carried
    over by ||eps err||^2 = SNR ||x0 err||^2 = SNR / (1 + SNR) ||v err||^2.
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("prediction", prediction, diffusion.PREDICTIONS)
    snr = jnp.exp(sched.log_snr[t])
    if weighting == "none":
        return jnp.ones_like(snr)
    if weighting == "min_snr":
        # min(SNR, gamma) / SNR written as min(1, gamma / SNR): finite at SNR = 0 (zero terminal SNR).
        per_target = {
            "eps": jnp.minimum(1.0, min_snr_gamma / snr),
            "x0": jnp.minimum(snr, min_snr_gamma),
            "v": jnp.minimum(snr, min_snr_gamma) / (snr + 1.0),
        }
    else:
        p2 = (p2_k + snr) ** -p2_gamma
        per_target = {"eps": p2, "x0": snr * p2, "v": snr / (snr + 1.0) * p2}
    return per_target[prediction]


def training_losses(
    model_fn,
    sched: Schedule | processes.Process,
    x0,
    t,
    noise,
    *,
    prediction: str | None = None,
    variance: str = "fixed_small",
    loss_type: str = "mse",
    weighting: str = "none",
    hybrid_lambda: float = 1e-3,
    min_snr_gamma: float = 5.0,
    p2_k: float = 1.0,
    p2_gamma: float = 1.0,
):
    """Per-example loss terms at given t and noise: dict(loss [B], and mse [B] and/or vlb [B]).

    "mse": weighted mean squared error on the prediction target (Ho eq. 14, L_simple).
    "kl": L_vlb = T * L_t in bits/dim, whose expectation over uniform t is the VLB less the prior (ND sec. 3.1).
    "hybrid": L_simple + lambda * L_vlb with the predicted mean stopped in L_vlb, so the VLB trains only the
      learned variance (ND eq. 16, lambda = 0.001; this equals their code's RESCALED_MSE loss).
    `learned_range` trains its variance only through a VLB: it needs "kl" or "hybrid"; "hybrid" needs it.
    prediction None: "eps" for a Schedule, "velocity" for a process.

    `sched` may be a continuous process (`processes`): then t is float32 [B] (rectified flow: t in [0, 1]; EDM:
    sigma), x_t = alpha(t) x0 + sigma(t) noise, and the loss is the unweighted "mse" on the target of
    `prediction` ("eps", "x0", "v" or "velocity", `processes.prediction_target`), mean over all but axis 0:
    dict(loss [B], mse [B]); weighting "edm" on EDM's process with an x0 model is EDM's loss (`edm_loss`).
    """
    if processes.is_process(sched):
        return _process_mse(model_fn, sched, x0, t, noise, "velocity" if prediction is None else prediction,
                            variance=variance, loss_type=loss_type, weighting=weighting)
    prediction = "eps" if prediction is None else prediction
    check_choice("loss_type", loss_type, LOSS_TYPES)
    check_choice("variance", variance, diffusion.VARIANCES)
    if variance == "learned_range" and loss_type == "mse":
        raise ValueError("variance='learned_range' is trained by the VLB: use loss_type 'hybrid' or 'kl', not 'mse'.")
    if loss_type == "hybrid" and variance != "learned_range":
        raise ValueError(
            f"loss_type='hybrid' trains a learned variance; it needs variance='learned_range', got {variance!r}."
        )
    if loss_type == "kl" and weighting != "none":
        raise ValueError(f"weighting={weighting!r} applies to the MSE; loss_type='kl' needs weighting='none'.")
    x_t = diffusion.q_sample(sched, x0, t, noise)
    model_output = model_fn(x_t, t)
    vlb_options = dict(prediction=prediction, variance=variance, clip_denoised=False)
    T = sched.num_timesteps

    if loss_type == "kl":
        vlb = T * diffusion.vlb_term_bpd(sched, model_output, x0, x_t, t, **vlb_options)
        return dict(loss=vlb, vlb=vlb)

    pred, var_values = diffusion.split_model_output(model_output, x_t, variance)
    target = diffusion.prediction_target(sched, x0, noise, t, prediction)
    weight = mse_weight(
        sched, t, prediction, weighting, min_snr_gamma=min_snr_gamma, p2_k=p2_k, p2_gamma=p2_gamma
    )
    mse = weight * mean_flat((target - pred) ** 2)
    if loss_type == "mse":
        return dict(loss=mse, mse=mse)
    frozen = jnp.concatenate([jax.lax.stop_gradient(pred), var_values], axis=-1)
    vlb = T * diffusion.vlb_term_bpd(sched, frozen, x0, x_t, t, **vlb_options)
    return dict(loss=mse + hybrid_lambda * vlb, mse=mse, vlb=vlb)


def _process_mse(model_fn, proc, x0, t, noise, prediction: str, *, variance: str, loss_type: str, weighting: str):
    """`training_losses` on a continuous process: mean_flat((target - model_fn(x_t, t))^2), [B]; with weighting
    "edm" (EDM's process, an x0 model) times lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2."""
    for name, value, only in (("variance", variance, "fixed_small"), ("loss_type", loss_type, "mse")):
        if value != only:
            raise ValueError(f"{name}={value!r} belongs to the discrete process of a Schedule; on a continuous "
                             f"process training_losses takes {name}={only!r}.")
    check_choice("weighting on a continuous process", weighting, ("none", "edm"))
    if weighting == "edm" and not (isinstance(proc, processes.EDM) and prediction == "x0"):
        raise ValueError("weighting 'edm' is EDM's lambda(sigma) for its process (processes.edm()) and an x0 model "
                         f"(prediction 'x0', the preconditioned denoiser); got {type(proc).__name__}, {prediction!r}.")
    target = processes.prediction_target(proc, x0, noise, t, prediction)
    pred = diffusion.prediction_channels(model_fn(proc.sample(x0, t, noise), t), x0)
    mse = mean_flat((target - pred) ** 2)
    if weighting == "edm":
        return dict(loss=processes.edm_loss_weight(t, proc.sigma_data) * mse, mse=mse)
    return dict(loss=mse, mse=mse)


def edm_loss(denoiser_fn, proc: processes.EDM, x0, sigma, noise):
    """EDM's loss (Karras et al. 2022, eq. 2 with table 1's weight; EDM's loss.py EDMLoss) at given sigma:
    lambda(sigma) mean_flat((D(x0 + sigma noise, sigma) - x0)^2) with lambda = (sigma^2 + sigma_data^2) /
    (sigma sigma_data)^2, for the preconditioned denoiser D = `processes.edm_precondition(raw_fn,
    proc.sigma_data)` (an x0 model). x0, noise [B, ...]; sigma float32 [B] (e.g. proc.sample_t, log-normal).
    Returns dict(loss [B], mse [B]) with mse the unweighted mean_flat((D - x0)^2). Where D is the
    preconditioned model, loss = mean_flat((F - target)^2) of the raw network F (lambda c_out^2 = 1).
    `training_losses(..., prediction="x0", weighting="edm")` on EDM's process.
    """
    if not isinstance(proc, processes.EDM):
        raise ValueError(f"edm_loss weights EDM's process (processes.edm()); got {type(proc).__name__}.")
    return _process_mse(denoiser_fn, proc, x0, sigma, noise, "x0", variance="fixed_small", loss_type="mse",
                        weighting="edm")


# ---------------------------------------------------------------- timestep sampling

HISTORY_LENGTH = 10  # losses remembered per timestep (ND's LossSecondMomentResampler)
UNIFORM_PROB = 1e-3  # probability mass mixed in uniformly


@flax.struct.dataclass
class ImportanceState:
    """Loss history for importance sampling of t: history float32 [T, 10] (a ring buffer), counts int32 [T]."""

    history: jnp.ndarray
    counts: jnp.ndarray

    @classmethod
    def create(cls, num_timesteps: int) -> "ImportanceState":
        return cls(
            history=jnp.zeros((num_timesteps, HISTORY_LENGTH), jnp.float32),
            counts=jnp.zeros((num_timesteps,), jnp.int32),
        )

    def is_warm(self) -> jnp.ndarray:
        """True once every timestep has a full history; until then t is sampled uniformly."""
        return jnp.all(self.counts >= HISTORY_LENGTH)

    def probabilities(self) -> jnp.ndarray:
        """p_t proportional to sqrt(E[L_t^2]), mixed with 0.001 of uniform; uniform until warm. float32 [T]."""
        T = self.counts.shape[0]
        rms = jnp.sqrt(jnp.mean(self.history**2, axis=-1))
        p = rms / jnp.sum(rms) * (1.0 - UNIFORM_PROB) + UNIFORM_PROB / T
        return jnp.where(self.is_warm(), p, jnp.full((T,), 1.0 / T))

    def update(self, t, losses) -> "ImportanceState":
        """Record per-example losses [N] at their timesteps t [N] (gather them over devices first)."""

        def record(state, item):
            history, counts = state
            t_i, loss_i = item
            history = history.at[t_i, counts[t_i] % HISTORY_LENGTH].set(loss_i)
            return (history, counts.at[t_i].add(1)), None

        (history, counts), _ = jax.lax.scan(
            record, (self.history, self.counts), (t.astype(jnp.int32), losses.astype(jnp.float32))
        )
        # Keep counts bounded without changing their residue mod HISTORY_LENGTH (the ring-buffer slot).
        counts = jnp.where(counts >= HISTORY_LENGTH, HISTORY_LENGTH + counts % HISTORY_LENGTH, counts)
        return ImportanceState(history=history, counts=counts)


def sample_timesteps(keys, num_timesteps: int, importance: ImportanceState | None = None):
    """One timestep per example key: t int32 [B] and importance weights [B] = 1 / (T p_t) (ones if uniform).

    With weights, mean(weights * L_t) is an unbiased estimate of the uniform-t mean of L_t (ND sec. 3.3).
    """
    if importance is None:
        t = per_example(lambda k: jax.random.randint(k, (), 0, num_timesteps, dtype=jnp.int32), keys)
        return t, jnp.ones(t.shape, jnp.float32)
    p = importance.probabilities()
    t = per_example(lambda k: jax.random.choice(k, num_timesteps, p=p), keys).astype(jnp.int32)
    return t, 1.0 / (num_timesteps * p[t])


def training_loss(
    model_fn, sched: Schedule | processes.Process, x0, rng, *, first_index=0, importance: ImportanceState | None = None,
    **loss_options,
):
    """The scalar training loss and its parts: (loss, aux) with aux = dict(per-example terms [B], t [B]).

    Example i draws its t (uniform, or from `importance`) and noise from fold_in(rng, first_index + i), so a
    global batch gives the same draws however it is split over devices. `loss_options` go to
    `training_losses`; loss = mean over the batch of importance weight * per-example loss.
    On a continuous process t is float32 [B] from `proc.sample_t` (no importance sampling; weights 1).
    """
    keys = example_keys(rng, x0.shape[0], first_index)
    t_keys, noise_keys = jnp.moveaxis(per_example(lambda k: jax.random.split(k), keys), 1, 0)
    if processes.is_process(sched):
        if importance is not None:
            raise ValueError("importance sampling of t is over a Schedule's T timesteps; a continuous process draws "
                             "its t from proc.sample_t: pass importance=None.")
        t = per_example(lambda k: sched.sample_t(k, ()), t_keys)
        weights = jnp.ones(t.shape, jnp.float32)
    else:
        t, weights = sample_timesteps(t_keys, sched.num_timesteps, importance)
    noise = per_example(lambda k: jax.random.normal(k, x0.shape[1:], x0.dtype), noise_keys)
    terms = training_losses(model_fn, sched, x0, t, noise, **loss_options)
    return jnp.mean(weights * terms["loss"]), dict(terms, t=t)
