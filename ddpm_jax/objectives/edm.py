"""EDM's objective (Karras et al. 2022, sec. 5 and table 1; EDM's loss.py EDMLoss): ln sigma ~ N(P_mean, P_std^2),
x = x0 + sigma eps, loss lambda(sigma) ||D(x, sigma) - x0||^2 with lambda = (sigma^2 + sigma_data^2) / (sigma
sigma_data)^2, for the preconditioned denoiser D (`models.time_scaled.EDMPreconditioned`, an x0 model), so that the
raw network's effective target has unit variance at every sigma."""

from __future__ import annotations

from ddpm_jax import processes
from ddpm_jax.objectives.denoising import Denoising


def edm(process: processes.EDM) -> Denoising:
    """EDM's objective: `Denoising` on `process` (its sigma range, sigma_data and training distribution) with
    prediction "x0" and EDM's weighting (`losses.edm_loss`)."""
    return Denoising(process, dict(prediction="x0", weighting="edm"), name="edm")
