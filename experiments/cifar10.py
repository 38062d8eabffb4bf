"""DDPM on CIFAR-10 with the paper's hyperparameters (Ho et al. 2020, sec. 4 and appendix B).

    python -m ddpm_jax train --config experiments/cifar10.py --workdir runs/cifar10

T = 1000 linear betas (1e-4 .. 0.02), eps-prediction, L_simple; the 35.7M-parameter U-Net (ch 128, multipliers
(1, 2, 2, 2), 2 blocks, attention at 16x16, dropout 0.1); Adam 2e-4 with 5000 warmup steps, gradient clipping at
1, batch 128, EMA 0.9999, random horizontal flips, 800k steps. The paper reports FID 3.17 and 3.75 bits/dim
(<= 3.70 with its L_simple model on the test set) after 800k steps on a TPU v3-8 (~10.6 h). Needs tfds'
cifar10 prepared in ~/tensorflow_datasets (or --config.data.data_dir).
"""

from ddpm_jax.configs import base_config


def get_config():
    config = base_config()  # the base config is this experiment
    config.sample.update(sampler="ddim", num_steps=50)
    return config
