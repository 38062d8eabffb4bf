"""The default experiment: a small DDPM on scikit-learn's 8x8 handwritten digits (1,797 images, no download).

    python -m ddpm_jax train --config experiments/digits.py --workdir runs/digits

About 4 minutes on a 2-core CPU, compiles included. Expect the loss (L_simple) to fall from ~1 to ~0.1 and
recognizable digits in runs/digits/samples/ (EMA params, DDIM 50 steps).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = dict(source="digits", data_dir=None, random_flip=False)
    config.model = dict(
        ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0, scale_shift_norm=False,
        num_classes=None, num_heads=1, dtype="float32",
    )
    config.diffusion = dict(
        schedule="linear", num_timesteps=1000, zero_terminal_snr=False, schedule_options={},
        prediction="eps", variance="fixed_large", loss_type="mse", weighting="none", hybrid_lambda=1e-3,
        min_snr_gamma=5.0, p2_k=1.0, p2_gamma=1.0, importance_sampling=False,
    )
    config.train = dict(
        num_steps=3000, batch_size=128, optimizer="adam", learning_rate=1e-3, lr_schedule="cosine",
        warmup_steps=100, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0,
        ema_decay=0.999, ema_warmup=True, label_dropout=0.0, steps_per_call=1,
        log_every=100, checkpoint_every=1000, sample_every=1000, keep_checkpoints=2,
    )
    config.sample = dict(sampler="ddim", num_steps=50, eta=0.0, num_images=64, clip_denoised=True,
                         per_device_batch=None)
    return ml_collections.ConfigDict(config)
