"""Fashion-MNIST given 30 minutes on 2 CPU cores: experiments/mnist.py's network and recipe on clothes, with flips.

    python -m ddpm_jax train --config experiments/fashion_mnist.py --workdir runs/fashion_mnist
    # offline: --config.data.source=npz:/path/to/fashion_mnist.npz (keys x_train, y_train, x_test, y_test)
    python -m ddpm_jax sample --workdir runs/fashion_mnist --num 500 --out runs/fashion_mnist/samples.png

Garments are mirror-symmetric, so horizontal flips double the data for free; the ten classes condition the
U-Net as the digits do (label dropout 0.1, so guidance works).
"""

import os

from ddpm_jax.configs import load_config


def get_config():
    config = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist.py"))
    config.data.update(source="fashion_mnist", random_flip=True)
    return config
