"""DDPM on CelebA 64x64 with the DDIM paper's model (Song et al. 2021, appendix D.1).

    python -m ddpm_jax train --config experiments/celeba64.py --workdir runs/celeba64

Center crop 140x140 then 64x64 (data.py); U-Net ch 128, multipliers (1, 2, 2, 2, 4), 2 blocks, attention at
16x16, dropout 0.1 (78.7M parameters); T = 1000 linear; Adam 2e-4, batch 128, flips, EMA 0.9999. Song et al.
report FID 6.53 with DDIM-100 (eta 0) and 9.17 with ancestral 1000 steps (their table 1) for this setup.
Needs tfds' celeb_a prepared (manual download).
"""

from ddpm_jax.configs import base_config
from ddpm_jax.models import unet


def get_config():
    config = base_config()
    config.data.source = "celeb_a"
    config.model.update(unet.PRESETS["ddim_celeba64"])
    config.train.num_steps = 500_000
    config.sample.update(sampler="ddim", num_steps=100)
    return config
