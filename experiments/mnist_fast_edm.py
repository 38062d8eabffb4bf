"""experiments/mnist_fast.py (its class-conditional 718k U-Net, batch 32, 1,500 steps, Adam 2e-3 with warmup and
cosine decay, EMA 0.999, label dropout 0.1) trained with EDM's objective (Karras et al. 2022) instead of DDPM:
x = x0 + sigma eps with ln sigma ~ N(-1.2, 1.2^2), the U-Net inside EDM's preconditioning as an x0 model, loss
weighted by lambda(sigma); sampled with Heun in 18 steps (35 evaluations) from sigma_max = 80 (eq. 5, rho = 7).
The one other change: weighting "none" in place of mnist_fast's "min_snr" (EDM's loss has its own weighting and
the objective refuses another).

    python -m ddpm_jax train --config experiments/mnist_fast_edm.py --workdir runs/mnist_fast_edm \
        --config.data.source=npz:/path/to/mnist.npz          # or the tfds default, source "mnist"
    python -m ddpm_jax sample --workdir runs/mnist_fast_edm --num 500 --out runs/mnist_fast_edm/samples.png

Every sampler but "ancestral" (a discrete schedule's) samples it; it defines no bits/dim here.
"""

import os

import ml_collections

from ddpm_jax.configs import load_config

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    config = load_config(os.path.join(HERE, "mnist_fast.py"))
    config.diffusion.update(objective="edm", prediction="x0", weighting="none")
    config.diffusion.edm = ml_collections.ConfigDict(dict(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5))
    config.sample.update(sampler="heun", num_steps=18)
    return config
