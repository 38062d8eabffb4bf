"""A variational diffusion model (Kingma et al. 2021) on the 8x8 digits: the U-Net of experiments/digits.py
conditioned on gamma_t, with base-2 Fourier features of z_t, trained on the continuous-time VLB in bits/dim.

    python -m ddpm_jax train --config experiments/digits_vdm.py --workdir runs/digits_vdm
    python -m ddpm_jax train --config experiments/digits_vdm.py --workdir runs/digits_vdm_learned \
        --config.diffusion.vdm.schedule=learned

schedule: "linear" (the paper's fixed gamma from -13.3 to 5), "cosine" (same end points), or "learned" (the
paper's monotone network: end points trained on the VLB, shape on the variance of its estimate; a learned
schedule lives in the params, so `configs.create_schedule(config, params)` needs them). loss_steps: 0 for the
continuous L_inf, T for the T-step L_T. num_timesteps is the grid the samplers visit (the model at gamma(t / T)).
Unconditional, with the steps, batch and optimizer of experiments/digits.py; bits/dim:
`likelihood.vdm_bits_per_dim_dataset` (benchmarks/variational.py compares it with DDPM's, docs/variational.md).
"""

import ml_collections

from ddpm_jax import vdm
from ddpm_jax.configs import base_config
from ddpm_jax.models import unet


def get_config():
    config = base_config()
    config.data.source = "digits"
    config.data.random_flip = False
    config.model.update(unet.PRESETS["digits"])
    config.model.fourier_features = (6, 7)  # the paper's exponents for 8-bit data: adds 4 input channels
    config.diffusion.update(objective="vdm", variance="fixed_small")
    config.diffusion.vdm = ml_collections.ConfigDict(dict(
        schedule="linear", gamma_min=vdm.GAMMA_MIN, gamma_max=vdm.GAMMA_MAX, schedule_features=1024, loss_steps=0,
        antithetic=True))
    config.train.update(num_steps=1200, batch_size=64, learning_rate=1e-3, lr_schedule="cosine", warmup_steps=100,
                        ema_decay=0.999, ema_warmup=True, log_every=100, checkpoint_every=400, sample_every=1200,
                        keep_checkpoints=2)
    config.sample.update(sampler="ddim", num_steps=50)
    return config
