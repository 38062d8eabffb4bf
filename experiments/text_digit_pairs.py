"""Text-to-image latent diffusion at laptop scale (issue 16): captioned pairs of scikit-learn's 8x8 digits.

    python -m ddpm_jax train --config experiments/text_digit_pairs.py --workdir runs/text_pairs
    python -m ddpm_jax sample --workdir runs/text_pairs --prompt "three left of eight" --num 32 --guidance 3.0 \
        --out runs/text_pairs/three_eight.png

The data ("pairs:digits", `ddpm_jax.text_pairs`): 8x16 canvases of two digits side by side, captioned "three left
of eight" or "eight right of three" (both: 3 on the left, 8 on the right); the 10 ordered pairs (L, (L + 3) mod
10) never appear in training. One `train` command runs both stages, each resumable:

1. a KL autoencoder (f = 2, 4 latent channels: 8x16x1 <-> 4x8x4), its scale factor computed from the data;
2. a text-conditional U-Net on the scaled latents (cross-attention to a 2-layer Transformer over the caption's
   words at 4x8 and 2x4, trained with it; the empty prompt is the null condition, 10% of prompts dropped to it).
   The cross-attention queries carry a learned position embedding (`model.cross_attention_positions`): which
   word a latent pixel should read depends on whether it is on the left or the right. Without it the model drew
   the two asked digits in either order (57.5% of seen and 21.2% of held-out prompts right at guidance 3).

Measurements: docs/text_to_image.md (benchmarks/prompt_accuracy.py).
"""

from ddpm_jax.configs import base_config


def get_config():
    config = base_config()
    config.data.update(source="pairs:digits", random_flip=False)
    config.model.update(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4, 2), dropout=0.0,
                        norm_groups=8, scale_shift_norm=True, num_heads=4, cross_attention_positions=True)
    config.model.text = dict(max_length=8, width=64, depth=2, num_heads=4, vocabulary=())
    config.autoencoder = dict(
        ch=32, ch_mult=(1, 2), num_res_blocks=1, latent_channels=4, out_channels=1, norm_groups=8, kl_weight=1e-4,
        train=dict(num_steps=1000, batch_size=64, learning_rate=1e-3, lr_schedule="cosine", warmup_steps=100,
                   ema_decay=0.999, ema_warmup=True, log_every=100, checkpoint_every=500, sample_every=0,
                   keep_checkpoints=2))
    config.train.update(num_steps=1500, batch_size=128, learning_rate=1e-3, lr_schedule="cosine", warmup_steps=100,
                        ema_decay=0.999, ema_warmup=True, label_dropout=0.1, log_every=100, checkpoint_every=500,
                        sample_every=0, keep_checkpoints=2)
    config.sample.update(sampler="dpm++2m-sde", num_steps=20, clip_denoised=False)
    return config
