"""DDPM on Fashion-MNIST (28x28): the MNIST experiment on clothes, wider and longer, with flips.

    python -m ddpm_jax train --config experiments/fashion_mnist.py --workdir runs/fashion_mnist
    # offline: --config.data.source=npz:/path/to/fashion_mnist.npz (keys x_train, y_train, x_test, y_test)

Garments are mirror-symmetric (flips on) and carry more texture than digits: ch 64 and 40k steps.
"""

from ddpm_jax.configs import base_config
from ddpm_jax.models import unet


def get_config():
    config = base_config()
    config.data.update(source="fashion_mnist", random_flip=True)
    config.model.update(unet.PRESETS["fashion_mnist"])
    config.train.update(num_steps=40_000, batch_size=128, learning_rate=5e-4, lr_schedule="cosine",
                        warmup_steps=500, ema_decay=0.9995, ema_warmup=True, checkpoint_every=2000,
                        sample_every=5000)
    return config
