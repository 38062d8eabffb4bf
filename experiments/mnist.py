"""DDPM on MNIST (28x28, 60k images): a CPU-sized U-Net that still draws clean digits.

    python -m ddpm_jax train --config experiments/mnist.py --workdir runs/mnist
    # offline, from a local copy of the arrays (keys x_train, y_train, x_test, y_test):
    python -m ddpm_jax train --config experiments/mnist.py --workdir runs/mnist \
        --config.data.source=npz:/path/to/mnist.npz

ch 32, multipliers (1, 2, 2) (28 -> 14 -> 7), attention at 7x7; T = 1000 linear; Adam 1e-3 with cosine decay.
On a GPU, 20k steps give sharp digits; on a 2-core CPU expect ~15 images/s per core.
"""

from ddpm_jax.configs import base_config
from ddpm_jax.models import unet


def get_config():
    config = base_config()
    config.data.update(source="mnist", random_flip=False)
    config.model.update(unet.PRESETS["mnist"])
    config.train.update(num_steps=20_000, batch_size=128, learning_rate=1e-3, lr_schedule="cosine",
                        warmup_steps=200, ema_decay=0.999, ema_warmup=True, log_every=100,
                        checkpoint_every=1000, sample_every=2000)
    return config
