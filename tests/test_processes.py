"""Continuous processes (rectified flow, EDM, VDM's gamma): alpha/sigma and their derivatives, parametrizations,
EDM's preconditioning and loss, training-time t, losses, and sampling checked against closed-form Gaussian
answers; Schedule samples bit for bit as before processes existed."""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax import functional, losses, processes, reverse_loop, sampling, solvers, vdm

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))
import make_schedule_samples  # noqa: E402

PROCESSES = {
    "rectified_flow": processes.rectified_flow(),
    "edm": processes.edm(),
    "vdm_linear": processes.vdm(vdm.linear_gamma()),
    "vdm_cosine": processes.vdm(vdm.cosine_gamma()),
}
# Interior times (EDM: sigmas) where every parametrization is defined.
TIMES = {"rectified_flow": [0.05, 0.5, 0.93], "edm": [0.01, 0.7, 40.0], "vdm_linear": [0.05, 0.5, 0.95],
         "vdm_cosine": [0.05, 0.5, 0.95]}


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _alpha_sigma_numpy(name, t):
    """alpha, sigma in float64 numpy from the papers' formulas, independent of the module."""
    if name == "rectified_flow":
        return 1.0 - t, t
    if name == "edm":
        return np.ones_like(t), t
    g_min, g_max = vdm.GAMMA_MIN, vdm.GAMMA_MAX
    if name == "vdm_linear":
        gamma = g_min + (g_max - g_min) * t
    else:
        a0, a1 = np.arctan(np.exp(0.5 * g_min)), np.arctan(np.exp(0.5 * g_max))
        gamma = 2.0 * np.log(np.tan(a0 + (a1 - a0) * t))
    return np.sqrt(_sigmoid(-gamma)), np.sqrt(_sigmoid(gamma))


# ---------------------------------------------------------------- alpha, sigma and their derivatives


@pytest.mark.parametrize("name", PROCESSES)
def test_alpha_sigma_and_derivatives_in_float64(name):
    proc, t = PROCESSES[name], np.asarray(TIMES[name], np.float64)
    alpha, sigma = _alpha_sigma_numpy(name, t)
    h = 1e-6 * np.maximum(t, 1.0)
    (a_plus, s_plus), (a_minus, s_minus) = _alpha_sigma_numpy(name, t + h), _alpha_sigma_numpy(name, t - h)
    with jax.enable_x64(True):
        tt = jnp.asarray(t)
        got = {k: np.asarray(getattr(proc, k)(tt)) for k in ("alpha", "sigma", "d_alpha", "d_sigma")}
        lam = np.asarray(proc.log_snr_half(tt))
    np.testing.assert_allclose(got["alpha"], alpha, rtol=1e-12)
    np.testing.assert_allclose(got["sigma"], sigma, rtol=1e-12)
    np.testing.assert_allclose(got["d_alpha"], (a_plus - a_minus) / (2 * h), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got["d_sigma"], (s_plus - s_minus) / (2 * h), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(lam, np.log(alpha / sigma), rtol=1e-12)


def test_default_levels():
    np.testing.assert_array_equal(processes.rectified_flow().levels(4), np.float32([1, 0.75, 0.5, 0.25, 0]))
    np.testing.assert_array_equal(PROCESSES["vdm_linear"].levels(2), np.float32([1, 0.5, 0]))
    proc = processes.edm()
    k = np.arange(18) / 17.0
    karras = (80.0 ** (1 / 7) + k * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7  # EDM eq. 5
    levels = proc.levels(18)
    assert levels.dtype == np.float32 and levels.shape == (19,) and levels[-1] == 0
    np.testing.assert_allclose(levels[:-1], karras, rtol=1e-6)
    np.testing.assert_allclose(levels[[0, -2]], [80.0, 0.002], rtol=1e-6)
    lv = processes.solver_levels(processes.rectified_flow(), processes.rectified_flow().levels(4))
    np.testing.assert_array_equal(lv.alpha, [0, 0.25, 0.5, 0.75, 1])
    assert lv.lambda_[0] == -np.inf and lv.sigma_ve[0] == np.inf and lv.lambda_[-1] == np.inf and lv.sigma[-1] == 0


# ---------------------------------------------------------------- parametrizations


def _pair(seed, shape=(3, 4, 2)):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(k1, shape), jax.random.normal(k2, shape)


def test_rectified_flow_velocity_target_is_eps_minus_x0():
    x0, eps = _pair(0)
    t = jnp.asarray([0.0, 0.3, 1.0])
    proc = processes.rectified_flow()
    target = processes.prediction_target(proc, x0, eps, t, "velocity")
    np.testing.assert_allclose(target, eps - x0, rtol=0, atol=1e-6)
    # ... and it is d x_t / dt along x_t = (1 - t) x0 + t eps.
    dt = 1e-2
    diff = (proc.sample(x0, t * 0.5 + dt, eps) - proc.sample(x0, t * 0.5, eps)) / dt
    np.testing.assert_allclose(diff, target, atol=1e-4)


@pytest.mark.parametrize("name", PROCESSES)
@pytest.mark.parametrize("prediction", processes.PREDICTIONS)
def test_x0_and_eps_round_trip(name, prediction):
    proc = PROCESSES[name]
    x0, eps = _pair(1)
    t = jnp.asarray(TIMES[name], jnp.float32)
    x_t = proc.sample(x0, t, eps)
    alpha, sigma = _alpha_sigma_numpy(name, np.asarray(TIMES[name]))
    np.testing.assert_allclose(x_t, alpha[:, None, None] * x0 + sigma[:, None, None] * eps, rtol=1e-5, atol=1e-5)
    out = processes.prediction_target(proc, x0, eps, t, prediction)
    got_x0, got_eps = processes.x0_and_eps(proc, out, x_t, t, prediction)
    scale = np.maximum(1.0, np.asarray(sigma / alpha))[:, None, None]  # eps -> x0 amplifies by sigma / alpha
    np.testing.assert_allclose(got_x0 / scale, x0 / scale, atol=2e-5)
    np.testing.assert_allclose(got_eps, eps, atol=2e-4)


def test_v_for_a_non_vp_process():
    """v = alpha eps - sigma x0 on EDM (alpha = 1): v = eps - sigma x0, x0 = (x - sigma v) / (1 + sigma^2)."""
    proc, (x0, eps) = processes.edm(), _pair(2)
    sigma = jnp.asarray([0.1, 1.0, 10.0])
    v = processes.prediction_target(proc, x0, eps, sigma, "v")
    s = np.asarray(sigma)[:, None, None]
    np.testing.assert_allclose(v, eps - s * x0, rtol=1e-6, atol=1e-5)
    x = x0 + s * eps
    np.testing.assert_allclose(processes.x0_and_eps(proc, v, x, sigma, "v")[0], (x - s * v) / (1 + s**2),
                               rtol=1e-5, atol=1e-6)


def test_eps_at_alpha_zero_is_refused():
    proc, (_, eps) = processes.rectified_flow(), _pair(3)
    with pytest.raises(ValueError, match="'eps' cannot give x_0 where alpha.*'velocity'"):
        processes.x0_and_eps(proc, eps, eps, jnp.ones(3), "eps")
    with pytest.raises(ValueError, match="'eps' cannot give x_0 where alpha"):
        sampling.sample(lambda x, t: x, proc, jax.random.PRNGKey(0), (2, 3), sampler="euler", prediction="eps")
    # Below t = 1 an eps model is fine.
    ts = np.float32([0.9, 0.5, 0.0])
    x = sampling.sample(lambda x, t: x, proc, jax.random.PRNGKey(0), (2, 3), sampler="euler", prediction="eps",
                        timesteps=ts)
    assert np.all(np.isfinite(x))


# ---------------------------------------------------------------- EDM preconditioning and loss weight


def test_edm_preconditioning_matches_table_1():
    sd = 0.5
    sigma = np.array([0.002, 0.1, 0.5, 3.0, 80.0])
    table = dict(  # Karras et al. 2022, table 1 (EDM column), float64
        c_skip=sd**2 / (sigma**2 + sd**2), c_out=sigma * sd / np.sqrt(sd**2 + sigma**2),
        c_in=1 / np.sqrt(sigma**2 + sd**2), c_noise=np.log(sigma) / 4,
        weight=(sigma**2 + sd**2) / (sigma * sd) ** 2)
    s = jnp.asarray(sigma, jnp.float32)
    got = dict(c_skip=processes.edm_c_skip(s, sd), c_out=processes.edm_c_out(s, sd), c_in=processes.edm_c_in(s, sd),
               c_noise=processes.edm_c_noise(s), weight=processes.edm_loss_weight(s, sd))
    for key, value in table.items():
        np.testing.assert_allclose(got[key], value, rtol=2e-6, err_msg=key)
    np.testing.assert_allclose(table["weight"] * table["c_out"] ** 2, 1.0, rtol=1e-12)  # the effective weight
    np.testing.assert_allclose(got["weight"] * got["c_out"] ** 2, 1.0, rtol=1e-5)


def _raw(x, c_noise):
    return jnp.sin(3.0 * x) + c_noise.reshape(c_noise.shape + (1,) * (x.ndim - 1))


def test_edm_precondition_wraps_the_network():
    x = jax.random.normal(jax.random.PRNGKey(4), (3, 5))
    model = processes.edm_precondition(_raw, 0.5)
    sigma = np.float32([1e-4, 0.3, 20.0])
    s = sigma.astype(np.float64)[:, None]
    xd = np.asarray(x, np.float64)
    expected = (0.25 / (s**2 + 0.25) * xd
                + s * 0.5 / np.sqrt(s**2 + 0.25) * (np.sin(3 * xd / np.sqrt(s**2 + 0.25)) + np.log(s) / 4))
    np.testing.assert_allclose(model(x, jnp.asarray(sigma)), expected, rtol=1e-5, atol=1e-6)
    # sigma -> 0: c_skip -> 1, c_out -> 0, so D(x, sigma) -> x (clean data is its own denoising).
    tiny = jnp.full((3,), 1e-7)
    np.testing.assert_allclose(model(x, tiny), x, atol=1e-6)
    np.testing.assert_allclose(processes.edm_c_skip(tiny, 0.5), 1.0)
    np.testing.assert_allclose(processes.edm_c_out(tiny, 0.5), 0.0, atol=1e-6)


def test_edm_weighting_is_refused_off_edm_or_without_an_x0_model():
    x0, noise, t = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32), np.full((2,), 0.5, np.float32)
    with pytest.raises(ValueError, match="weighting 'edm' is EDM's lambda"):
        losses.training_losses(lambda x, t: x, processes.rectified_flow(), x0, t, noise, prediction="x0",
                               weighting="edm")
    with pytest.raises(ValueError, match="weighting 'edm' is EDM's lambda"):
        losses.training_losses(lambda x, t: x, processes.edm(), x0, t, noise, prediction="eps", weighting="edm")


def test_edm_loss_is_the_raw_networks_mse():
    """lambda ||D - x0||^2 = ||F - (x0 - c_skip x) / c_out||^2: EDM's effective training target (eq. 8)."""
    proc, (x0, noise) = processes.edm(), _pair(5, (4, 3, 2))
    sigma = jnp.asarray([0.01, 0.2, 1.5, 50.0])
    out = losses.edm_loss(processes.edm_precondition(_raw, proc.sigma_data), proc, x0, sigma, noise)
    s = np.asarray(sigma, np.float64)[:, None, None]
    x = np.asarray(x0, np.float64) + s * np.asarray(noise, np.float64)
    c_skip, c_out, c_in = 0.25 / (s**2 + 0.25), s * 0.5 / np.sqrt(s**2 + 0.25), 1 / np.sqrt(s**2 + 0.25)
    raw = np.sin(3 * c_in * x) + np.log(s) / 4
    expected = np.mean((raw - (np.asarray(x0, np.float64) - c_skip * x) / c_out) ** 2, axis=(1, 2))
    np.testing.assert_allclose(out["loss"], expected, rtol=2e-4)
    with pytest.raises(ValueError, match="edm_loss weights EDM"):
        losses.edm_loss(_raw, processes.rectified_flow(), x0, sigma, noise)


# ---------------------------------------------------------------- training-time t and the loss


def test_training_time_distributions():
    n = 200_000
    key = jax.random.PRNGKey(6)
    se = 1 / np.sqrt(n)  # standard error of a unit-variance mean; of a variance: sqrt(2 / n) var
    log_sigma = np.log(np.asarray(processes.edm().sample_t(key, (n,)), np.float64))
    assert abs(log_sigma.mean() + 1.2) < 5 * 1.2 * se
    assert abs(log_sigma.var() - 1.44) < 5 * 1.44 * np.sqrt(2) * se
    t = np.asarray(processes.rectified_flow("logit_normal").sample_t(key, (n,)), np.float64)
    logit = np.log(t / (1 - t))
    assert 0 < t.min() and t.max() < 1
    assert abs(logit.mean()) < 5 * se and abs(logit.var() - 1) < 5 * np.sqrt(2) * se
    u = np.asarray(processes.rectified_flow().sample_t(key, (n,)), np.float64)
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12) * se and abs(u.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / n)
    with pytest.raises(ValueError, match="Unknown t_distribution"):
        processes.rectified_flow("beta")


@pytest.mark.parametrize("prediction", processes.PREDICTIONS)
def test_training_losses_on_a_process(prediction):
    proc, (x0, noise) = processes.rectified_flow(), _pair(7)
    t = jnp.asarray([0.1, 0.5, 0.9])
    model = functional.bind(lambda p, x, t: p * x, jnp.float32(0.3))
    out = losses.training_losses(model, proc, x0, t, noise, prediction=prediction)
    s = np.asarray(t)[:, None, None]
    x0d, nd = np.asarray(x0, np.float64), np.asarray(noise, np.float64)
    x_t = (1 - s) * x0d + s * nd
    target = {"eps": nd, "x0": x0d, "v": (1 - s) * nd - s * x0d, "velocity": nd - x0d}[prediction]
    np.testing.assert_allclose(out["loss"], np.mean((0.3 * x_t - target) ** 2, axis=(1, 2)), rtol=1e-5)
    assert out["loss"].shape == (3,)
    default = losses.training_losses(model, proc, x0, t, noise)
    velocity = losses.training_losses(model, proc, x0, t, noise, prediction="velocity")
    np.testing.assert_array_equal(default["loss"], velocity["loss"])
    with pytest.raises(ValueError, match="Unknown weighting on a continuous process 'min_snr'; accepted: none, edm"):
        losses.training_losses(model, proc, x0, t, noise, weighting="min_snr")


def test_training_loss_draws_t_from_the_process():
    proc, (x0, _) = processes.edm(), _pair(12, (64, 3))
    model = functional.bind(lambda p, x, t: p * x, jnp.float32(0.5))
    loss, aux = losses.training_loss(model, proc, x0, jax.random.PRNGKey(13), prediction="x0")
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(13), jnp.arange(64))
    t_keys = jax.vmap(lambda k: jax.random.split(k)[0])(keys)
    np.testing.assert_array_equal(aux["t"], jax.vmap(lambda k: proc.sample_t(k, ()))(t_keys))
    assert aux["t"].dtype == jnp.float32 and np.all(np.asarray(aux["t"]) > 0)
    np.testing.assert_allclose(loss, np.mean(aux["loss"]), rtol=1e-6)
    with pytest.raises(ValueError, match="importance sampling of t is over a Schedule"):
        losses.training_loss(model, proc, x0, jax.random.PRNGKey(0), importance=losses.ImportanceState.create(10))


# ---------------------------------------------------------------- sampling a Gaussian with its exact denoiser

MU = np.array([0.4, -0.6, 0.0, 1.0])
S = np.array([0.5, 0.8, 1.0, 0.3])


def _gaussian(prediction, params, x, t):
    """The exact model of N(mu, s^2) data: E[x0 | x_t] = mu + alpha s^2 (x - alpha mu) / (alpha^2 s^2 + sigma^2),
    and E[eps | x_t] = (x - alpha E[x0 | x_t]) / sigma, output in the prediction's parametrization (linear)."""
    proc, mu, s2 = params
    alpha, sigma = proc.alpha(t)[:, None], proc.sigma(t)[:, None]
    x0 = mu + alpha * s2 * (x - alpha * mu) / (alpha**2 * s2 + sigma**2)
    eps = (x - alpha * mu) * sigma / (alpha**2 * s2 + sigma**2)  # = (x - alpha x0) / sigma, finite at alpha = 0
    return processes.prediction_target(proc, x0, eps, t, prediction)


_APPLY = {p: functools.partial(_gaussian, p) for p in processes.PREDICTIONS}


def gaussian_model(proc, prediction, mu=MU, s=S):
    """The exact model as a Partial over (proc, mu, s^2): equal functions for equal predictions."""
    return functional.bind(_APPLY[prediction], (proc, jnp.asarray(mu, jnp.float32), jnp.asarray(s**2, jnp.float32)))


def exact_ode_map(proc, times):
    """(c, b): the exact probability-flow ODE from times[0] to the last visited level times[-2], then D there
    (every solver's last step), maps x_T to b + c x_T (per dimension), in float64. Along the ODE
    z = (x - alpha mu) / sqrt(alpha^2 s^2 + sigma^2) is constant."""
    name = {processes.RectifiedFlow: "rectified_flow", processes.EDM: "edm"}[type(proc)]
    (a0, a1), (s0, s1) = _alpha_sigma_numpy(name, np.asarray([times[0], times[-2]], np.float64))
    c = a1 * S**2 / np.sqrt(a1**2 * S**2 + s1**2) / np.sqrt(a0**2 * S**2 + s0**2)
    return c, MU - c * a0 * MU


SAMPLE_CASES = [("rectified_flow", s) for s in ("euler", "heun", "dpm++2m", "dpm++3m", "dpm++2m-sde", "unipc", "ddim",
                                                 "ddim-eta1")]
SAMPLE_CASES += [("edm", s) for s in ("euler", "heun", "dpm++2m")]


FIRST_ORDER = ("euler", "ddim", "ddim-eta1", "dpm++2m-sde")  # at 40 steps 6-18% off in variance; the others 1-3%


@pytest.mark.parametrize("name,sampler", SAMPLE_CASES)
def test_gaussian_samples_have_the_datas_moments(name, sampler):
    """Sampled with the exact denoiser, the samples' mean and variance are the exact ODE end's (tolerance: 5
    standard errors of n samples), which lie within 2% of the data's N(mu, s^2) here."""
    proc = PROCESSES[name]
    n = 40_000
    steps = 500 if sampler in FIRST_ORDER else 200
    times = proc.levels(steps)
    eta = 1.0 if sampler == "ddim-eta1" else 0.0
    x = np.asarray(sampling.sample(gaussian_model(proc, "velocity"), proc, jax.random.PRNGKey(8), (n, 4),
                                   sampler=sampler.split("-eta")[0], num_steps=steps, prediction="velocity",
                                   eta=eta, clip_denoised=False), np.float64)  # the data exceed [-1, 1]
    c, b = exact_ode_map(proc, times)
    x_T_std = _alpha_sigma_numpy(name, np.float64([times[0]]))[1]
    mean, var = b, (c * x_T_std) ** 2  # x_T = sigma(t_0) z; on rectified flow the marginal at t = 1, so the SDE
    # (dpm++2m-sde, ddim with eta > 0) has these moments too
    np.testing.assert_allclose(mean, MU, atol=0.02)
    np.testing.assert_allclose(var, S**2, rtol=0.04)
    se = np.sqrt(var / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), 5 * se)
    np.testing.assert_array_less(np.abs(x.var(0) - var), 5 * np.sqrt(2 / n) * var)


@pytest.mark.parametrize("name", ["rectified_flow", "edm"])
def test_heun_beats_euler_against_the_exact_ode(name):
    """At N = 32 default levels Heun's error is under a fifth of Euler's (observed: rectified flow 1.3e-3 vs 0.11,
    EDM 3.6e-2 vs 0.22), and halves twice as N doubles from 16 (second order; Euler's halves once)."""
    proc = PROCESSES[name]
    x_T = np.asarray(jax.random.normal(jax.random.PRNGKey(9), (64, 4))) * float(proc.levels(1)[0])
    errors = {}
    for sampler in ("euler", "heun"):
        for prediction in ("velocity", "x0"):
            for steps in (16, 32):
                x = sampling.sample(gaussian_model(proc, prediction), proc, jax.random.PRNGKey(0), x_T.shape,
                                    sampler=sampler, num_steps=steps, prediction=prediction, x_T=jnp.asarray(x_T))
                c, b = exact_ode_map(proc, proc.levels(steps))
                errors[sampler, prediction, steps] = np.abs(np.asarray(x, np.float64) - (b + c * x_T)).max()
    for prediction in ("velocity", "x0"):
        assert errors["heun", prediction, 32] < 0.2 * errors["euler", prediction, 32], errors
        assert errors["heun", prediction, 16] / errors["heun", prediction, 32] > 3.5, errors
        assert 1.7 < errors["euler", prediction, 16] / errors["euler", prediction, 32] < 2.3, errors


def test_rectified_flow_euler_is_the_flow_matching_step_and_ddim():
    proc = processes.rectified_flow()
    model = gaussian_model(proc, "velocity")
    x_T = jax.random.normal(jax.random.PRNGKey(10), (8, 4))
    times = proc.levels(10)
    got, traj = sampling.sample(model, proc, jax.random.PRNGKey(0), x_T.shape, sampler="euler", num_steps=10,
                                prediction="velocity", x_T=x_T, trajectory_steps=10)
    x = np.asarray(x_T, np.float64)
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):  # x_{t'} = x_t + (t' - t) v
        np.testing.assert_allclose(traj.x_t[i], x, atol=1e-5)
        x = x + (float(t_next) - float(t)) * np.asarray(model(jnp.asarray(x, jnp.float32), jnp.full((8,), t)))
    np.testing.assert_allclose(got, x, atol=1e-5)
    np.testing.assert_array_equal(traj.t, times[:-1])
    ddim = sampling.sample(model, proc, jax.random.PRNGKey(0), x_T.shape, sampler="ddim", num_steps=10,
                           prediction="velocity", x_T=x_T, clip_denoised=False)
    np.testing.assert_allclose(ddim, got, rtol=0, atol=1e-6)


def test_vdm_process_samples_its_gaussian():
    proc = PROCESSES["vdm_linear"]
    x_T = jax.random.normal(jax.random.PRNGKey(11), (16, 4))
    x = {s: sampling.sample(gaussian_model(proc, "eps"), proc, jax.random.PRNGKey(0), x_T.shape, sampler=s,
                            num_steps=200, prediction="eps", x_T=x_T) for s in ("heun", "dpm++2m", "unipc")}
    alpha0, sigma0 = _alpha_sigma_numpy("vdm_linear", np.float64([1.0]))
    exact = MU + S * (np.asarray(x_T, np.float64) - alpha0 * MU) / np.sqrt(alpha0**2 * S**2 + sigma0**2)
    for s, value in x.items():
        np.testing.assert_allclose(value, exact, atol=2e-2, err_msg=s)


def test_sharded_and_inpainting_on_a_process():
    proc = processes.rectified_flow()
    model = gaussian_model(proc, "velocity")
    one = sampling.sample(model, proc, jax.random.PRNGKey(3), (16, 4), sampler="dpm++2m", num_steps=6,
                          prediction="velocity", clip_denoised=True)
    sharded = sampling.sample_sharded(model, proc, jax.random.PRNGKey(3), 16, (4,), sampler="dpm++2m", num_steps=6,
                                      prediction="velocity", clip_denoised=True)
    np.testing.assert_allclose(sharded, one, atol=1e-6)
    images = jnp.full((16, 4), 0.25)
    mask = jnp.asarray([1.0, 1.0, 0.0, 0.0])
    x = sampling.sample(model, proc, jax.random.PRNGKey(3), (16, 4), sampler="heun", num_steps=6,
                        prediction="velocity", known=(images, mask))
    np.testing.assert_allclose(np.asarray(x)[:, 2:], 0.25, atol=1e-6)  # the known pixels come back at t = 0


def test_a_process_sampler_compiles_once_for_new_params():
    """The same model function with other params (traced inputs) and an equal process reuse the compiled loop."""
    run = functools.partial(sampling.sample, rng=jax.random.PRNGKey(0), shape=(2, 4), sampler="heun", num_steps=5,
                            prediction="x0")
    run(gaussian_model(processes.edm(), "x0"), processes.edm())
    compiled = reverse_loop.run._cache_size()
    run(gaussian_model(processes.edm(), "x0", mu=MU + 1, s=S / 2), processes.edm())
    assert reverse_loop.run._cache_size() == compiled


def test_model_gets_float_times_as_they_are():
    seen = []
    proc = processes.edm()

    def model(x, t):
        seen.append(t)
        return jnp.zeros_like(x)

    sampling.sample(model, proc, jax.random.PRNGKey(0), (2, 3), sampler="euler", num_steps=3, prediction="x0")
    assert seen[0].dtype == jnp.float32 and seen[0].shape == (2,)


def test_bad_input_on_a_process():
    proc = processes.rectified_flow()
    model = gaussian_model(proc, "velocity")
    with pytest.raises(ValueError, match="sampler 'ancestral'.*continuous process"):
        sampling.sample(model, proc, jax.random.PRNGKey(0), (2, 4), sampler="ancestral", prediction="velocity")
    with pytest.raises(ValueError, match="spacing 'karras' picks a Schedule's timesteps"):
        sampling.sample(model, proc, jax.random.PRNGKey(0), (2, 4), sampler="heun", spacing="karras",
                        prediction="velocity")
    with pytest.raises(ValueError, match="decrease strictly .* to exactly 0"):
        sampling.sample(model, proc, jax.random.PRNGKey(0), (2, 4), sampler="heun", timesteps=[1.0, 0.5],
                        prediction="velocity")
    with pytest.raises(ValueError, match="Unknown prediction"):
        sampling.sample(model, proc, jax.random.PRNGKey(0), (2, 4), sampler="heun", prediction="score")
    assert solvers.PROCESS_SOLVERS == ("ddim",) + tuple(solvers.SOLVERS)


# ---------------------------------------------------------------- the Schedule path is unchanged


def test_schedule_samples_are_bit_identical_to_before_processes():
    """tests/fixtures/schedule_samples.npz was written by make_schedule_samples.py before processes were added."""
    recorded = np.load(make_schedule_samples.PATH)
    now = make_schedule_samples.samples()
    assert sorted(now) == sorted(recorded.files)
    for key, value in now.items():
        np.testing.assert_array_equal(value, recorded[key], err_msg=key)
