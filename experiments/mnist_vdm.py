"""A variational diffusion model (Kingma et al. 2021) on MNIST: the U-Net of experiments/mnist.py conditioned on
gamma_t, with base-2 Fourier features of z_t, trained on the continuous-time VLB in bits/dim.

    python -m ddpm_jax train --config experiments/mnist_vdm.py --workdir runs/mnist_vdm \
        --config.data.source=npz:/path/to/mnist.npz        # or the tfds default, source "mnist"
    # the learned schedule: --config.diffusion.vdm.schedule=learned

The fields are those of experiments/digits_vdm.py (see its docstring); unconditional, with the steps, batch and
optimizer of experiments/mnist.py, so `benchmarks/variational.py --dataset mnist` compares it with DDPM on equal terms
(docs/variational.md).
"""

import os

from ddpm_jax.configs import load_config

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    config = load_config(os.path.join(HERE, "digits_vdm.py"))
    mnist = load_config(os.path.join(HERE, "mnist.py"))
    config.data = mnist.data
    config.model.update(mnist.model.to_dict(), num_classes=None)  # unconditional: bits/dim of p(x)
    mnist.train.label_dropout = 0.0
    config.train = mnist.train
    return config
