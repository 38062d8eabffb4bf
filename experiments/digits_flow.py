"""The default experiment (experiments/digits.py: its class-conditional U-Net, data, steps and optimizer) trained by
flow matching (rectified flow: Lipman et al. 2023, Liu et al. 2023) instead of DDPM: x_t = (1 - t) x0 + t eps, the
U-Net regressing the velocity eps - x0, t uniform in [0, 1] (fed to the U-Net as 1000 t); sampled with the
flow-matching Euler step in 20 steps.

    python -m ddpm_jax train --config experiments/digits_flow.py --workdir runs/digits_flow
    python -m ddpm_jax sample --workdir runs/digits_flow --num 64 --sampler heun --steps 10

Every sampler but "ancestral" (a discrete schedule's) samples it; it defines no bits/dim here.
"""

import os

from ddpm_jax.configs import load_config, use_flow_matching

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    config = use_flow_matching(load_config(os.path.join(HERE, "digits.py")))
    config.diffusion.variance = "fixed_small"
    config.sample.update(sampler="euler", num_steps=20)
    return config
