"""Variational diffusion (ddpm_jax.vdm) against exact answers: for Gaussian data and its Bayes-optimal denoiser the
continuous loss depends only on the schedule's end points and the T-step loss has a closed form; the learned
schedule's variance gradient; prior, decoder and bits/dim against float64; sampling the Bayes denoiser with the
project's samplers; the discretized Gaussian likelihood's tails; a tiny VDM trained, evaluated and sampled."""

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.tree_util import Partial
from scipy import special

from ddpm_jax import configs, data, diffusion, likelihood, runs, sampling, schedules, train, vdm
from ddpm_jax.models import unet

_CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "digits_vdm.py")
GMIN, GMAX = vdm.GAMMA_MIN, vdm.GAMMA_MAX
S = np.array([0.05, 0.3, 0.7, 1.0])  # per-dimension std of the Gaussian data, images [N, 2, 2, 1]
D = S.size


def _bayes_eps(z, gamma):
    """E[eps | z_t] for x ~ N(0, diag(S^2)): sigma z / (alpha^2 S^2 + sigma^2)."""
    alpha, sigma = vdm.alpha_sigma(jnp.reshape(gamma, (-1, 1, 1, 1)))
    s2 = jnp.asarray(S.reshape(1, 2, 2, 1) ** 2, jnp.float32)
    return sigma * z / (alpha**2 * s2 + sigma**2)


def _gaussian(key, n, antithetic=True):
    kx, kt, kn = jax.random.split(key, 3)
    x = jax.random.normal(kx, (n, 2, 2, 1)) * jnp.asarray(S.reshape(1, 2, 2, 1), jnp.float32)
    return x, vdm.sample_times(kt, n, antithetic=antithetic), jax.random.normal(kn, x.shape)


def _l_inf(g0, g1):
    """1/2 sum_d log((1 + SNR_max s_d^2) / (1 + SNR_min s_d^2)): the expected L_inf of the Bayes denoiser."""
    return 0.5 * np.sum(np.log1p(np.exp(-g0) * S**2) - np.log1p(np.exp(-g1) * S**2))


def _l_t(gamma64, T):
    """1/2 sum_i sum_d (SNR(s_i) - SNR(t_i)) s_d^2 / (1 + SNR(t_i) s_d^2), t_i = i/T, s_i = (i-1)/T."""
    snr = np.exp(-gamma64(np.arange(T + 1) / T))[:, None]
    return 0.5 * np.sum((snr[:-1] - snr[1:]) * S**2 / (1 + snr[1:] * S**2))


def _bent_learned(num_features=16, seed=0):
    """A LearnedGamma with random (far from linear) shape params, and its end points GMIN, GMAX."""
    model = vdm.LearnedGamma(num_features=num_features)
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros(1))
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    bent = [v + 2.0 * jax.random.normal(k, v.shape) if vdm.is_schedule_shape(path) else v
            for (path, v), k in zip(leaves, keys)]
    return model, jax.tree_util.tree_unflatten(tree, bent)


def _np_cosine(t):
    a0, a1 = np.arctan(np.exp(GMIN / 2)), np.arctan(np.exp(GMAX / 2))
    return 2 * np.log(np.tan(a0 + (a1 - a0) * t))


def _schedules():
    """name -> (gamma_fn, float64 numpy gamma)."""
    model, params = _bent_learned()
    learned = functools.partial(model.apply, params)
    cube = lambda t: GMIN + (GMAX - GMIN) * t**3
    return {
        "linear": (vdm.linear_gamma(), lambda t: GMIN + (GMAX - GMIN) * t),
        "cosine": (vdm.cosine_gamma(), _np_cosine),
        "cube": (Partial(cube), cube),
        "learned": (learned, lambda t: np.asarray(learned(jnp.asarray(t, jnp.float32)), np.float64)),
    }


SCHEDULES = _schedules()


# ---------------------------------------------------------------- schedules


def test_fixed_schedules_against_float64():
    t = np.linspace(0, 1, 101)
    np.testing.assert_allclose(vdm.linear_gamma()(jnp.asarray(t, jnp.float32)), GMIN + (GMAX - GMIN) * t,
                               rtol=1e-6, atol=1e-5)
    g = np.asarray(vdm.cosine_gamma()(jnp.asarray(t, jnp.float32)), np.float64)
    # The cosine schedule: alpha^2 = cos^2 of an angle linear in t, from the angle of gamma_min to gamma_max's.
    a0, a1 = np.arccos(np.sqrt(special.expit(-GMIN))), np.arccos(np.sqrt(special.expit(-GMAX)))
    np.testing.assert_allclose(special.expit(-g), np.cos(a0 + (a1 - a0) * t) ** 2, rtol=1e-4, atol=1e-7)
    assert g[0] == pytest.approx(GMIN, abs=1e-4) and g[-1] == pytest.approx(GMAX, abs=1e-4)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_loss_weight_is_half_the_derivative(name):
    gamma_fn, gamma64 = SCHEDULES[name]
    t = np.linspace(0.02, 0.98, 9)
    gamma_t, weight = vdm.diffusion_weight(gamma_fn, jnp.asarray(t, jnp.float32))
    h = 1e-4 if name != "learned" else 1e-2  # float32 learned: a coarser difference of exact float32 values
    np.testing.assert_allclose(gamma_t, gamma64(t), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(weight, 0.5 * (gamma64(t + h) - gamma64(t - h)) / (2 * h), rtol=2e-3)
    # T steps: t rounded up to the grid, weight T/2 (exp(gamma_t - gamma_s) - 1).
    T = 7
    _, weight = vdm.diffusion_weight(gamma_fn, jnp.asarray([0.0, 0.1, 0.5, 0.99], jnp.float32), T)
    i = np.array([1, 1, 4, 7])
    np.testing.assert_allclose(weight, T / 2 * np.expm1(gamma64(i / T) - gamma64((i - 1) / T)), rtol=1e-3)


def test_learned_schedule_is_monotone_with_exact_end_points():
    model, params = _bent_learned(num_features=32, seed=3)
    shape_leaves = [v for path, v in jax.tree_util.tree_flatten_with_path(params)[0] if vdm.is_schedule_shape(path)]
    assert any(np.any(np.asarray(v) < 0) for v in shape_leaves)  # raw weights of both signs: |w| is used
    assert set(params["params"]) == {"gamma_0", "gamma_1", vdm.SHAPE_SCOPE}
    g = np.asarray(model.apply(params, jnp.linspace(0, 1, 2001)), np.float64)
    assert np.all(np.diff(g) >= 0)
    assert g[0] == pytest.approx(GMIN, abs=1e-5) and g[-1] == pytest.approx(GMAX, abs=1e-5)
    vdm.check_gamma(functools.partial(model.apply, params))
    # At initialization the shape is close to linear.
    init = vdm.LearnedGamma().init(jax.random.PRNGKey(0), jnp.zeros(1))
    t = np.linspace(0, 1, 11)
    np.testing.assert_allclose(vdm.LearnedGamma().apply(init, jnp.asarray(t)), GMIN + (GMAX - GMIN) * t, atol=0.05)


# ---------------------------------------------------------------- the losses against exact answers


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_continuous_loss_of_the_bayes_denoiser_depends_only_on_the_end_points(name):
    gamma_fn, _ = SCHEDULES[name]
    x, t, noise = _gaussian(jax.random.PRNGKey(1), 100_000)
    loss = np.asarray(vdm.diffusion_loss(_bayes_eps, gamma_fn, x, t, noise), np.float64)
    stderr = loss.std() / math.sqrt(loss.size)
    assert abs(loss.mean() - _l_inf(GMIN, GMAX)) < 4 * stderr, (loss.mean(), _l_inf(GMIN, GMAX), stderr)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("T", [3, 10, 100])
def test_t_step_loss_of_the_bayes_denoiser_closed_form(name, T):
    gamma_fn, gamma64 = SCHEDULES[name]
    x, t, noise = _gaussian(jax.random.PRNGKey(2), 100_000)
    loss = np.asarray(vdm.diffusion_loss(_bayes_eps, gamma_fn, x, t, noise, num_steps=T), np.float64)
    exact = _l_t(gamma64, T)
    assert abs(loss.mean() - exact) < 4 * loss.std() / math.sqrt(loss.size), (loss.mean(), exact)
    assert exact > _l_inf(GMIN, GMAX)  # more steps, a tighter bound: L_T > L_inf


def test_vlb_gradients_end_points_on_the_bound_shape_on_the_variance():
    model, gamma_params = _bent_learned(num_features=8, seed=5)
    params = {"w": jnp.float32(0.8), "gamma": gamma_params}
    eps_of = lambda p: (lambda z, g: p["w"] * _bayes_eps(z, g))
    gamma_of = lambda p: functools.partial(model.apply, p["gamma"])
    rng = np.random.default_rng(0)
    x = vdm.quantize(jnp.asarray(rng.uniform(-1, 1, (16, 2, 2, 1)), jnp.float32))
    t = jnp.asarray(rng.uniform(0, 1, 16), jnp.float32)
    noise, noise_0 = (jnp.asarray(rng.standard_normal(x.shape), jnp.float32) for _ in range(2))
    scale = 1 / (D * math.log(2))

    def bounds(p, num_steps):  # per-example (total, diffusion) bpd from the public functions
        gamma_fn = gamma_of(p)
        diff = vdm.diffusion_loss(eps_of(p), gamma_fn, x, t, noise, num_steps=num_steps) * scale
        g0, g1 = gamma_fn(jnp.array([0.0, 1.0]))
        return diff + (vdm.prior_loss(x, g1) + vdm.reconstruction_loss(x, g0, noise_0)) * scale, diff

    for num_steps in (0, 5):
        (loss, terms), grads = vdm.vlb_and_grads(eps_of, gamma_of, params, x, t, noise, noise_0, num_steps=num_steps)
        total, diff = bounds(params, num_steps)
        assert float(loss) == pytest.approx(float(jnp.mean(total)), rel=1e-5)
        np.testing.assert_allclose(terms["bpd_diffusion"], diff, rtol=1e-5)
        of_bound = jax.grad(lambda p: jnp.mean(bounds(p, num_steps)[0]))(params)
        of_square = jax.grad(lambda p: jnp.mean(bounds(p, num_steps)[1] ** 2))(params)
        expected = jax.tree_util.tree_map_with_path(
            lambda path, b, s: s if (vdm.is_schedule_shape(path) and num_steps == 0) else b, of_bound, of_square)
        for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(grads)[0],
                                     jax.tree_util.tree_leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-3 * float(np.max(np.abs(want))),
                                       err_msg=str(path))


def test_learned_schedule_lowers_the_loss_variance_and_keeps_its_mean():
    model = vdm.LearnedGamma(num_features=32)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros(1))
    gamma_of = lambda p: functools.partial(model.apply, p)
    optimizer = optax.adam(3e-2)

    @jax.jit
    def step(p, opt_state, key):
        x, t, noise = _gaussian(key, 256)
        _, grads = vdm.vlb_and_grads(lambda _: _bayes_eps, gamma_of, p, x, t, noise, noise)
        grads = jax.tree_util.tree_map_with_path(lambda path, g: g if vdm.is_schedule_shape(path) else 0 * g, grads)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    def loss_stats(p):
        x, t, noise = _gaussian(jax.random.PRNGKey(123), 200_000)
        loss = np.asarray(vdm.diffusion_loss(_bayes_eps, gamma_of(p), x, t, noise), np.float64)
        return loss.mean(), loss.var(), loss.std() / math.sqrt(loss.size)

    mean0, var0, err0 = loss_stats(params)
    opt_state = optimizer.init(params)
    for i in range(100):
        params, opt_state = step(params, opt_state, jax.random.PRNGKey(1000 + i))
    mean1, var1, err1 = loss_stats(params)
    exact = _l_inf(GMIN, GMAX)
    assert abs(mean0 - exact) < 4 * err0 and abs(mean1 - exact) < 4 * err1
    assert var1 < 0.75 * var0, (var0, var1)


def test_training_draws_do_not_depend_on_the_split_of_the_batch():
    t = vdm.sample_times(jax.random.PRNGKey(0), 8)
    np.testing.assert_allclose(np.sort(np.asarray(t)) - np.sort(np.asarray(t))[0], np.arange(8) / 8, atol=1e-6)
    model = vdm.VDM(unet=unet.UNet(ch=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), norm_groups=8,
                                   dropout=0.0), schedule="learned", schedule_features=8, num_timesteps=10)
    x = vdm.quantize(jax.random.uniform(jax.random.PRNGKey(1), (8, 4, 4, 1), minval=-1, maxval=1))
    params = model.init(jax.random.PRNGKey(2), x, jnp.zeros(8, jnp.int32))
    terms = jax.jit(lambda xs, first: vdm.training_loss_and_grads(
        model, params, xs, jax.random.PRNGKey(3), first_index=first, global_batch=8)[0][1])
    whole, halves = terms(x, 0), [terms(x[i:i + 4], i) for i in (0, 4)]
    for key in ("t", "bpd", "bpd_diffusion", "bpd_reconstruction"):
        np.testing.assert_allclose(np.concatenate([h[key] for h in halves]), whole[key], rtol=1e-5, atol=1e-6)


def test_prior_and_reconstruction_against_float64():
    rng = np.random.default_rng(4)
    levels = np.linspace(-1, 1, 256)
    x = rng.choice(levels, (3, 4, 4, 1))
    noise = rng.standard_normal(x.shape)
    g1, g0 = 1.5, np.array([-6.0, -4.0, -9.0])
    prior = 0.5 * np.sum(special.expit(-g1) * x**2 + special.expit(g1) - 1 - np.log(special.expit(g1)),
                         axis=(1, 2, 3))
    np.testing.assert_allclose(vdm.prior_loss(jnp.asarray(x, jnp.float32), g1), prior, rtol=1e-5)
    # The decoder: a Gaussian around z_0 / alpha_0 = x + exp(g0 / 2) noise, normalized over the 256 levels.
    x_hat = (x + np.exp(g0 / 2)[:, None, None, None] * noise)[..., None]
    logits = -0.5 * (x_hat - levels) ** 2 / np.exp(g0)[:, None, None, None, None]
    log_p = logits - special.logsumexp(logits, axis=-1, keepdims=True)
    index = np.round((x + 1) * 127.5).astype(int)
    recon = -np.sum(np.take_along_axis(log_p, index[..., None], -1), axis=(1, 2, 3, 4))
    got = vdm.reconstruction_loss(jnp.asarray(x, jnp.float32), jnp.asarray(g0, jnp.float32),
                                  jnp.asarray(noise, jnp.float32))
    np.testing.assert_allclose(got, recon, rtol=1e-4, atol=1e-4)
    z0 = jnp.asarray(x, jnp.float32) * 0.9
    assert np.allclose(np.exp(special.logsumexp(np.asarray(vdm.decoder_log_probs(z0, -5.0), np.float64), -1)), 1,
                       atol=1e-5)
    # At the paper's gamma_min the decoder is all but certain of the level: -log p ~ 0.
    assert float(jnp.max(vdm.reconstruction_loss(jnp.asarray(x, jnp.float32), GMIN, 0 * noise))) < 1e-3


def test_bits_per_dim_is_prior_plus_reconstruction_plus_stratified_diffusion():
    eps_fn = Partial(lambda z, g: 0.7 * z * jax.nn.sigmoid(g)[:, None, None, None])
    gamma_fn = vdm.cosine_gamma()
    rng = jax.random.PRNGKey(6)
    x = vdm.quantize(jnp.asarray(np.random.default_rng(6).uniform(-1, 1, (2, 4, 4, 1)), jnp.float32))
    K, scale = 8, 1 / (16 * math.log(2))
    np.testing.assert_array_equal(vdm.bits_per_dim(eps_fn, gamma_fn, x, rng, num_times=K),
                                  vdm.bits_per_dim_terms(eps_fn, gamma_fn, x, rng, num_times=K)["total_bpd"])
    for num_steps in (0, K):
        terms = vdm.bits_per_dim_terms(eps_fn, gamma_fn, x, rng, num_steps=num_steps, num_times=K)
        u = jax.random.uniform(jax.random.fold_in(rng, 0), ())
        diffusion_terms = [vdm.diffusion_loss(eps_fn, gamma_fn, x, jnp.full(2, (u + k) / K), jax.random.normal(
            jax.random.fold_in(jax.random.fold_in(rng, 2), k), x.shape), num_steps) * scale for k in range(K)]
        np.testing.assert_allclose(terms["diffusion_bpd"], np.stack(diffusion_terms, 1), rtol=1e-4)
        prior = vdm.prior_loss(x, GMAX) * scale
        recon = vdm.reconstruction_loss(x, GMIN, jax.random.normal(jax.random.fold_in(rng, 1), x.shape)) * scale
        np.testing.assert_allclose(terms["prior_bpd"], prior, rtol=1e-4)
        np.testing.assert_allclose(terms["reconstruction_bpd"], recon, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(terms["total_bpd"], prior + recon + np.mean(diffusion_terms, 0), rtol=1e-4)


# ---------------------------------------------------------------- sampling through the discrete schedule


def test_discrete_schedule_against_float64():
    T = 50
    for name in ("linear", "cosine", "learned"):
        gamma_fn, gamma64 = SCHEDULES[name]
        sched = vdm.discrete_schedule(gamma_fn, T)
        g = np.asarray(gamma_fn(jnp.arange(1, T + 1, dtype=jnp.float32) / T), np.float64)  # the float32 values
        np.testing.assert_allclose(sched.alphas_cumprod, special.expit(-g), rtol=1e-6)
        np.testing.assert_allclose(sched.log_snr, -g, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g, gamma64(np.arange(1, T + 1) / T), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("sampler,num_steps", [("ancestral", None), ("ddim", 100), ("dpm++2m", 25), ("unipc", 25)])
def test_sampling_the_bayes_denoiser_gives_the_data_distribution(sampler, num_steps):
    T = 1000
    gamma_fn = vdm.linear_gamma()
    sched = vdm.discrete_schedule(gamma_fn, T)
    model_fn = lambda z, t: _bayes_eps(z, gamma_fn((t.astype(jnp.float32) + 1) / T))  # the model at gamma(t / T)
    x = sampling.sample(model_fn, sched, jax.random.PRNGKey(7), (4000, 2, 2, 1), sampler=sampler,
                        num_steps=num_steps, clip_denoised=False)  # the data exceed [-1, 1]
    std = np.asarray(x, np.float64).reshape(-1, D).std(axis=0)
    np.testing.assert_allclose(std, S, rtol=0.06, atol=0.005)


def test_vdm_module_calls_eps_at_gamma_of_the_grid_time():
    model = vdm.VDM(unet=unet.UNet(ch=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), norm_groups=8),
                    schedule="cosine", num_timesteps=20)
    z = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 1))
    t = jnp.array([0, 19], jnp.int32)
    params = model.init(jax.random.PRNGKey(1), z, t)
    params = jax.tree_util.tree_map(lambda v: v + 0.05, params)  # conv_out starts at zero: make eps_hat nonzero
    gamma_t = vdm.cosine_gamma()((t + 1.0) / 20)
    want = vdm.bind_eps(model, params)(z, gamma_t)
    np.testing.assert_allclose(model.apply(params, z, t), want, rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(want))) > 0
    # The U-Net sees 1000 (gamma - gamma_min) / (gamma_max - gamma_min), a float level.
    level = 1000 * (gamma_t - GMIN) / (GMAX - GMIN)
    np.testing.assert_allclose(model.unet.apply({"params": params["params"]["unet"]}, z, level), want, rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="int timesteps"):
        model.apply(params, z, jnp.array([0.5, 0.7]))


def test_unet_float_conditioning_and_fourier_features():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 2))
    features = unet.base2_fourier_features(x, (6, 7))
    w = 2 * np.pi * 2.0 ** np.array([6, 7])
    h = (np.asarray(x, np.float64)[..., :, None] * w).reshape(2, 4, 4, 4)  # channel-major: c0k6 c0k7 c1k6 c1k7
    np.testing.assert_allclose(features, np.concatenate([np.sin(h), np.cos(h)], -1), atol=2e-4)
    plain = unet.UNet(ch=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), norm_groups=8)
    fourier = plain.clone(fourier_features=(6, 7))
    t = jnp.array([3, 7], jnp.int32)
    count = lambda m: unet.count_params(jax.eval_shape(m.init, jax.random.PRNGKey(0), x, t))
    assert count(fourier) - count(plain) == 3 * 3 * (2 * 2 * 2) * 32  # conv_in sees 2 + 8 channels
    params = jax.tree_util.tree_map(lambda v: v + 0.05, fourier.init(jax.random.PRNGKey(0), x, t))
    out = fourier.apply(params, x, t)
    np.testing.assert_allclose(fourier.apply(params, x, t.astype(jnp.float32)), out, rtol=1e-6, atol=1e-6)
    assert not np.allclose(fourier.apply(params, x, jnp.array([3.5, 7.0])), out)


# ---------------------------------------------------------------- the discretized Gaussian likelihood's tails


def _log_bin_mass(x, mean, scale):
    """float64 log P of the bin of x (width 2/255, end bins open), on the side of the mean away from it."""
    upper = np.where(x > 0.999, np.inf, x + 1 / 255)
    lower = np.where(x < -0.999, -np.inf, x - 1 / 255)
    a, b = (lower - mean) / scale, (upper - mean) / scale
    flip = a > 0
    a, b = np.where(flip, -b, a), np.where(flip, -a, b)
    return special.log_ndtr(b) + np.log1p(-np.exp(special.log_ndtr(a) - special.log_ndtr(b)))


@pytest.mark.parametrize("scale", [0.001, 0.01, 0.1, 1.0])
def test_discretized_likelihood_tails_against_float64(scale):
    distances = np.array([0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 40], np.float64)
    x = np.array([-1.0, -1 + 2 * 37 / 255, 0.0, 1 - 2 * 5 / 255, 1.0])
    x, k, sign = (a.ravel() for a in np.meshgrid(x, distances, [-1.0, 1.0], indexing="ij"))
    x32, mean32 = x.astype(np.float32), (x - sign * k * scale).astype(np.float32)
    log_scale32 = np.full_like(x32, np.log(scale), dtype=np.float32)
    exact = _log_bin_mass(x32.astype(np.float64), mean32.astype(np.float64), np.exp(log_scale32.astype(np.float64)))
    stable = np.asarray(diffusion.discretized_gaussian_log_likelihood(x32, mean32, log_scale32, exact_cdf=True))
    np.testing.assert_allclose(stable, exact, rtol=1e-5, atol=1e-5)
    # Ho et al.'s reference form: tanh CDF, probabilities floored at 1e-12. Close within ~3 scales of the mean
    # (where the bin is not already at a scale's width), floored at log(1e-12) far from it.
    reference = np.asarray(diffusion.discretized_gaussian_log_likelihood(x32, mean32, log_scale32))
    near = (k <= 2) & (exact > np.log(1e-4))
    np.testing.assert_allclose(reference[near], exact[near], atol=0.02)
    far = (k >= 10) & (exact < np.log(1e-12) - 1)
    assert far.any() and np.all(reference[far] >= np.log(1e-12) - 1e-3) and np.all(reference[far] > exact[far])


def test_bits_per_dim_uses_the_stable_likelihood_by_default():
    sched = schedules.make_schedule(np.linspace(1e-3, 0.2, 10))
    x0 = jnp.asarray(np.linspace(-1, 1, 16).reshape(1, 4, 4, 1), jnp.float32)
    far = lambda x, t: jnp.broadcast_to(jnp.clip(x0 + 0.5, -1, 1), x.shape)  # a decoder mean far from x0
    kwargs = dict(prediction="x0", variance="fixed_small")
    default = diffusion.bits_per_dim_terms(far, sched, x0, jax.random.PRNGKey(0), **kwargs)
    stable = diffusion.bits_per_dim_terms(far, sched, x0, jax.random.PRNGKey(0), exact_cdf=True, **kwargs)
    reference = diffusion.bits_per_dim_terms(far, sched, x0, jax.random.PRNGKey(0), exact_cdf=False, **kwargs)
    np.testing.assert_array_equal(default["vb_bpd"], stable["vb_bpd"])
    assert float(stable["vb_bpd"][0, 0]) > float(reference["vb_bpd"][0, 0])  # the floor hides the tail's cost


# ---------------------------------------------------------------- bad input


def test_bad_input():
    x, t, noise = _gaussian(jax.random.PRNGKey(0), 4)
    decreasing = Partial(lambda t: 5.0 - 18.3 * t)
    with pytest.raises(ValueError, match="must increase"):
        vdm.diffusion_loss(_bayes_eps, decreasing, x, t, noise)
    bump = Partial(lambda t: GMIN + 18.3 * t - 3.0 * jnp.exp(-(((t - 0.5) / 0.01) ** 2)))
    with pytest.raises(ValueError, match="decreases from"):
        vdm.discrete_schedule(bump, 10)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        vdm.diffusion_loss(_bayes_eps, vdm.linear_gamma(), x, t + 1.0, noise)
    with pytest.raises(ValueError, match="num_steps"):
        vdm.diffusion_loss(_bayes_eps, vdm.linear_gamma(), x, t, noise, num_steps=-2)
    with pytest.raises(ValueError, match=r"images must be in \[-1, 1\]"):
        vdm.bits_per_dim(Partial(_bayes_eps), vdm.linear_gamma(), 2.0 * jnp.ones((1, 2, 2, 1)),
                         jax.random.PRNGKey(0), num_times=2)
    with pytest.raises(ValueError, match="must increase"):
        likelihood.vdm_bits_per_dim_dataset(Partial(_bayes_eps), decreasing, np.zeros((1, 2, 2, 1), np.uint8),
                                            jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="linear, cosine, learned"):
        vdm.VDM(unet=unet.UNet(), schedule="sigmoid").init(jax.random.PRNGKey(0), x, jnp.zeros(4, jnp.int32))
    config = configs.load_config(_CONFIG)
    config.diffusion.prediction = "x0"
    with pytest.raises(ValueError, match="predicts eps"):
        configs.create_model(config)
    config = configs.load_config(_CONFIG, ["--config.diffusion.vdm.schedule=learned"])
    with pytest.raises(ValueError, match="create_schedule\\(config, params\\)"):
        configs.create_schedule(config)
    del config.diffusion.vdm
    with pytest.raises(ValueError, match="config.diffusion.vdm"):
        configs.loss_options(config)


# ---------------------------------------------------------------- a tiny VDM trained, evaluated, sampled

TINY = [
    "--config.model.ch=32", "--config.model.ch_mult=(1,)", "--config.model.num_res_blocks=1",
    "--config.model.attn_resolutions=()", "--config.diffusion.num_timesteps=20",
    "--config.diffusion.vdm.schedule=learned", "--config.diffusion.vdm.schedule_features=16",
    "--config.train.batch_size=16", "--config.train.num_steps=2", "--config.train.warmup_steps=1",
    "--config.train.sample_every=0", "--config.train.checkpoint_every=2", "--config.train.log_every=1",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = configs.load_config(_CONFIG, TINY)
    workdir = str(tmp_path_factory.mktemp("vdm"))
    out = train.train_and_evaluate(config, workdir, progress=False)
    out["workdir"] = workdir
    return config, out


def test_a_vdm_run_loads_samples_and_evaluates_from_its_directory(tiny_run, tmp_path):
    """runs.load_run builds the learned schedule from the checkpoint; evaluate reports the VDM's own VLB."""
    from ddpm_jax import evaluate, runs
    from ddpm_jax.__main__ import main

    config, out = tiny_run
    run = runs.load_run(out["workdir"])
    np.testing.assert_array_equal(run.sched.alphas_cumprod,
                                  vdm.sampling_schedule(run.model, out["state"].ema_params).alphas_cumprod)
    assert main(["sample", "--workdir", out["workdir"], "--num", "2", "--sampler", "unipc", "--steps", "3",
                 "--out", str(tmp_path / "s.png")]) == 0
    report = evaluate.evaluate(out["workdir"], num_samples=0, bpd_examples=4, progress=False, write=False)
    test = data.load_arrays("digits", "test")
    direct = likelihood.vdm_bits_per_dim_dataset(
        vdm.bind_eps(run.model, run.params), vdm.bind_gamma(run.model, run.params), test.images[:4],
        jax.random.fold_in(jax.random.PRNGKey(0), 1), max_value=test.max_value)
    assert report["metrics"]["bpd"] == pytest.approx(direct["mean"], rel=1e-6) and direct["mean"] > 0


def test_tiny_vdm_trains_through_train_and_evaluate(tiny_run):
    config, out = tiny_run
    m = out["metrics"]
    assert out["step"] == 2 and all(math.isfinite(v) for v in m.values())
    assert set(vdm.METRICS) <= set(m)
    assert m["loss"] == pytest.approx(m["bpd_diffusion"] + m["bpd_prior"] + m["bpd_reconstruction"], rel=1e-4)
    assert m["bpd_diffusion_sq"] >= m["bpd_diffusion"] ** 2
    learned = out["state"].params["params"]["learned"]
    assert set(learned) == {"gamma_0", "gamma_1", vdm.SHAPE_SCOPE}
    assert float(learned["gamma_0"]) != GMIN  # the end points train (on the VLB)
    ema = out["state"].ema_params
    sched = configs.create_schedule(config, ema)
    model = configs.create_model(config)
    np.testing.assert_array_equal(sched.alphas_cumprod, vdm.sampling_schedule(model, ema).alphas_cumprod)
    for sampler in ("ddim", "dpm++2m"):
        images = runs.sample(config, ema, jax.random.PRNGKey(0), 8, (8, 8, 1), sampler=sampler, num_steps=5)
        assert images.shape == (8, 8, 8, 1) and np.all(np.isfinite(images))


def test_vdm_bits_per_dim_of_a_split_on_one_and_eight_devices(tiny_run):
    config, out = tiny_run
    model, params = configs.create_model(config), out["state"].ema_params
    eps_fn, gamma_fn = vdm.bind_eps(model, params), vdm.bind_gamma(model, params)
    test = data.load_arrays("digits", "test")
    images, rng = test.images[:5], jax.random.PRNGKey(3)
    kwargs = dict(max_value=test.max_value, num_times=4)
    eight = likelihood.vdm_bits_per_dim_dataset(eps_fn, gamma_fn, images, rng, per_device_batch=1, **kwargs)
    one = likelihood.vdm_bits_per_dim_dataset(eps_fn, gamma_fn, images, rng, devices=jax.local_devices()[:1],
                                              **kwargs)
    x = data.to_float(images, test.max_value)
    direct = [vdm.bits_per_dim_terms(eps_fn, gamma_fn, x[i:i + 1], jax.random.fold_in(rng, i), num_times=4)
              for i in range(5)]
    np.testing.assert_allclose(eight["bpd"], [float(d["total_bpd"][0]) for d in direct], rtol=1e-4)
    np.testing.assert_allclose(one["bpd"], eight["bpd"], rtol=1e-5)
    np.testing.assert_allclose(eight["decoder_bpd"], [float(d["reconstruction_bpd"][0]) for d in direct], rtol=1e-4,
                               atol=1e-7)
    d = np.concatenate([np.asarray(r["diffusion_bpd"][0], np.float64) for r in direct])
    assert eight["diffusion_var"] == pytest.approx(d.var(), rel=1e-3)
    assert eight["num_examples"] == 5 and np.isfinite(eight["stderr"])
