"""ddpm_jax: denoising diffusion probabilistic models in JAX/Flax."""

from ddpm_jax import xla_cpu

xla_cpu.apply_cpu_defaults()

__version__ = "0.1.0"
