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

from ddpm_jax.configs import base_config


def get_config():
    config = base_config()
    config.data.update(source="pairs:mnist", random_flip=False)
    config.model.update(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0, norm_groups=8,
                        scale_shift_norm=True, num_heads=4)
    config.model.text = dict(max_length=8, width=64, depth=2, num_heads=4, vocabulary=())
    config.autoencoder = dict(
        ch=32, ch_mult=(1, 2), num_res_blocks=1, latent_channels=4, out_channels=1, norm_groups=8, kl_weight=1e-4,
        train=dict(num_steps=4000, batch_size=64, learning_rate=1e-3, lr_schedule="cosine", warmup_steps=200,
                   ema_decay=0.999, ema_warmup=True, log_every=100, checkpoint_every=1000, sample_every=0,
                   keep_checkpoints=2))
    config.train.update(num_steps=20_000, batch_size=128, learning_rate=1e-3, lr_schedule="cosine", warmup_steps=200,
                        ema_decay=0.999, ema_warmup=True, label_dropout=0.1, log_every=100, checkpoint_every=2000,
                        sample_every=0, keep_checkpoints=2)
    config.sample.update(sampler="dpm++2m-sde", num_steps=20, clip_denoised=False)
    return config
