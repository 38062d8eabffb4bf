"""Diffusion on sequences: the 1-D U-Net's shapes, every sampler and loss on [B, L, C], series windows split in
time without leakage, CRPS against its closed form for a Gaussian, the bad inputs, and `forecast` end to end."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from ddpm_jax import __main__ as cli
from ddpm_jax import config_schema, configs, data, forecasting, functional, losses, runs, sampling, schedules, series, train
from ddpm_jax.models import unet, unet1d

B, L, C = 2, 16, 2


def _abstract(model, x, t):
    return jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, t)[::-1])


# ----- the 1-D U-Net

@pytest.mark.parametrize("kw, out_c", [({}, C), ({"learn_sigma": True}, 2 * C), ({"out_channels": 5}, 5),
                                       ({"ch_mult": (1, 2, 2), "attn_resolutions": (8, 4)}, C)])
def test_unet1d_shapes(kw, out_c):
    x, t = jnp.zeros((B, L, C)), jnp.zeros((B,), jnp.int32)
    params, out = _abstract(unet1d.preset("tiny", **kw), x, t)
    assert out.shape == (B, L, out_c) and out.dtype == jnp.float32
    kernel = params["params"]["conv_in"]["kernel"]
    assert kernel.shape == (3, C, 32)  # 3 taps over L
    if "attn_resolutions" not in kw:
        assert "down_0_attn_0" not in params["params"] and "down_1_attn_0" in params["params"]  # attention at L/2 = 8


def test_unet1d_starts_at_zero_and_conditions_on_t():
    model = unet1d.preset("tiny")
    x = jax.random.normal(jax.random.key(1), (B, L, C))
    params = model.init(jax.random.key(0), x, jnp.zeros((B,), jnp.int32))
    assert not np.any(np.asarray(model.apply(params, x, jnp.array([0, 999]))))  # zero-initialized output conv
    assert unet.count_params(params) == 344_802  # C = 2 (344,609 for one variable, the docstring's)


def test_unet1d_bad_inputs():
    model = unet1d.preset("tiny", ch_mult=(1, 2, 2))
    with pytest.raises(ValueError, match=r"L = 18 cannot be halved 2 times.*multiple of 4"):
        _abstract(model, jnp.zeros((B, 18, C)), jnp.zeros((B,), jnp.int32))
    with pytest.raises(ValueError, match=r"sequences \[B, L, C\]"):
        _abstract(model, jnp.zeros((B, 8, 8, C)), jnp.zeros((B,), jnp.int32))


# ----- every sampler and loss on [B, L, C], unchanged

@pytest.fixture(scope="module")
def tiny_1d():
    """A tiny UNet1D (learned variance: 2C outputs) with its zero-initialized kernels perturbed, so it outputs
    something, and a 20-step schedule."""
    model = unet1d.preset("tiny", learn_sigma=True)
    params = model.init(jax.random.key(0), jnp.zeros((B, L, C)), jnp.zeros((B,), jnp.int32))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda p: p + 0.05 * rng.standard_normal(p.shape).astype(np.float32), params)
    return functional.bind(model.apply, params), schedules.make_schedule(schedules.get_betas("cosine", 20))


@pytest.mark.parametrize("sampler", sampling.SAMPLERS)
def test_every_sampler_on_sequences(tiny_1d, sampler):
    model_fn, sched = tiny_1d
    options = dict(variance="learned_range") if sampler == "ancestral" else dict(num_steps=4)
    x = sampling.sample(model_fn, sched, jax.random.key(3), (B, L, C), sampler=sampler, **options)
    assert x.shape == (B, L, C) and np.all(np.isfinite(np.asarray(x)))


@pytest.mark.parametrize("loss_type, prediction, variance", [
    ("mse", "eps", "fixed_small"), ("mse", "x0", "fixed_large"), ("mse", "v", "fixed_small"),
    ("hybrid", "eps", "learned_range"), ("kl", "eps", "learned_range")])
def test_every_loss_on_sequences(tiny_1d, loss_type, prediction, variance):
    model_fn, sched = tiny_1d
    if variance != "learned_range":
        full = model_fn
        model_fn = lambda x, t: full(x, t)[..., :C]  # noqa: E731 - the prediction channels only
    x0 = jax.random.normal(jax.random.key(4), (B, L, C))
    loss, aux = losses.training_loss(model_fn, sched, x0, jax.random.key(5), loss_type=loss_type,
                                     prediction=prediction, variance=variance)
    assert loss.shape == () and np.isfinite(float(loss)) and aux["loss"].shape == (B,)


# ----- windows and the split in time

def test_windows_split_in_time_without_leakage():
    values = np.arange(100, dtype=np.float64)[:, None] * np.array([[1.0, -2.0]])  # the value names its step
    tr = series.make_windows(values, 12, 4, 30, "train")
    te = series.make_windows(values, 12, 4, 30, "test")
    assert tr.values.shape == (70 - 16 + 1, 16, 2) and te.values.shape == (30 - 16 + 1, 16, 2)
    assert tr.values[..., 0].max() < 70 <= te.values[..., 0].min()  # no test step (context or target) in training
    np.testing.assert_array_equal(te.start, np.arange(70, 85))
    np.testing.assert_allclose(te.scaled * te.scale + te.loc, te.values, rtol=1e-5, atol=1e-5)
    changed = values.copy()
    changed[82:] = 1e6  # the targets of the first test windows: their scaling must not see them
    again = series.make_windows(changed, 12, 4, 30, "test")
    np.testing.assert_array_equal(again.loc[0], te.loc[0])
    np.testing.assert_array_equal(again.scale[0], te.scale[0])


def test_bundled_series_and_the_pipeline():
    co2 = series.load_series("co2")
    assert co2.shape == (444, 1) and 315 < co2.min() < co2.max() < 375  # ppm, 1965-2001
    assert series.load_series("elnino").shape == (732, 1)
    window = dict(context=36, horizon=12, test_size=120)
    assert data.image_shape("series:co2", window=window) == (48, 1)
    arrays = data.load_arrays("series:co2", "train", window=window)
    pipeline = data.make_iterator(arrays, global_batch_size=16, seed=0, num_devices=8, process_index=0,
                                  process_count=1, prefetch=0)
    batch = next(pipeline)
    assert batch["image"].shape == (8, 2, 48, 1) and batch["image"].dtype == np.float32 and "label" not in batch


# ----- CRPS

@pytest.mark.parametrize("mu, sigma, y", [(0.0, 1.0, 0.3), (2.0, 0.5, -1.0), (-1.0, 3.0, 4.0)])
def test_crps_of_a_gaussian_forecast(mu, sigma, y):
    closed = float(forecasting.crps_gaussian(mu, sigma, y))
    z = (y - mu) / sigma
    formula = sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi))
    assert closed == pytest.approx(formula, rel=1e-12)
    # The definition, integral of (F(x) - 1{x >= y})^2 dx.
    below, _ = integrate.quad(lambda x: stats.norm.cdf(x, mu, sigma) ** 2, -np.inf, y)
    above, _ = integrate.quad(lambda x: stats.norm.sf(x, mu, sigma) ** 2, y, np.inf)
    assert closed == pytest.approx(below + above, rel=1e-7)
    # The sample CRPS of many Gaussian quantiles converges to it.
    samples = forecasting.gaussian_samples(np.full((1, 1, 1), mu), np.full((1, 1, 1), sigma), 20_000)
    assert float(forecasting.crps(samples, np.full((1, 1, 1), y))[0, 0, 0]) == pytest.approx(closed, rel=1e-4)


def test_sample_crps_is_the_energy_form():
    x = np.random.default_rng(0).normal(size=(3, 7))
    y = np.array([0.1, -2.0, 5.0])
    brute = np.abs(x - y[:, None]).mean(1) - 0.5 * np.abs(x[:, :, None] - x[:, None, :]).mean((1, 2))
    np.testing.assert_allclose(forecasting.crps(x, y, axis=1), brute, rtol=1e-12)
    assert forecasting.crps(np.full((1, 5), 2.0), np.array([3.5]))[0] == pytest.approx(1.5)  # a point forecast


def test_scores_and_baselines():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(400, 6, 1))
    samples = rng.normal(size=(400, 200, 6, 1))
    s = forecasting.scores(samples, target)
    assert abs(s["coverage_50"] - 0.5) < 0.04 and abs(s["coverage_90"] - 0.9) < 0.03
    context = np.tile(np.array([0.0, 1.0, 2.0, 3.0]), 3)[None, :, None]  # period 4
    exact = forecasting.seasonal_naive(context, 6, 10, period=4)
    np.testing.assert_allclose(exact[0, :, :, 0], np.tile([0.0, 1.0, 2.0, 3.0, 0.0, 1.0], (10, 1)))  # no spread
    walk = forecasting.naive(context, 3, 1000)  # last value 3; one-step changes: nine 1s, two -3s (ms 27 / 11)
    assert np.median(walk[0, :, 0, 0]) == pytest.approx(3.0, abs=1e-3)
    assert np.std(walk[0, :, 2, 0]) == pytest.approx(math.sqrt(27 / 11 * 3), rel=0.01)  # 3 steps ahead


# ----- bad input

def test_bad_series_and_windows(tmp_path):
    values = np.sin(np.arange(60.0))
    values[[7, 41]] = np.nan
    path = str(tmp_path / "gappy.npy")
    np.save(path, values)
    with pytest.raises(ValueError, match=r"2 missing or non-finite values \(NaN or inf\) at step 7, step 41"):
        series.load_series(path)
    with pytest.raises(ValueError, match=r"context \+ horizon = 50 \+ 14 = 64 steps is longer than the 'train' "
                                         r"part of the series \(40 of its 60 steps\)"):
        series.make_windows(np.zeros((60, 1)), 50, 14, 20, "train")
    with pytest.raises(ValueError, match="unknown series 'sunspots'; accepted: co2, elnino"):
        series.load_series("sunspots")
    config = configs.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", "forecast_co2.py"),
                                 ["--config.data.window.context=3", "--config.data.window.horizon=2"])
    with pytest.raises(ValueError, match=r"context \+ horizon = 3 \+ 2 = 5 steps, cannot be halved 2 times by the "
                                         r"U-Net.*multiple of 4"):
        config_schema.validate_config(config)


# ----- end to end: train a few steps on a series, forecast from the CLI

@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("series")
    steps = np.arange(120.0)
    np.save(tmp / "seasonal.npy", np.stack([np.sin(2 * np.pi * steps / 4) + 0.01 * steps, np.cos(steps / 5)], 1))
    config = configs.load_config(
        os.path.join(os.path.dirname(__file__), "..", "experiments", "forecast_co2.py"),
        [f"--config.data.source=series:{tmp / 'seasonal.npy'}", "--config.data.window.context=12",
         "--config.data.window.horizon=4", "--config.data.window.test_size=20", "--config.data.period=4",
         "--config.model.ch_mult=(1, 2)", "--config.model.attn_resolutions=(8,)",
         "--config.diffusion.num_timesteps=20", "--config.train.num_steps=2", "--config.train.batch_size=8",
         "--config.train.checkpoint_every=2", "--config.sample.num_steps=3"])
    workdir = str(tmp / "run")
    train.train_and_evaluate(config, workdir, progress=False)
    return workdir, tmp


def test_forecast_command(series_run):
    workdir, tmp = series_run
    out = str(tmp / "forecast.npz")
    assert cli.main(["forecast", "--workdir", workdir, "--out", out, "--num-samples", "6"]) == 0
    with np.load(out) as f:
        context, target, samples, period = f["context"], f["target"], f["samples"], int(f["period"])
    n = 20 - 16 + 1
    assert context.shape == (n, 12, 2) and target.shape == (n, 4, 2) and samples.shape == (n, 6, 4, 2)
    assert period == 4 and np.all(np.isfinite(samples))
    full = np.load(tmp / "seasonal.npy")
    np.testing.assert_allclose(target[0], full[100 + 12:100 + 16])  # the data's own units, the test part
    report = json.load(open(str(tmp / "forecast.json")))["scores"]
    assert set(report) == {"diffusion", "naive", "seasonal naive", "ETS"}
    assert os.path.getsize(str(tmp / "forecast.png")) > 1000


def test_forecast_refuses_an_image_run_and_bad_arguments(series_run, tmp_path, capsys):
    workdir, _ = series_run
    assert cli.main(["forecast", "--workdir", workdir, "--out", str(tmp_path / "f.csv")]) == 2
    assert "give a path ending in .npz" in capsys.readouterr().err
    config = configs.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", "digits.py"))
    with pytest.raises(ValueError, match="forecast needs a run trained on a series"):
        runs.forecast(config, None, jax.random.key(0), 4)
    for command in ("sample", "evaluate"):  # and the image commands refuse a series run, naming `forecast`
        assert cli.main([command, "--workdir", workdir]) == 2
        err = capsys.readouterr().err
        assert f"{command} works on image runs" in err and "python -m ddpm_jax forecast" in err, err
