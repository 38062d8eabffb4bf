"""Flow matching with the linear path, i.e. rectified flow (Lipman et al. 2023; Liu et al. 2023): x_t = (1 - t) x0
+ t eps, the model regressing the velocity eps - x0 (or x0, or v) with a plain MSE, t uniform or logit-normal
(Esser et al. 2024). Sampled by every sampler but "ancestral" on `processes.rectified_flow`; "euler" is the usual
flow-matching Euler step. It defines no likelihood here (bits/dim would need the ODE's divergence)."""

from __future__ import annotations

from ddpm_jax import processes
from ddpm_jax.objectives.denoising import Denoising

PREDICTIONS = ("velocity", "x0", "v")  # "eps" cannot give x0 at t = 1, where the flow starts


def flow_matching(prediction: str = "velocity", t_distribution: str = "uniform") -> Denoising:
    """The flow-matching objective: `Denoising` on `processes.rectified_flow(t_distribution)`."""
    return Denoising(processes.rectified_flow(t_distribution), dict(prediction=prediction), name="flow")
