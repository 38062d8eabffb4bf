"""experiments/fashion_mnist.py (the 30-minute Fashion-MNIST recipe: class-conditional U-Net of the "mnist" preset,
3,800 steps of batch 32, Adam 2e-3 with warmup and cosine decay, EMA 0.999, DPM-Solver++(2M) SDE in 20 steps)
trained by flow matching instead of DDPM (`configs.use_flow_matching`: the velocity target, t uniform, weighting
"none" in place of min-SNR), the objective that measured best on MNIST (docs/objectives.md).

    python -m ddpm_jax train --config experiments/fashion_mnist_flow.py --workdir runs/fashion_mnist_flow \
        --config.data.source=npz:/path/to/fashion_mnist.npz   # or the tfds default, source "fashion_mnist"
"""

import os

from ddpm_jax.configs import load_config, use_flow_matching


def get_config():
    return use_flow_matching(load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "fashion_mnist.py")))
