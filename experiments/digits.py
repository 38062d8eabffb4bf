"""The default experiment: a small DDPM on scikit-learn's 8x8 handwritten digits (1,797 images, no download).

    python -m ddpm_jax train --config experiments/digits.py --workdir runs/digits

About 3.5 minutes on a 2-core CPU, compiles included (~430 images/s after a ~12 s compile). The loss (L_simple)
falls from ~1 to ~0.07; the EMA sample grid in runs/digits/samples/step_0001200.png shows recognizable digits.
"""

from ddpm_jax.configs import base_config
from ddpm_jax.models import unet


def get_config():
    config = base_config()
    config.data.source = "digits"
    config.data.random_flip = False  # digits are not mirror-symmetric
    config.model.update(unet.PRESETS["digits"])  # 0.76M params; 8 GroupNorm groups, scale-shift norm
    config.train.update(num_steps=1200, batch_size=64, learning_rate=1e-3, lr_schedule="cosine", warmup_steps=100,
                        ema_decay=0.999, ema_warmup=True, log_every=100, checkpoint_every=400, sample_every=1200,
                        keep_checkpoints=2)
    return config
