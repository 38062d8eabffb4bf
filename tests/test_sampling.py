"""Samplers: closed-form Gaussian data, DDIM/ancestral equivalence, inversion, tracing, device invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax import diffusion, functional, reverse_loop, sampling, schedules

T = 100
BETAS = schedules.get_betas("linear", T)
SCHED = schedules.make_schedule(BETAS)
DATA_STD = 0.5  # data ~ N(0, 0.25 I): its optimal denoiser is linear in x_t


def gaussian_eps(params, x, t):
    """The exact eps-prediction for data N(0, s^2 I): eps = sqrt(1 - abar) x_t / (abar s^2 + 1 - abar)."""
    abar = SCHED.alphas_cumprod[t][:, None, None, None]
    s2 = params["data_std"] ** 2
    return jnp.sqrt(1 - abar) * x / (abar * s2 + 1 - abar)


def _gaussian_apply(prediction):
    def apply(params, x, t):
        eps = gaussian_eps(params, x, t)
        if prediction == "eps":
            return eps
        x0 = diffusion.predict_x0_from_eps(SCHED, x, t, eps)
        return x0 if prediction == "x0" else diffusion.v_from_x0_eps(SCHED, x0, eps, t)

    return apply


_APPLY = {p: _gaussian_apply(p) for p in diffusion.PREDICTIONS}


def gaussian_model(prediction, data_std=DATA_STD):
    """The same optimal denoiser in the eps, x0 or v parametrization, as a Partial over its params."""
    return functional.bind(_APPLY[prediction], {"data_std": jnp.float32(data_std)})


def gaussian_sample_std(sampler, num_steps=T, s=DATA_STD):
    """Exact std of the samples for data N(0, s^2), in float64: with the linear optimal denoiser every step
    is x_prev = a x_t + sigma z, so Var(x_prev) = a^2 Var(x_t) + sigma^2, from Var(x_T) = 1."""
    abar = np.cumprod(1 - BETAS)
    abar_prev = np.r_[1.0, abar[:-1]]
    # pred_x0 = c x_t with c = (1 - sqrt(1 - abar) g) / sqrt(abar), g the eps gain.
    gain = lambda a: np.sqrt(1 - a) / (a * s**2 + 1 - a)
    x0_coef = lambda a: (1 - np.sqrt(1 - a) * gain(a)) / np.sqrt(a)
    var = 1.0
    if sampler == "ancestral":
        for t in range(T - 1, -1, -1):
            coef1 = BETAS[t] * np.sqrt(abar_prev[t]) / (1 - abar[t])
            coef2 = (1 - abar_prev[t]) * np.sqrt(1 - BETAS[t]) / (1 - abar[t])
            var = (coef1 * x0_coef(abar[t]) + coef2) ** 2 * var
            var += BETAS[t] * (1 - abar_prev[t]) / (1 - abar[t]) if t > 0 else 0.0
        return np.sqrt(var)
    seq = list(range(0, T, T // num_steps))
    for t, t_prev in zip(seq[::-1], ([-1] + seq[:-1])[::-1]):
        a_prev = abar[t_prev] if t_prev >= 0 else 1.0
        var *= (np.sqrt(a_prev) * x0_coef(abar[t]) + np.sqrt(1 - a_prev) * gain(abar[t])) ** 2
    return np.sqrt(var)


EPS_MODEL = gaussian_model("eps")


def test_ddim_timesteps():
    """One spacing vocabulary (`schedules.SPACINGS`); "uniform", the DDIM code's name, is "leading"."""
    np.testing.assert_array_equal(sampling.ddim_timesteps(1000, 30, "uniform"), sampling.ddim_timesteps(1000, 30))
    np.testing.assert_array_equal(sampling.ddim_timesteps(100, 7, "linspace"),
                                  schedules.spaced_timesteps(SCHED, 7, "linspace")[::-1])
    np.testing.assert_array_equal(sampling.ddim_timesteps(1000, 50), np.arange(0, 1000, 20))
    np.testing.assert_array_equal(sampling.ddim_timesteps(1000, 30), np.arange(0, 1000, 33))  # DDIM's rule
    trailing = sampling.ddim_timesteps(1000, 50, "trailing")
    assert trailing[-1] == 999 and trailing[0] == 19 and len(trailing) == 50
    with pytest.raises(ValueError, match=r"\[1, 1000\]"):
        sampling.ddim_timesteps(1000, 0)
    with pytest.raises(ValueError, match="linspace, leading, trailing, karras"):
        sampling.ddim_timesteps(1000, 10, "quadratic")


def test_ddim_step_matches_eq_12():
    rng = np.random.default_rng(0)
    x_t = rng.standard_normal((3, 2, 2, 1)).astype(np.float32)
    eps = rng.standard_normal((3, 2, 2, 1)).astype(np.float32)
    noise = rng.standard_normal((3, 2, 2, 1)).astype(np.float32)
    t, t_prev = np.array([50, 20, 5], np.int32), np.array([30, -1, 0], np.int32)
    abar = np.cumprod(1 - BETAS)
    a_t, a_prev = abar[t], np.where(t_prev >= 0, abar[np.maximum(t_prev, 0)], 1.0)
    for eta in (0.0, 0.5, 1.0):
        got, x0 = sampling.ddim_step(SCHED, eps, x_t, t, t_prev, noise, eta, clip_denoised=False)
        c = lambda a: a[:, None, None, None]
        x0_np = (x_t - np.sqrt(1 - c(a_t)) * eps) / np.sqrt(c(a_t))
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        expected = np.sqrt(c(a_prev)) * x0_np + np.sqrt(1 - c(a_prev) - c(sigma) ** 2) * eps + c(sigma) * noise
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(x0, x0_np, rtol=1e-4, atol=1e-5)


def test_ddim_eta_one_over_all_steps_is_ancestral_sampling():
    shape = (4, 3, 3, 1)
    rng = jax.random.PRNGKey(1)
    ancestral = sampling.ancestral_sample(EPS_MODEL, SCHED, rng, shape, variance="fixed_small")
    ddim = sampling.ddim_sample(EPS_MODEL, SCHED, rng, shape, num_steps=T, eta=1.0)
    np.testing.assert_allclose(ddim, ancestral, rtol=1e-4, atol=1e-4)
    other = sampling.ddim_sample(EPS_MODEL, SCHED, rng, shape, num_steps=T, eta=0.0)
    assert not np.allclose(other, ancestral, atol=1e-2)


def test_deterministic_ddim_and_given_x_T():
    shape = (3, 2, 2, 1)
    a = sampling.ddim_sample(EPS_MODEL, SCHED, jax.random.PRNGKey(2), shape, num_steps=10)
    b = sampling.ddim_sample(EPS_MODEL, SCHED, jax.random.PRNGKey(2), shape, num_steps=10)
    np.testing.assert_array_equal(a, b)
    x_T = jax.random.normal(jax.random.PRNGKey(3), shape)
    c = sampling.ddim_sample(EPS_MODEL, SCHED, jax.random.PRNGKey(4), shape, num_steps=10, x_T=x_T)
    d = sampling.ddim_sample(EPS_MODEL, SCHED, jax.random.PRNGKey(5), shape, num_steps=10, x_T=x_T)
    np.testing.assert_array_equal(c, d)
    with pytest.raises(ValueError, match="x_T has shape"):
        sampling.ddim_sample(EPS_MODEL, SCHED, jax.random.PRNGKey(5), shape, num_steps=10, x_T=x_T[:2])


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_samples_of_the_exact_denoiser_match_the_float64_recursion(sampler):
    shape = (4000, 1, 1, 1)
    rng = jax.random.PRNGKey(6)
    if sampler == "ancestral":
        x = sampling.ancestral_sample(EPS_MODEL, SCHED, rng, shape, clip_denoised=False)
        expected = gaussian_sample_std("ancestral")
    else:
        x = sampling.ddim_sample(EPS_MODEL, SCHED, rng, shape, num_steps=20, clip_denoised=False)
        expected = gaussian_sample_std("ddim", num_steps=20)
    x = np.asarray(x).ravel()
    assert abs(x.mean()) < 0.03
    assert x.std() == pytest.approx(expected, rel=0.03)  # 4000 samples: the std's standard error is 1.1%
    assert 0.4 < expected < 0.5  # fixed_small and a 20-step ODE both shrink the N(0, 0.25) data a little


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_parametrizations_sample_alike(prediction):
    shape = (3, 2, 2, 1)
    rng = jax.random.PRNGKey(7)
    for fn, kw in [(sampling.ancestral_sample, dict(variance="fixed_large")), (sampling.ddim_sample, {})]:
        ref = fn(EPS_MODEL, SCHED, rng, shape, **kw)
        got = fn(gaussian_model(prediction), SCHED, rng, shape, prediction=prediction, **kw)
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)


def test_learned_range_sampling_uses_the_variance_channels():
    shape = (2, 2, 2, 1)
    rng = jax.random.PRNGKey(8)

    def with_v(value):
        return functional.bind(
            lambda p, x, t: jnp.concatenate([gaussian_eps(p, x, t), jnp.full_like(x, value)], -1),
            {"data_std": jnp.float32(DATA_STD)},
        )

    small = sampling.ancestral_sample(EPS_MODEL, SCHED, rng, shape, variance="fixed_small")
    large = sampling.ancestral_sample(EPS_MODEL, SCHED, rng, shape, variance="fixed_large")
    np.testing.assert_allclose(
        sampling.ancestral_sample(with_v(-1.0), SCHED, rng, shape, variance="learned_range"), small, atol=1e-4)
    np.testing.assert_allclose(
        sampling.ancestral_sample(with_v(1.0), SCHED, rng, shape, variance="learned_range"), large, atol=1e-4)
    # DDIM ignores the variance channels.
    np.testing.assert_allclose(
        sampling.ddim_sample(with_v(0.3), SCHED, rng, shape), sampling.ddim_sample(EPS_MODEL, SCHED, rng, shape),
        atol=1e-6)


def test_ddim_inversion_round_trip():
    x0 = jax.random.normal(jax.random.PRNGKey(9), (8, 2, 2, 1)) * DATA_STD
    errors = []
    for steps in (50, 100):
        x_T = sampling.ddim_invert(EPS_MODEL, SCHED, x0, num_steps=steps)
        back = sampling.ddim_sample(EPS_MODEL, SCHED, jax.random.PRNGKey(0), x0.shape, num_steps=steps,
                                    x_T=x_T, clip_denoised=False)
        errors.append(float(jnp.max(jnp.abs(back - x0))))
    # Inversion evaluates eps one level off, a first-order error: halving the step halves it.
    assert errors[1] < 0.03
    assert 1.8 < errors[0] / errors[1] < 2.2
    # The inverted latents of data are (near) standard normal for the exact denoiser.
    big = jax.random.normal(jax.random.PRNGKey(10), (4000, 1, 1, 1)) * DATA_STD
    assert float(jnp.std(sampling.ddim_invert(EPS_MODEL, SCHED, big, num_steps=50))) == pytest.approx(1.0, rel=0.05)


def test_trajectory():
    shape = (2, 2, 2, 1)
    x_T = jax.random.normal(jax.random.PRNGKey(11), shape)
    x, traj = sampling.ddim_sample(EPS_MODEL, SCHED, jax.random.PRNGKey(0), shape, num_steps=20, x_T=x_T,
                                   trajectory_steps=5)
    assert traj.x_t.shape == (5,) + shape and traj.pred_x0.shape == (5,) + shape
    np.testing.assert_array_equal(traj.t, [95, 70, 45, 25, 0])  # loop indices round(linspace(0, 19, 5))
    np.testing.assert_array_equal(traj.x_t[0], x_T)
    # The last step goes to alpha_bar = 1: its pred_x0 is the sample.
    np.testing.assert_allclose(traj.pred_x0[-1], x, atol=1e-6)
    plain = sampling.ddim_sample(EPS_MODEL, SCHED, jax.random.PRNGKey(0), shape, num_steps=20, x_T=x_T)
    np.testing.assert_array_equal(plain, x)
    x, traj = sampling.ancestral_sample(EPS_MODEL, SCHED, jax.random.PRNGKey(0), shape, trajectory_steps=3)
    np.testing.assert_array_equal(traj.t, [99, 49, 0])


def test_samplers_trace_once_per_shape_and_setting():
    shape = (2, 2, 2, 1)
    before = reverse_loop.run._cache_size()
    for data_std in (0.3, 0.6, 0.9):  # new params: no new trace
        sampling.ddim_sample(gaussian_model("eps", data_std), SCHED, jax.random.PRNGKey(0), shape, num_steps=7)
    for eta in (0.0, 0.5):  # eta is traced too
        sampling.ddim_sample(EPS_MODEL, SCHED, jax.random.PRNGKey(0), shape, num_steps=7, eta=eta)
    assert reverse_loop.run._cache_size() == before + 1
    before = reverse_loop.run._cache_size()
    for data_std in (0.3, 0.6):
        sampling.ancestral_sample(gaussian_model("eps", data_std), SCHED, jax.random.PRNGKey(0), (3, 2, 2, 1))
    assert reverse_loop.run._cache_size() == before + 1


def test_same_samples_on_one_or_eight_devices():
    assert jax.local_device_count() == 8
    kwargs = dict(sampler="ddim", num_steps=10)
    one = sampling.sample_sharded(EPS_MODEL, SCHED, jax.random.PRNGKey(12), 11, (2, 2, 1),
                                  devices=jax.local_devices()[:1], **kwargs)
    eight = sampling.sample_sharded(EPS_MODEL, SCHED, jax.random.PRNGKey(12), 11, (2, 2, 1), **kwargs)
    assert one.shape == eight.shape == (11, 2, 2, 1)
    np.testing.assert_allclose(one, eight, rtol=1e-5, atol=1e-6)
    # Rounds of 1 per device give the same images, and so does a single batch with the same rng.
    rounds = sampling.sample_sharded(EPS_MODEL, SCHED, jax.random.PRNGKey(12), 11, (2, 2, 1),
                                     per_device_batch=1, **kwargs)
    np.testing.assert_allclose(rounds, one, rtol=1e-5, atol=1e-6)
    single = sampling.ddim_sample(EPS_MODEL, SCHED, jax.random.PRNGKey(12), (11, 2, 2, 1), num_steps=10)
    np.testing.assert_allclose(single, one, rtol=1e-5, atol=1e-6)
    ancestral = sampling.sample_sharded(EPS_MODEL, SCHED, jax.random.PRNGKey(12), 5, (2, 2, 1),
                                        sampler="ancestral")
    np.testing.assert_allclose(
        ancestral, sampling.ancestral_sample(EPS_MODEL, SCHED, jax.random.PRNGKey(12), (5, 2, 2, 1)),
        rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ancestral, ddim, euler"):  # every sampler's name is listed
        sampling.sample_sharded(EPS_MODEL, SCHED, jax.random.PRNGKey(0), 2, (2, 2, 1), sampler="nope")


def _two_class_model(x, t, y):
    """Outputs 1 for class 1, -1 for class 0 and 0 for the null label 2, on 2C channels."""
    value = jnp.where(y == 1, 1.0, jnp.where(y == 0, -1.0, 0.0))[:, None, None, None]
    return jnp.concatenate([jnp.broadcast_to(value, x.shape), jnp.broadcast_to(value + 5, x.shape)], -1)


def test_classifier_free_guidance():
    x = jnp.zeros((3, 2, 2, 1))
    t = jnp.zeros((3,), jnp.int32)
    labels = jnp.array([0, 1, 1])
    for scale in (0.0, 1.0, 3.0):
        out = sampling.classifier_free_guidance(_two_class_model, labels, scale, null_label=2)(x, t)
        cond = np.where(np.asarray(labels) == 1, 1.0, -1.0)[:, None, None, None]
        np.testing.assert_allclose(out[..., :1], np.broadcast_to(scale * cond, x.shape))
        np.testing.assert_allclose(out[..., 1:], np.broadcast_to(cond + 5, x.shape))  # conditional variance
    # Through the sharded sampler: labels are split with the samples.
    model = lambda x, t, y: _two_class_model(x, t, y)[..., :1] * 0.0 + 0.1 * x * (y[:, None, None, None] + 1)
    got = sampling.sample_sharded(model, SCHED, jax.random.PRNGKey(0), 5, (2, 2, 1), labels=[0, 1, 0, 1, 1],
                                  num_steps=5)
    one = sampling.sample_sharded(model, SCHED, jax.random.PRNGKey(0), 5, (2, 2, 1), labels=[0, 1, 0, 1, 1],
                                  num_steps=5, devices=jax.local_devices()[:1])
    np.testing.assert_allclose(got, one, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"labels must have shape \(5, \.\.\.\) \(one per sample\)"):
        sampling.sample_sharded(model, SCHED, jax.random.PRNGKey(0), 5, (2, 2, 1), labels=[0, 1])
