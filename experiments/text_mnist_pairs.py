"""Text-to-image latent diffusion on captioned MNIST pairs (issue 16): 28x56 canvases of two MNIST digits.

    python -m ddpm_jax train --config experiments/text_mnist_pairs.py --workdir runs/text_mnist_pairs
    # offline, from a local copy of MNIST (keys x_train, y_train, x_test, y_test):
    python -m ddpm_jax train --config experiments/text_mnist_pairs.py --workdir runs/text_mnist_pairs \
        --config.data.source=pairs:npz:/path/to/mnist.npz
    python -m ddpm_jax sample --workdir runs/text_mnist_pairs --prompt "three left of eight" --num 32 --guidance 3 \
        --out three_eight.png

The captions, templates and held-out pairs of experiments/text_digit_pairs.py (`ddpm_jax.text_pairs`; 60,000
training canvases). The autoencoder halves the resolution (28x56x1 <-> 14x28x4); the U-Net (ch 32, 14x28 ->
7x14) has self- and cross-attention at 7x14 and in the middle. Sized for an accelerator (not measured on the
2-core CPU); prompt accuracy with `train-classifier --dataset mnist` and benchmarks/prompt_accuracy.py.
"""

import os

from ddpm_jax.configs import load_config


def get_config():
    """experiments/text_digit_pairs.py with what differs for MNIST: the source, attention at 7x14, longer stages."""
    config = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "text_digit_pairs.py"))
    config.data.source = "pairs:mnist"
    config.model.attn_resolutions = (7,)
    config.autoencoder.train.update(num_steps=4000, warmup_steps=200, checkpoint_every=1000)
    config.train.update(num_steps=20_000, warmup_steps=200, checkpoint_every=2000)
    return config
