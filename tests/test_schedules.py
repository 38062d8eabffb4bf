"""Schedules against closed forms computed independently in float64 numpy."""

import math

import numpy as np
import pytest

from ddpm_jax import schedules


def test_linear_matches_ho_et_al():
    betas = schedules.get_betas("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4, rel=1e-12) and betas[-1] == pytest.approx(0.02, rel=1e-12)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-9)
    # Scaled by 1000 / T for other lengths.
    short = schedules.get_betas("linear", 100)
    assert short[0] == pytest.approx(1e-3) and short[-1] == pytest.approx(0.2)


def test_quadratic_is_square_of_linear_sqrt():
    betas = schedules.get_betas("quadratic", 50)
    roots = np.sqrt(betas)
    np.testing.assert_allclose(np.diff(roots), np.diff(roots)[0], rtol=1e-9)
    assert betas[0] == pytest.approx(20 * 1e-4) and betas[-1] == pytest.approx(20 * 0.02)


def test_cosine_alpha_bar_matches_formula():
    T, s = 1000, 0.008
    abar = np.cumprod(1 - schedules.get_betas("cosine", T))
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    expected = np.array([f(t + 1) / f(0) for t in range(T)])
    # Exact wherever the 0.999 clip is inactive (all but the last step).
    np.testing.assert_allclose(abar[:-1], expected[:-1], rtol=1e-10, atol=1e-15)
    assert schedules.get_betas("cosine", T).max() == pytest.approx(0.999)


def test_sigmoid_schedule_is_monotone_valid():
    betas = schedules.get_betas("sigmoid", 200)
    abar = np.cumprod(1 - betas)
    assert np.all((betas > 0) & (betas <= 0.999))
    assert np.all(np.diff(abar) < 0) and abar[0] > 0.99 and abar[-1] < 1e-2
    # Its alpha_bar(tau) = (sig(3) - sig(6 tau - 3)) / (sig(3) - sig(-3)) at tau = t / T.
    sig = lambda z: 1 / (1 + np.exp(-z))
    tau = np.arange(1, 200) / 200
    np.testing.assert_allclose(abar[:-1], (sig(3) - sig(6 * tau - 3)) / (sig(3) - sig(-3)), rtol=1e-9)


@pytest.mark.parametrize("name", schedules.SCHEDULE_NAMES)
def test_zero_terminal_snr(name):
    betas = schedules.get_betas(name, 100)
    rescaled = schedules.get_betas(name, 100, zero_terminal_snr=True)
    abar, abar_new = np.cumprod(1 - betas), np.cumprod(1 - rescaled)
    assert abar_new[-1] == 0.0 and rescaled[-1] == pytest.approx(1.0)
    assert abar_new[0] == pytest.approx(abar[0], rel=1e-12)
    # sqrt(alpha_bar) is an affine map of the original (Lin et al. alg. 1).
    a, b = np.polyfit(np.sqrt(abar), np.sqrt(abar_new), 1)
    np.testing.assert_allclose(a * np.sqrt(abar) + b, np.sqrt(abar_new), atol=1e-12)
    sched = schedules.make_schedule(rescaled)
    assert np.isneginf(np.asarray(schedules.log_snr(sched))[-1])
    assert np.all(np.isfinite(np.asarray(sched.posterior_variance)))


def test_make_schedule_tables_against_float64_closed_forms():
    betas = schedules.get_betas("cosine", 50)
    sched = schedules.make_schedule(betas)
    assert sched.num_timesteps == 50
    for leaf in (sched.betas, sched.posterior_variance, sched.log_snr):
        assert leaf.dtype == np.float32 and leaf.shape == (50,)
    abar = np.array([np.prod(1 - betas[: t + 1]) for t in range(50)])
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    np.testing.assert_allclose(sched.alphas_cumprod, abar, rtol=1e-6)
    np.testing.assert_allclose(sched.alphas_cumprod_prev, abar_prev, rtol=1e-6)
    # Posterior variance beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t (Ho eq. 7).
    post_var = (1 - abar_prev) / (1 - abar) * betas
    np.testing.assert_allclose(sched.posterior_variance, post_var, rtol=1e-6)
    np.testing.assert_allclose(
        sched.posterior_log_variance_clipped, np.log(np.r_[post_var[1], post_var[1:]]), rtol=1e-6
    )
    np.testing.assert_allclose(sched.fixed_large_log_variance, np.log(np.r_[post_var[1], betas[1:]]), rtol=1e-6)
    np.testing.assert_allclose(sched.posterior_mean_coef1, np.sqrt(abar_prev) * betas / (1 - abar), rtol=1e-6)
    np.testing.assert_allclose(
        sched.posterior_mean_coef2, np.sqrt(1 - betas) * (1 - abar_prev) / (1 - abar), rtol=1e-6
    )
    np.testing.assert_allclose(schedules.snr(sched), abar / (1 - abar), rtol=1e-5)
    np.testing.assert_allclose(schedules.log_snr(sched), np.log(abar / (1 - abar)), rtol=1e-5, atol=1e-5)
    t = np.array([0, 7, 49], np.int32)
    np.testing.assert_allclose(schedules.snr(sched, t), (abar / (1 - abar))[t], rtol=1e-5)


def test_float64_precision_survives_float32_cast():
    # 1 - alpha_bar near t = 0 is tiny: computed in float64, its log is exact to float32 precision.
    betas = schedules.get_betas("linear", 1000)
    sched = schedules.make_schedule(betas)
    np.testing.assert_allclose(sched.log_one_minus_alphas_cumprod[0], np.log(1e-4), rtol=1e-6)
    np.testing.assert_allclose(sched.sqrt_recipm1_alphas_cumprod[0], np.sqrt(1 / (1 - 1e-4) - 1), rtol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="linear, quadratic, cosine, sigmoid"):
        schedules.get_betas("exponential", 10)
    with pytest.raises(ValueError, match="num_timesteps"):
        schedules.get_betas("linear", 1)
    with pytest.raises(ValueError, match="T = 20 is too short"):
        schedules.get_betas("linear", 20)  # beta_end 0.02 * 1000 / 20 = 1
    with pytest.raises(ValueError, match="option"):
        schedules.get_betas("cosine", 10, beta_end=0.1)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        schedules.make_schedule(np.array([0.1, -0.1]))
    with pytest.raises(ValueError, match="1-D"):
        schedules.make_schedule(np.ones((2, 2)) * 0.1)
