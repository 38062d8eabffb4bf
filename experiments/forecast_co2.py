"""Probabilistic forecasting of monthly Mauna Loa CO2 (statsmodels' bundled record, 1965-2001, no download): a 1-D
U-Net learns windows of 48 months; a forecast of the next 12 months fills the last 12 steps of a window given its
first 36 by inpainting (see docs/forecasting.md).

    python -m ddpm_jax train --config experiments/forecast_co2.py --workdir runs/forecast_co2
    python -m ddpm_jax forecast --workdir runs/forecast_co2 --out runs/forecast_co2/forecast.npz

The last 120 months (1992-2001) are the test part: 73 test windows, none overlapping the 324 training months
(277 training windows). Each window is scaled by its own context's mean and spread. Training time and the
forecast scores (CRPS, MAE, coverage against naive, seasonal-naive and ETS forecasts) are in docs/forecasting.md.
"""

from ddpm_jax.configs import base_config
from ddpm_jax.models import unet1d


def get_config():
    config = base_config()
    config.data.source = "series:co2"
    config.data.random_flip = False
    config.data.window = dict(context=36, horizon=12, test_size=120)  # months
    config.data.period = 12  # the seasonal-naive baseline's season
    config.model.update(unet1d.PRESETS["series"], arch="unet1d")  # 639,041 params
    config.diffusion.update(schedule="cosine", variance="fixed_small")
    config.train.update(num_steps=2000, batch_size=64, learning_rate=1e-3, lr_schedule="cosine", warmup_steps=100,
                        ema_decay=0.999, ema_warmup=True, log_every=100, checkpoint_every=1000, sample_every=0,
                        keep_checkpoints=2)
    config.sample.update(sampler="ddim", num_steps=50, eta=1.0, clip_denoised=False)
    return config
