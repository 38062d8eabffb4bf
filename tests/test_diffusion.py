"""Diffusion math against independent float64 computations, identities and sampling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ddpm_jax import diffusion, schedules

T = 40
BETAS = schedules.get_betas("cosine", T)
SCHED = schedules.make_schedule(BETAS)
ABAR = np.cumprod(1 - BETAS)
ABAR_PREV = np.r_[1.0, ABAR[:-1]]
SHAPE = (4, 6, 6, 3)


def _data(seed=0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, shape).astype(np.float32)
    noise = rng.standard_normal(shape).astype(np.float32)
    t = rng.integers(0, T, shape[0]).astype(np.int32)
    return x0, noise, t


def _col(a, t):
    return a[t][:, None, None, None]


def test_q_sample_closed_form():
    x0, noise, t = _data()
    x_t = diffusion.q_sample(SCHED, x0, t, noise)
    expected = np.sqrt(_col(ABAR, t)) * x0 + np.sqrt(1 - _col(ABAR, t)) * noise
    np.testing.assert_allclose(x_t, expected, rtol=1e-5, atol=1e-6)
    mean, var, log_var = diffusion.q_mean_variance(SCHED, x0, t)
    np.testing.assert_allclose(mean, np.sqrt(_col(ABAR, t)) * x0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, np.broadcast_to(1 - _col(ABAR, t), SHAPE), rtol=1e-5)
    np.testing.assert_allclose(log_var, np.broadcast_to(np.log(1 - _col(ABAR, t)), SHAPE), rtol=1e-5)


def test_posterior_is_gaussian_conditioning_of_the_forward_process():
    # x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1}) e1 and x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) e2:
    # condition the joint Gaussian on x_t, in float64.
    x0, noise, _ = _data(1)
    t = np.array([1, 5, 20, T - 1], np.int32)
    x_t = np.asarray(diffusion.q_sample(SCHED, x0, t, noise), np.float64)
    a_t, ab, ab_prev = 1 - BETAS[t], ABAR[t], ABAR_PREV[t]
    cov = np.sqrt(a_t) * (1 - ab_prev)
    mean = (np.sqrt(ab_prev)[:, None, None, None] * x0
            + _col(cov / (1 - ab), np.arange(4)) * (x_t - np.sqrt(ab)[:, None, None, None] * x0))
    var = (1 - ab_prev) - cov**2 / (1 - ab)
    got_mean, got_var, got_log_var = diffusion.q_posterior_mean_variance(SCHED, x0, x_t.astype(np.float32), t)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_var[:, 0, 0, 0], var, rtol=1e-5)
    np.testing.assert_allclose(got_log_var[:, 0, 0, 0], np.log(var), rtol=1e-5)
    # At t = 0 the posterior is a point mass at x0; its log-variance is clipped to log beta~_1 (reference code).
    m0, v0, lv0 = diffusion.q_posterior_mean_variance(SCHED, x0, x_t.astype(np.float32), np.zeros(4, np.int32))
    np.testing.assert_allclose(m0, x0, atol=1e-6)
    assert np.all(np.asarray(v0) == 0)
    np.testing.assert_allclose(lv0, np.log((1 - ABAR_PREV[1]) / (1 - ABAR[1]) * BETAS[1]), rtol=1e-5)


def test_posterior_moments_match_samples_of_the_forward_process():
    # Draw (x_{t-1}, x_t) by running the forward process; regress x_{t-1} on x_t: slope, intercept and
    # residual variance are the posterior's coefficients.
    t, n = 10, 400_000
    rng = np.random.default_rng(2)
    x0 = 0.3
    x_prev = np.sqrt(ABAR_PREV[t]) * x0 + np.sqrt(1 - ABAR_PREV[t]) * rng.standard_normal(n)
    x_t = np.sqrt(1 - BETAS[t]) * x_prev + np.sqrt(BETAS[t]) * rng.standard_normal(n)
    slope, intercept = np.polyfit(x_t, x_prev, 1)
    resid_var = np.var(x_prev - (slope * x_t + intercept))
    assert slope == pytest.approx(float(SCHED.posterior_mean_coef2[t]), rel=2e-3)
    assert intercept == pytest.approx(float(SCHED.posterior_mean_coef1[t]) * x0, abs=3e-3)
    assert resid_var == pytest.approx(float(SCHED.posterior_variance[t]), rel=1e-2)


def test_parametrization_round_trips():
    x0, noise, t = _data(3)
    x_t = diffusion.q_sample(SCHED, x0, t, noise)
    eps = diffusion.predict_eps_from_x0(SCHED, x_t, t, x0)
    np.testing.assert_allclose(eps, noise, atol=2e-4)
    np.testing.assert_allclose(diffusion.predict_x0_from_eps(SCHED, x_t, t, noise), x0, atol=2e-4)
    v = diffusion.v_from_x0_eps(SCHED, x0, noise, t)
    np.testing.assert_allclose(v, np.sqrt(_col(ABAR, t)) * noise - np.sqrt(1 - _col(ABAR, t)) * x0, atol=1e-5)
    np.testing.assert_allclose(diffusion.predict_x0_from_v(SCHED, x_t, t, v), x0, atol=1e-5)
    np.testing.assert_allclose(diffusion.predict_eps_from_v(SCHED, x_t, t, v), noise, atol=1e-5)
    score = diffusion.score_from_eps(SCHED, t, noise)
    # The score of q(x_t | x_0) = N(sqrt(abar) x0, (1 - abar) I) at x_t, from its density.
    np.testing.assert_allclose(score, -(x_t - np.sqrt(_col(ABAR, t)) * x0) / (1 - _col(ABAR, t)), rtol=2e-3,
                               atol=2e-3)
    np.testing.assert_allclose(diffusion.eps_from_score(SCHED, t, score), noise, atol=1e-5)
    for prediction in diffusion.PREDICTIONS:
        target = diffusion.prediction_target(SCHED, x0, noise, t, prediction)
        px0, peps = diffusion.x0_and_eps(SCHED, target, x_t, t, prediction)
        np.testing.assert_allclose(px0, x0, atol=2e-4)
        np.testing.assert_allclose(peps, noise, atol=2e-3)


def test_p_mean_variance_variances_and_mean():
    x0, noise, t = _data(4)
    x_t = diffusion.q_sample(SCHED, x0, t, noise)
    post_var = np.r_[0.0, (1 - ABAR_PREV[1:]) / (1 - ABAR[1:]) * BETAS[1:]]
    clipped = np.log(np.r_[post_var[1], post_var[1:]])
    for prediction in diffusion.PREDICTIONS:
        target = diffusion.prediction_target(SCHED, x0, noise, t, prediction)
        out = diffusion.p_mean_variance(SCHED, target, x_t, t, prediction=prediction, variance="fixed_small")
        # A model that predicts the truth has the true posterior as its reverse step.
        true_mean, _, _ = diffusion.q_posterior_mean_variance(SCHED, x0, x_t, t)
        np.testing.assert_allclose(out["mean"], true_mean, atol=2e-4)
        np.testing.assert_allclose(out["pred_x0"], x0, atol=2e-4)
    np.testing.assert_allclose(out["log_variance"], np.broadcast_to(_col(clipped, t), SHAPE), rtol=1e-5)
    large = diffusion.p_mean_variance(SCHED, noise, x_t, t, variance="fixed_large")
    np.testing.assert_allclose(
        large["log_variance"], np.broadcast_to(_col(np.log(np.r_[post_var[1], BETAS[1:]]), t), SHAPE), rtol=1e-5
    )
    # learned_range (ND eq. 15): v = -1 -> beta~_t (clipped), v = 1 -> beta_t, v = 0 -> geometric mean.
    for v, expected in [(-1.0, clipped), (1.0, np.log(BETAS)), (0.0, 0.5 * (clipped + np.log(BETAS)))]:
        out = diffusion.p_mean_variance(
            SCHED, jnp.concatenate([noise, jnp.full(SHAPE, v)], -1), x_t, t, variance="learned_range"
        )
        np.testing.assert_allclose(out["log_variance"], np.broadcast_to(_col(expected, t), SHAPE), rtol=1e-5)
        np.testing.assert_allclose(out["variance"], np.exp(out["log_variance"]), rtol=1e-6)


def test_clip_denoised_clips_pred_x0():
    x0, noise, t = _data(5)
    x_t = diffusion.q_sample(SCHED, x0, t, noise)
    out = diffusion.p_mean_variance(SCHED, 3.0 * x0, x_t, t, prediction="x0", clip_denoised=True)
    np.testing.assert_allclose(out["pred_x0"], np.clip(3.0 * x0, -1, 1))
    out = diffusion.p_mean_variance(SCHED, 3.0 * x0, x_t, t, prediction="x0", clip_denoised=False)
    np.testing.assert_allclose(out["pred_x0"], 3.0 * x0)


def test_normal_kl():
    rng = np.random.default_rng(6)
    m1, m2 = rng.standard_normal(100), rng.standard_normal(100)
    lv1, lv2 = rng.normal(size=100), rng.normal(size=100)
    np.testing.assert_allclose(diffusion.normal_kl(m1, lv1, m1, lv1), 0.0, atol=1e-6)
    s1, s2 = np.exp(0.5 * lv1), np.exp(0.5 * lv2)
    expected = np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    np.testing.assert_allclose(diffusion.normal_kl(m1, lv1, m2, lv2), expected, rtol=1e-5, atol=1e-6)
    # Monte Carlo: E_{x ~ N1}[log N1(x) - log N2(x)].
    x = 0.4 + 0.7 * rng.standard_normal(1_000_000)
    mc = np.mean(stats.norm.logpdf(x, 0.4, 0.7) - stats.norm.logpdf(x, -0.2, 1.3))
    assert float(diffusion.normal_kl(0.4, 2 * np.log(0.7), -0.2, 2 * np.log(1.3))) == pytest.approx(mc, abs=3e-3)


BINS = np.linspace(-1, 1, 256)  # the 256 pixel values in [-1, 1]


@pytest.mark.parametrize("exact_cdf", [False, True])
def test_discretized_likelihood_bins_sum_to_one(exact_cdf):
    for mean, log_scale in [(0.0, np.log(0.5)), (0.3, np.log(0.01)), (-0.97, np.log(0.004)), (0.9, 1.0)]:
        log_p = diffusion.discretized_gaussian_log_likelihood(
            BINS, np.full(256, mean), np.full(256, log_scale), exact_cdf=exact_cdf
        )
        assert float(jnp.sum(jnp.exp(log_p))) == pytest.approx(1.0, abs=2e-5)


def test_discretized_likelihood_against_scipy_and_reference():
    rng = np.random.default_rng(7)
    x = rng.choice(BINS, 2000)
    means = np.clip(x + rng.normal(0, 0.05, 2000), -1.2, 1.2)
    log_scales = rng.uniform(np.log(0.005), np.log(0.5), 2000)
    # Exact: the normal mass of each bin, the end bins open to +-infinity (float64 scipy).
    s = np.exp(log_scales)
    upper = np.where(x > 0.999, np.inf, x + 1 / 255)
    lower = np.where(x < -0.999, -np.inf, x - 1 / 255)
    mass = np.where(lower > means, stats.norm.sf(lower, means, s) - stats.norm.sf(upper, means, s),
                    stats.norm.cdf(upper, means, s) - stats.norm.cdf(lower, means, s))
    got = np.asarray(diffusion.discretized_gaussian_log_likelihood(x, means, log_scales, exact_cdf=True))
    assert np.all(np.isfinite(got))
    finite = mass > 1e-300  # where float64 itself has not underflowed
    assert finite.mean() > 0.9
    np.testing.assert_allclose(got[finite], np.log(mass[finite]), rtol=1e-4, atol=1e-5)
    # Reference code: tanh-approximated CDF, floors at 1e-12 (numpy float64 transcription).
    cdf = lambda z: 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
    cp, cm = cdf((x - means + 1 / 255) / s), cdf((x - means - 1 / 255) / s)
    ref = np.where(x < -0.999, np.log(np.maximum(cp, 1e-12)),
                   np.where(x > 0.999, np.log(np.maximum(1 - cm, 1e-12)), np.log(np.maximum(cp - cm, 1e-12))))
    got = np.asarray(diffusion.discretized_gaussian_log_likelihood(x, means, log_scales))
    # float32 cancellation in cdf_plus - cdf_min (as in the float32 reference) limits agreement to bins of
    # probability above ~1e-4; below, both floor toward log(1e-12).
    accurate = ref > np.log(1e-4)
    assert accurate.mean() > 0.8
    np.testing.assert_allclose(got[accurate], ref[accurate], rtol=1e-3, atol=1e-3)
    assert np.all(got[~accurate] < np.log(1e-3)) and np.all(got >= np.log(1e-12) - 1e-3)


def test_discretized_likelihood_far_tail_is_finite():
    # A bin 30 standard deviations away: the exact form stays finite where a CDF difference would underflow.
    got = diffusion.discretized_gaussian_log_likelihood(
        jnp.array([0.5]), jnp.array([0.2]), jnp.log(jnp.array([0.01])), exact_cdf=True
    )
    expected = stats.norm.logsf(((0.5 - 1 / 255) - 0.2) / 0.01) + np.log1p(
        -np.exp(stats.norm.logsf(((0.5 + 1 / 255) - 0.2) / 0.01) - stats.norm.logsf(((0.5 - 1 / 255) - 0.2) / 0.01))
    )
    assert np.isfinite(float(got[0])) and float(got[0]) == pytest.approx(expected, rel=1e-4)


def test_prior_bpd_closed_form():
    x0, _, _ = _data(8)
    ab = ABAR[-1]
    kl = 0.5 * (-1 - np.log(1 - ab) + (1 - ab) + ab * x0.astype(np.float64) ** 2)
    np.testing.assert_allclose(diffusion.prior_bpd(SCHED, x0), kl.mean(axis=(1, 2, 3)) / np.log(2), rtol=1e-4)


def _linear_model(x, t):
    """A stand-in denoiser: a fixed function of (x_t, t)."""
    return 0.5 * x + 0.01 * t[:, None, None, None].astype(jnp.float32)


def test_vlb_term_is_zero_for_a_perfect_model_and_decoder_nll_at_t0():
    x0, noise, t = _data(9)
    t = np.maximum(t, 1)
    x_t = diffusion.q_sample(SCHED, x0, t, noise)
    vb = diffusion.vlb_term_bpd(SCHED, x0, x0, x_t, t, prediction="x0")
    np.testing.assert_allclose(vb, 0.0, atol=1e-5)
    # t = 0: the decoder NLL of x0 under N(mean, beta~_1) in bits/dim.
    x0q = np.round((x0 + 1) * 127.5) / 127.5 - 1
    t0 = np.zeros(4, np.int32)
    x_t = diffusion.q_sample(SCHED, x0q, t0, noise)
    out = diffusion.p_mean_variance(SCHED, x0q, x_t, t0, prediction="x0", clip_denoised=False)
    ll = diffusion.discretized_gaussian_log_likelihood(x0q, out["mean"], 0.5 * out["log_variance"])
    vb = diffusion.vlb_term_bpd(SCHED, x0q, x0q, x_t, t0, prediction="x0")
    np.testing.assert_allclose(vb, -np.mean(np.asarray(ll), axis=(1, 2, 3)) / np.log(2), rtol=1e-5)


@pytest.mark.parametrize("prediction,variance", [("eps", "fixed_small"), ("v", "fixed_large")])
def test_bits_per_dim_is_the_sum_of_its_terms(prediction, variance):
    x0, _, _ = _data(10, (2, 4, 4, 1))
    rng = jax.random.PRNGKey(3)
    terms = diffusion.bits_per_dim_terms(_linear_model, SCHED, x0, rng, prediction=prediction, variance=variance)
    assert terms["vb_bpd"].shape == (2, T)
    # Eager recomputation, one term at a time with the documented noise fold_in(rng, t).
    total = np.asarray(diffusion.prior_bpd(SCHED, x0), np.float64)
    for step in range(T):
        t = np.full(2, step, np.int32)
        noise = jax.random.normal(jax.random.fold_in(rng, step), x0.shape)
        x_t = diffusion.q_sample(SCHED, x0, t, noise)
        vb = diffusion.vlb_term_bpd(SCHED, _linear_model(x_t, t), x0, x_t, t, prediction=prediction,
                                    variance=variance, clip_denoised=True, exact_cdf=True)  # bits/dim's default
        np.testing.assert_allclose(terms["vb_bpd"][:, step], vb, rtol=1e-4, atol=1e-5)
        total += np.asarray(vb, np.float64)
    np.testing.assert_allclose(terms["total_bpd"], total, rtol=1e-4)
    np.testing.assert_allclose(
        diffusion.bits_per_dim(_linear_model, SCHED, x0, rng, prediction=prediction, variance=variance), total,
        rtol=1e-4,
    )


def test_bits_per_dim_of_the_exact_denoiser_is_prior_plus_decoder():
    # Data = one point x0: the model predicting x0 makes every KL term zero; what is left is L_T + L_0.
    x0 = np.round((np.linspace(-1, 1, 16).reshape(1, 4, 4, 1) + 1) * 127.5) / 127.5 - 1
    x0 = x0.astype(np.float32)
    exact = lambda x, t: jnp.broadcast_to(x0, x.shape)
    terms = diffusion.bits_per_dim_terms(exact, SCHED, x0, jax.random.PRNGKey(0), prediction="x0")
    np.testing.assert_allclose(terms["vb_bpd"][0, 1:], 0.0, atol=1e-5)
    # L_0: the decoder with mean x0 exactly and variance beta~_1 (the clipped t = 0 variance).
    s = math.sqrt((1 - ABAR_PREV[1]) / (1 - ABAR[1]) * BETAS[1])
    x = x0.astype(np.float64).ravel()
    upper = np.where(x > 0.999, np.inf, x + 1 / 255)
    lower = np.where(x < -0.999, -np.inf, x - 1 / 255)
    l0 = -np.mean(np.log(stats.norm.cdf(upper, x, s) - stats.norm.cdf(lower, x, s))) / np.log(2)
    assert float(terms["vb_bpd"][0, 0]) == pytest.approx(l0, rel=2e-3)  # tanh CDF approximation
    assert float(terms["total_bpd"][0]) == pytest.approx(float(terms["prior_bpd"][0]) + l0, rel=2e-3)


def test_bits_per_dim_traces_once_for_new_params():
    from jax.tree_util import Partial

    from ddpm_jax import functional

    x0, _, _ = _data(11, (2, 4, 4, 1))
    apply = lambda params, x, t: params["w"] * x
    before = diffusion._bpd_terms._cache_size()
    a = diffusion.bits_per_dim(functional.bind(apply, {"w": jnp.float32(0.1)}), SCHED, x0, jax.random.PRNGKey(0))
    b = diffusion.bits_per_dim(functional.bind(apply, {"w": jnp.float32(0.7)}), SCHED, x0, jax.random.PRNGKey(0))
    assert diffusion._bpd_terms._cache_size() == before + 1
    assert not np.allclose(a, b)
    assert isinstance(functional.bind(apply, {}), Partial)


def test_jit_and_eager_agree():
    x0, noise, t = _data(12)
    x_t = diffusion.q_sample(SCHED, x0, t, noise)
    out = jnp.concatenate([noise, jnp.tanh(noise)], -1)
    f = lambda o: diffusion.p_mean_variance(SCHED, o, x_t, t, prediction="v", variance="learned_range")
    eager, jitted = f(out), jax.jit(f)(out)
    for key in eager:
        np.testing.assert_allclose(eager[key], jitted[key], rtol=1e-5, atol=1e-6)
    g = lambda o: diffusion.vlb_term_bpd(SCHED, o, x0, x_t, t, variance="learned_range")
    np.testing.assert_allclose(g(out), jax.jit(g)(out), rtol=1e-5)


def test_bad_input():
    x0, noise, t = _data(13)
    with pytest.raises(ValueError, match="eps, x0, v"):
        diffusion.p_mean_variance(SCHED, noise, x0, t, prediction="score")
    with pytest.raises(ValueError, match="fixed_small, fixed_large, learned_range"):
        diffusion.p_mean_variance(SCHED, noise, x0, t, variance="learned")
    with pytest.raises(ValueError, match="learned_range.*6"):
        diffusion.p_mean_variance(SCHED, jnp.zeros(SHAPE[:-1] + (5,)), x0, t, variance="learned_range")
    with pytest.raises(ValueError, match="learn_sigma"):
        diffusion.p_mean_variance(SCHED, jnp.zeros(SHAPE[:-1] + (6,)), x0, t, variance="fixed_small")
    with pytest.raises(ValueError, match="eps, x0, v"):
        diffusion.bits_per_dim(_linear_model, SCHED, x0, jax.random.PRNGKey(0), prediction="mu")
