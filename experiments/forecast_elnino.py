"""Probabilistic forecasting of monthly Nino 1+2 sea surface temperature (statsmodels' bundled elnino data,
1950-2010, no download): the co2 recipe (experiments/forecast_co2.py: a 1-D U-Net on windows of 48 months,
forecasts of the next 12 by inpainting) on a series with a strong season, no trend, and El Nino years.

    python -m ddpm_jax train --config experiments/forecast_elnino.py --workdir runs/forecast_elnino
    python -m ddpm_jax forecast --workdir runs/forecast_elnino --out runs/forecast_elnino/forecast.npz

The last 144 months (1999-2010) are the test part: 97 test windows, none overlapping the 588 training months
(541 training windows). Training time and scores are in docs/forecasting.md.
"""

import os

from ddpm_jax import configs


def get_config():
    config = configs.load_config(os.path.join(os.path.dirname(__file__), "forecast_co2.py"))
    config.data.source = "series:elnino"
    config.data.window.test_size = 144  # months
    return config
