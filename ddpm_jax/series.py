"""Time series as diffusion data: real series bundled by statsmodels, windows, a split in time, per-window scaling.

A series is float64 [T, C] (T steps of C variables). A window is `context + horizon` consecutive steps; the model
learns the distribution of whole windows, and a forecast fills the last `horizon` steps given the first `context`
(`ddpm_jax.forecasting`).

Series (the `series:NAME` data sources), offline:

* ``co2``: monthly means of the weekly Mauna Loa CO2 record (`statsmodels.datasets.co2`, ppm), from 1965-01 to
  2001-12, 444 months. The weekly record has gaps: before 1965 five whole months are missing (1958-06, 1958-10,
  1964-02..04), so the series starts after them rather than filling them. Period 12 (a yearly cycle on a trend).
* ``elnino``: monthly sea surface temperature of the Nino 1+2 region (`statsmodels.datasets.elnino`, deg C),
  1950-01 to 2010-12, 732 months. Period 12.
* ``series:/path/file.npy``: any float array [T] or [T, C] (period 0 unless the config names one).

The split is in time: the last `test_size` steps are the test part, the rest the training part, and every window
lies wholly inside one part (`split_bounds`): no test window, context or target, overlaps the training steps.
Windows start at every step (stride 1).

Scaling is per window from its context alone (no peeking at the target): loc = the context's mean, scale = its
standard deviation, per variable; the model sees (x - loc) / scale. A series with a trend (co2) then looks the
same to the model in every decade, and a forecast is mapped back to the data's units by x * scale + loc.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

SERIES = ("co2", "elnino")
PERIODS = {"co2": 12, "elnino": 12}
SPLITS = ("train", "test")
MIN_SCALE = 1e-6  # floor of a window's scale (a constant context), relative to the series' own scale


class Windows(NamedTuple):
    """Windows of one split: `values` float64 [N, W, C] in the data's units, `scaled` float32 [N, W, C] the same
    divided per window (x - loc) / scale, `loc` and `scale` float64 [N, 1, C], `start` int [N]: the index of each
    window's first step in the series."""

    values: np.ndarray
    scaled: np.ndarray
    loc: np.ndarray
    scale: np.ndarray
    start: np.ndarray


def load_series(name: str) -> np.ndarray:
    """The series `name` (a bundled one of SERIES, or a path to an .npy of [T] or [T, C]) as float64 [T, C],
    checked for NaN and inf (`check_finite`)."""
    if name == "co2":
        from statsmodels.datasets import co2

        weekly = co2.load_pandas().data["co2"]
        values = weekly.resample("MS").mean().loc["1965-01-01":].to_numpy()
    elif name == "elnino":
        from statsmodels.datasets import elnino

        values = elnino.load_pandas().data.drop(columns="YEAR").to_numpy().reshape(-1)  # years x months, in order
    elif name.endswith(".npy"):
        if not os.path.exists(name):
            raise FileNotFoundError(f"series file {name!r} does not exist")
        values = np.load(name, allow_pickle=False)
    else:
        raise ValueError(f"unknown series {name!r}; accepted: {', '.join(SERIES)} (bundled with statsmodels), or a "
                         "path to an .npy file of shape [T] or [T, C]")
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"series {name!r} must have shape [T] or [T, C] with T >= 1, got {values.shape}")
    check_finite(values, f"series {name!r}")
    return values


def check_finite(values: np.ndarray, what: str) -> None:
    """Raise ValueError naming the steps (and variables) of any NaN or inf in `values` [T, C]."""
    bad = ~np.isfinite(values)
    if bad.any():
        steps, variables = np.nonzero(bad)
        where = ", ".join(f"step {s}" + (f" (variable {v})" if values.shape[1] > 1 else "")
                          for s, v in zip(steps[:10], variables[:10]))
        more = f" and {len(steps) - 10} more" if len(steps) > 10 else ""
        raise ValueError(f"{what} has {len(steps)} missing or non-finite values (NaN or inf) at {where}{more}: "
                         "fill or cut them before making windows (a model cannot learn from NaN).")


def split_bounds(length: int, test_size: int, split: str) -> tuple[int, int]:
    """[begin, end) of `split` in a series of `length` steps: "train" [0, length - test_size), "test" the rest."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} of a series; accepted: {', '.join(SPLITS)}")
    if not 0 < test_size < length:
        raise ValueError(f"test_size must be in [1, {length - 1}] for a series of {length} steps, got {test_size}")
    return (0, length - test_size) if split == "train" else (length - test_size, length)


def make_windows(values: np.ndarray, context: int, horizon: int, test_size: int, split: str) -> Windows:
    """Every window of `context + horizon` steps inside `split` of `values` [T, C], scaled by its context."""
    if context < 2 or horizon < 1:
        raise ValueError(f"context must be >= 2 steps (its spread scales the window) and horizon >= 1, got "
                         f"context={context}, horizon={horizon}")
    begin, end = split_bounds(len(values), test_size, split)
    width = context + horizon
    if width > end - begin:
        raise ValueError(f"a window of context + horizon = {context} + {horizon} = {width} steps is longer than the "
                         f"{split!r} part of the series ({end - begin} of its {len(values)} steps): shorten the "
                         "window" + (" or change test_size" if split == "test" else " or the test part"))
    start = np.arange(begin, end - width + 1)
    windows = values[start[:, None] + np.arange(width)]                                  # [N, W, C]
    past = windows[:, :context]
    loc = past.mean(axis=1, keepdims=True)
    floor = MIN_SCALE * max(float(values.std()), 1.0)
    scale = np.maximum(past.std(axis=1, keepdims=True), floor)
    scaled = ((windows - loc) / scale).astype(np.float32)
    return Windows(windows, scaled, loc, scale, start)


def load_windows(name: str, split: str, *, context: int, horizon: int, test_size: int) -> Windows:
    """`make_windows` of the series `name` (`load_series`)."""
    return make_windows(load_series(name), context, horizon, test_size, split)
