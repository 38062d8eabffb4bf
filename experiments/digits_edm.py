"""The default experiment (experiments/digits.py: its class-conditional U-Net, data, steps and optimizer) trained
with EDM's objective (Karras et al. 2022): x = x0 + sigma eps with ln sigma ~ N(-1.2, 1.2^2), the U-Net inside EDM's
preconditioning (c_skip, c_out, c_in, c_noise of table 1) as an x0 model, loss weighted by lambda(sigma); sampled
with Heun in 18 steps (35 evaluations) from sigma_max = 80 (eq. 5, rho = 7), as EDM samples CIFAR-10.

    python -m ddpm_jax train --config experiments/digits_edm.py --workdir runs/digits_edm
    python -m ddpm_jax sample --workdir runs/digits_edm --num 64

Every sampler but "ancestral" (a discrete schedule's) samples it; it defines no bits/dim here.
"""

import os

import ml_collections

from ddpm_jax.configs import load_config

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    config = load_config(os.path.join(HERE, "digits.py"))
    config.diffusion.update(objective="edm", prediction="x0", variance="fixed_small")
    config.diffusion.edm = ml_collections.ConfigDict(dict(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5))
    config.sample.update(sampler="heun", num_steps=18)
    return config
