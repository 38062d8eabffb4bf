"""experiments/mnist_fast.py with a Diffusion Transformer (Peebles & Xie 2023) in place of its U-Net: 28x28 MNIST in
4x4 patches (49 tokens), hidden size 128, 6 adaLN-Zero blocks of 4 heads, the fixed sin-cos position embedding,
class-conditional (1,869,072 params; 127.5 MFLOPs a forward per image against the U-Net's 136.2, XLA's count).
The rest is mnist_fast.py's recipe: 1,500 steps of batch 32, min-SNR-5 weighting, Adam 2e-3 with warmup and
cosine decay, EMA 0.999, label dropout 0.1, DPM-Solver++(2M) SDE in 20 steps.

    python -m ddpm_jax train --config experiments/mnist_dit.py --workdir runs/mnist_dit \
        --config.data.source=npz:/path/to/mnist.npz          # or the tfds default, source "mnist"
    python -m ddpm_jax sample --workdir runs/mnist_dit --num 500 --out runs/mnist_dit/samples.png

Patch 4, not the paper's preferred 2: on 2 CPU cores attention over 196 tokens of 2x2 patches made a step about
twice as slow as the U-Net's at a similar FLOP count, while 49 tokens train at about the U-Net's speed.

Measured (README, "A Diffusion Transformer backbone"; 500 samples, the project's MNIST classifier): after this
recipe's 1,500 steps (257 s) FID 248, patches that do not join up yet, where the U-Net scores 11.7 at equal time
(benchmarks/results/dit_vs_unet_mnist.json); given --config.train.num_steps=6000 (14 minutes) 158 / 49 / 36 at steps
3,000 / 4,500 / 6,000 and still falling (benchmarks/results/time_to_quality_mnist_dit_6000.json).
"""

import os

import ml_collections

from ddpm_jax.configs import load_config
from ddpm_jax.models import dit

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    config = load_config(os.path.join(HERE, "mnist_fast.py"))
    config.model = ml_collections.ConfigDict(dict(arch="dit", **dit.PRESETS["mnist"], pos_embed="sincos",
                                                  num_classes=10, dtype="float32", remat=False))
    return config
