"""experiments/digits.py with a Diffusion Transformer (Peebles & Xie 2023) in place of its U-Net: the 8x8 digits in
2x2 patches (16 tokens), hidden size 128, 4 adaLN-Zero blocks of 4 heads, the fixed sin-cos position embedding,
class-conditional (1,272,324 params; 27.3 MFLOPs a forward per image against the U-Net's 26.5, XLA's count).
The rest is digits.py's recipe: 1,200 steps of batch 64, Adam 1e-3 with warmup and cosine decay, EMA 0.999, label
dropout 0.1, DPM-Solver++(2M) SDE in 20 steps.

    python -m ddpm_jax train --config experiments/digits_dit.py --workdir runs/digits_dit
    python -m ddpm_jax sample --workdir runs/digits_dit --num 64 --out runs/digits_dit/grid.png

Measured (README, "A Diffusion Transformer backbone"; the digits classifier): the DiT learns more slowly per step
than the U-Net. After this recipe's 1,200 steps (83 s) FID 116 where the U-Net scores 6.1 at equal time (500
samples, benchmarks/results/dit_vs_unet_digits.json); given --config.train.num_steps=6000 (6 minutes) it reaches
7.7 / 5.3 / 4.7 / 4.4 at steps 2,400 / 3,600 / 4,800 / 6,000 (594 samples,
benchmarks/results/time_to_quality_digits_dit_6000.json).
"""

import os

import ml_collections

from ddpm_jax.configs import load_config
from ddpm_jax.models import dit

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    config = load_config(os.path.join(HERE, "digits.py"))
    config.model = ml_collections.ConfigDict(dict(arch="dit", **dit.PRESETS["digits"], pos_embed="sincos",
                                                  num_classes=10, dtype="float32", remat=False))
    return config
