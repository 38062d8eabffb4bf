"""Fast solvers: step for step against diffusers, exact Gaussian answers and convergence orders, the SDE's
distribution, parametrizations, tracing, per-sample randomness, timestep spacings and bad input."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax import diffusion, functional, reverse_loop, sampling, schedules, solvers

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "diffusers_multistep.npz")
T = 1000
SCHED = {name: schedules.make_schedule(schedules.get_betas(name, T)) for name in ("linear", "cosine")}
LINEAR = SCHED["linear"]
ODE_SOLVERS = ("euler", "heun", "dpm++2m", "dpm++3m", "unipc")

# ---------------------------------------------------------------- data N(mu, s^2) per dimension, its exact denoiser

TRACES = []  # one entry per trace of a Gaussian model's apply


def _gaussian_apply(prediction):
    def apply(params, x, t):
        TRACES.append(prediction)
        abar = params["abar"][t].reshape(t.shape + (1,) * (x.ndim - 1))
        sa, s1 = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
        r = (x - sa * params["mu"]) / (abar * params["s2"] + (1.0 - abar))
        eps, x0 = s1 * r, params["mu"] + sa * params["s2"] * r
        return {"eps": eps, "x0": x0, "v": sa * eps - s1 * x0}[prediction]

    return apply


_APPLY = {p: _gaussian_apply(p) for p in diffusion.PREDICTIONS}


def gaussian_model(sched, mu, s, prediction="eps"):
    """The Bayes-optimal eps / x0 / v model of N(mu, s^2) data (the fixture's formula), a Partial over its params."""
    params = {"mu": jnp.asarray(mu, jnp.float32), "s2": jnp.asarray(np.square(s), jnp.float32),
              "abar": sched.alphas_cumprod}
    return functional.bind(_APPLY[prediction], params)


def exact_end(sched, x_T, mu, s, t_first, t_last=None):
    """float64 end point of the exact probability-flow ODE from x_T at t_first to t_last, followed by the step every
    solver ends with, x -> D(x, t_last) (to sigma = 0).

    Along the ODE z = (x - alpha mu) / sqrt(alpha^2 s^2 + sigma^2) is constant, so this is
    mu + s z alpha s / sqrt(alpha^2 s^2 + sigma^2) at t_last. t_last=None (sigma = 0) gives the ODE's own end
    point mu + s z = mu + s / sqrt(s^2 + sigma_ve^2) (x_ve - mu) in the VE coordinates x_ve = x_T / alpha.
    """
    alpha = np.asarray(sched.sqrt_alphas_cumprod, np.float64)
    sigma = np.asarray(sched.sqrt_one_minus_alphas_cumprod, np.float64)
    a0, s0 = alpha[t_first], sigma[t_first]
    z = (np.asarray(x_T, np.float64) - a0 * mu) / np.sqrt(a0**2 * s**2 + s0**2)
    if t_last is None:
        return mu + s * z
    a1, s1 = alpha[t_last], sigma[t_last]
    return mu + s * z * a1 * s / np.sqrt(a1**2 * s**2 + s1**2)


MU = np.array([0.3, -0.5, 0.0, 0.8, -0.2, 0.1])
S = np.array([0.5, 0.2, 1.0, 0.05, 0.7, 0.3])
X_T = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (3, 6)))
RNG = jax.random.PRNGKey(1)

# ---------------------------------------------------------------- step for step against diffusers


def _fixture():
    if not os.path.exists(FIXTURE):
        pytest.skip(f"{FIXTURE} is missing (tests/fixtures/make_diffusers_reference.py writes it)")
    return np.load(FIXTURE)


def _fixture_cases():
    if not os.path.exists(FIXTURE):
        return ["missing"]
    return [str(k) for k in np.load(FIXTURE)["cases"]]


@pytest.mark.parametrize("key", _fixture_cases())
def test_matches_diffusers_step_for_step(key):
    """Every state after every step equals diffusers' (DPMSolverMultistepScheduler, UniPCMultistepScheduler).

    The schedules are ours (float64-computed tables); diffusers' are float32 cumprods, 4e-7 (linear) and 1.3e-5
    (cosine) relative off ours. Observed max |ours - diffusers| over all states: <= 2.2e-6 for the linear cases;
    6.7e-4 for cosine with eps: at t = 999 the cosine abar is 2.4e-9, so x_0 = (x - sigma eps) / alpha amplifies
    one float32 ulp of eps by 1 / alpha = 2e4 in both implementations. Diffusers' own first step is 7.6e-4 off
    its float64 value there, ours 1.5e-4 (asserted below), so that case is held to 1e-3.
    """
    f = _fixture()
    solver, schedule, prediction, n = key.split("_")
    sched = SCHED[schedule]
    ts = f[f"{key}/timesteps"]
    np.testing.assert_array_equal(schedules.spaced_timesteps(sched, int(n), "linspace"), ts)
    model = gaussian_model(sched, f["mu"], f["s"], prediction)
    noise = f[f"{key}/noise"] if solver == "dpm++2m-sde" else None
    x, traj = solvers.solve(model, sched, RNG, f["x_T"].shape, solver=solver, timesteps=ts, prediction=prediction,
                            x_T=f["x_T"], trajectory_steps=len(ts), noise=noise)
    states = np.concatenate([np.asarray(traj.x_t[1:]), np.asarray(x)[None]])  # the state after each step
    reference = f[f"{key}/samples"]
    hard = schedule == "cosine" and prediction == "eps"
    np.testing.assert_allclose(states, reference, rtol=0, atol=1e-3 if hard else 1e-5)
    np.testing.assert_array_equal(traj.t, ts)
    if hard and solver != "dpm++2m-sde":  # the first step against float64 arithmetic on the exact x_0 (DDIM's step)
        abar = np.asarray(sched.alphas_cumprod, np.float64)[ts[:2]]
        alpha, sigma = np.sqrt(abar), np.sqrt(1 - abar)
        x0 = exact_end(sched, f["x_T"], f["mu"], f["s"], ts[0], ts[0])
        first = sigma[1] / sigma[0] * f["x_T"] + (alpha[1] - sigma[1] / sigma[0] * alpha[0]) * x0
        assert np.abs(states[0] - first).max() < 2e-4 < np.abs(reference[0] - first).max()


# ---------------------------------------------------------------- exact answers and orders of convergence

# T = 961 makes linspace(960, 160, N) integer for N - 1 | 800: nested grids, no rounding of the steps. The range
# stops at t = 160: from linspace timesteps all the way down, the steps in lambda near t = 0 do not shrink as N
# grows (lambda ~ -log(t) / 2 there), so no order would show. Every solver's last step (to sigma = 0) returns
# D(x, t_last) whatever the order, so errors are measured against the exact ODE to t_last followed by that same
# step (`exact_end`): they are the solvers' errors at t_last, times D's gain s^2 alpha / (alpha^2 s^2 + sigma^2).
CONV_SCHED = schedules.make_schedule(schedules.get_betas("linear", 961))
CONV_STEPS = (41, 81, 161)
ORDERS = {  # the observed log2 error ratios as N doubles (41 -> 81 -> 161) must lie in these ranges
    "euler": (0.9, 1.1),  # observed 0.99, 1.00
    "heun": (1.9, 2.2),  # 2.03, 2.02
    "dpm++2m": (1.9, 2.35),  # 2.15, 2.09 (approaching 2 from above: float64 gives 2.67, 2.33, 2.08 from N = 21)
    # diffusers' (and Lu et al.'s, k-diffusion's) multistep third-order update uses D2 = h^2 D'' / 2 where the
    # Taylor term needs h^2 D'' (their singlestep third-order solver has the factor 2): its local error keeps an
    # O(h^3) term, so it is asymptotically second order. Observed 2.56, 2.63; in float64 (no roundoff at these
    # 1e-5 errors) 2.74, 2.56, 2.35 from N = 21, falling towards 2, while the same update with 2 D2 gives 3.1
    # throughout. It is still more accurate than 2M at every N (asserted).
    "dpm++3m": (2.2, 2.9),
    # UniPC-2 with its corrector is third order (UniC-p raises UniP-p's order by one, Zhao et al. 2023):
    # observed 2.77, 2.83 (float64: 2.43, 2.77, 2.89 from N = 21).
    "unipc": (2.6, 3.3),
}


@functools.cache
def _convergence_errors(solver):
    model = gaussian_model(CONV_SCHED, MU, S, "x0")
    errors = []
    for n in CONV_STEPS:
        ts = np.linspace(960, 160, n).astype(np.int32)
        x = solvers.solve(model, CONV_SCHED, RNG, X_T.shape, solver=solver, timesteps=ts, prediction="x0", x_T=X_T)
        errors.append(np.abs(np.asarray(x, np.float64) - exact_end(CONV_SCHED, X_T, MU, S, ts[0], ts[-1])).max())
    return np.array(errors)


@pytest.mark.parametrize("solver", ODE_SOLVERS)
def test_ode_solvers_converge_at_their_order(solver):
    errors = _convergence_errors(solver)
    orders = np.log2(errors[:-1] / errors[1:])
    low, high = ORDERS[solver]
    assert np.all((low < orders) & (orders < high)), (solver, errors, orders)
    if solver == "dpm++3m":
        assert np.all(errors < _convergence_errors("dpm++2m"))


@pytest.mark.parametrize("solver", ODE_SOLVERS)
def test_ode_solvers_reach_the_closed_form_end_point(solver):
    """With Karras spacing (down to t = 0, sigma_ve = 0.01) 80 steps land near the ODE's own end point
    x(0) = mu + s / sqrt(s^2 + sigma_ve^2) (x_ve - mu). Observed: Euler 5.5e-2, Heun and 2M 3.5e-3, 3M and UniPC
    1.3e-3, of which up to 2e-3 is the last step's s z sigma_ve^2 / (2 s^2) (the data's s = 0.05 dimension)."""
    ts = schedules.spaced_timesteps(LINEAR, 80, "karras")
    x = solvers.solve(gaussian_model(LINEAR, MU, S), LINEAR, RNG, X_T.shape, solver=solver, timesteps=ts, x_T=X_T)
    tolerance = {"euler": 0.08, "heun": 6e-3, "dpm++2m": 6e-3}.get(solver, 3e-3)
    assert np.abs(np.asarray(x) - exact_end(LINEAR, X_T, MU, S, T - 1)).max() < tolerance


def _k_diffusion(solver, denoise, x, sigmas):
    """k-diffusion's sample_euler / sample_heun (s_churn = 0), transcribed: VE state x, sigmas ending at 0."""
    for i in range(len(sigmas) - 1):
        d = (x - denoise(x, sigmas[i])) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if solver == "euler" or sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - denoise(x_2, sigmas[i + 1])) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_euler_and_heun_match_k_diffusion(solver):
    """Against the float64 transcription on the same sigmas (sigma_ve at the Karras timesteps, then 0) with the
    exact VE denoiser D(y, sigma) = mu + s^2 / (s^2 + sigma^2) (y - mu); y_0 = x_T / alpha."""
    ts = schedules.spaced_timesteps(LINEAR, 80, "karras")
    x = solvers.solve(gaussian_model(LINEAR, MU, S), LINEAR, RNG, X_T.shape, solver=solver, timesteps=ts, x_T=X_T)
    sigmas = np.r_[np.asarray(LINEAR.sqrt_recipm1_alphas_cumprod, np.float64)[ts], 0.0]
    y_T = X_T / np.asarray(LINEAR.sqrt_alphas_cumprod, np.float64)[ts[0]]
    reference = _k_diffusion(solver, lambda y, sigma: MU + S**2 / (S**2 + sigma**2) * (y - MU), y_T, sigmas)
    np.testing.assert_allclose(x, reference, rtol=0, atol=1e-5)  # observed 3.0e-7 (Euler), 1.1e-6 (Heun)


def test_euler_is_ddim():
    """Euler in x / alpha is DDIM with eta = 0: x' = alpha' (D + sigma_ve' (x / alpha - D) / sigma_ve)."""
    model = gaussian_model(LINEAR, MU, S)
    ts = schedules.spaced_timesteps(LINEAR, 10, "leading")
    np.testing.assert_array_equal(ts, sampling.ddim_timesteps(T, 10)[::-1])
    euler = solvers.solve(model, LINEAR, RNG, X_T.shape, solver="euler", timesteps=ts, x_T=X_T)
    ddim = sampling.ddim_sample(model, LINEAR, RNG, X_T.shape, num_steps=10, eta=0.0, clip_denoised=False, x_T=X_T)
    np.testing.assert_allclose(euler, ddim, rtol=0, atol=5e-6)  # observed 1.3e-6


# ---------------------------------------------------------------- the SDE solver


def test_sde_samples_the_data_distribution():
    """dpm++2m-sde with the exact denoiser of N(mu, s^2) data samples N(mu, s^2).

    The sampler is affine in (x_T, z_0 .. z_{N-1}) here, so one batch of unit inputs gives its exact output law:
    mean c, variance A^2 + sum B_i^2. That law is within 1% of the data's (the discretization bias), and 20000
    samples are within 4 standard errors of it (variance: 4 sqrt(2 / n) = 4%; mean: 4 s / sqrt(n)).
    """
    mu, s, n_steps, n = 0.3, 0.5, 25, 20000
    model = gaussian_model(LINEAR, [mu], [s])
    ts = schedules.spaced_timesteps(LINEAR, n_steps, "linspace")
    basis = np.eye(n_steps + 2, dtype=np.float32)  # row 0: all zero; row 1: x_T = 1; row 2 + i: z_i = 1
    x = np.asarray(solvers.solve(model, LINEAR, RNG, (n_steps + 2, 1), solver="dpm++2m-sde", timesteps=ts,
                                 x_T=basis[:, 1:2], noise=basis[:, 2:].T[:, :, None]), np.float64)[:, 0]
    mean, var = x[0], np.sum((x[1:] - x[0]) ** 2)
    assert mean == pytest.approx(mu, abs=1e-3) and var == pytest.approx(s**2, rel=0.01)
    samples = np.asarray(solvers.solve(model, LINEAR, jax.random.PRNGKey(2), (n, 1), solver="dpm++2m-sde",
                                       timesteps=ts))[:, 0]
    assert abs(samples.mean() - mean) < 4 * s / np.sqrt(n)
    assert samples.var() == pytest.approx(var, rel=4 * np.sqrt(2 / n))


def test_sde_sample_does_not_depend_on_its_batch():
    model = gaussian_model(LINEAR, MU, S)
    ts = schedules.spaced_timesteps(LINEAR, 8, "linspace")
    kw = {"solver": "dpm++2m-sde", "timesteps": ts}
    batch = np.asarray(solvers.solve(model, LINEAR, RNG, (4, 6), **kw))
    for i in range(4):
        alone = solvers.solve(model, LINEAR, RNG, (1, 6), first_index=i, **kw)
        np.testing.assert_allclose(alone[0], batch[i], rtol=0, atol=1e-6)
    assert not np.allclose(batch[0], batch[1])
    other = np.asarray(solvers.solve(model, LINEAR, jax.random.PRNGKey(7), (4, 6), **kw))
    assert not np.allclose(other, batch)


# ---------------------------------------------------------------- parametrizations, shapes, tracing, NFE


@pytest.mark.parametrize("solver", ["heun", "dpm++2m-sde"])
def test_eps_x0_v_models_give_the_same_samples(solver):
    ts = schedules.spaced_timesteps(LINEAR, 12, solvers.DEFAULT_SPACING[solver])
    out = {p: solvers.solve(gaussian_model(LINEAR, MU, S, p), LINEAR, RNG, (3, 6), solver=solver, timesteps=ts,
                            prediction=p) for p in diffusion.PREDICTIONS}
    np.testing.assert_allclose(out["x0"], out["eps"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(out["v"], out["eps"], rtol=0, atol=1e-4)


def test_images_are_solved_like_vectors():
    shape = (2, 3, 3, 2)  # [B, H, W, C], data per channel
    mu, s = np.array([-0.4, 0.5]), np.array([0.3, 0.6])
    x_T = jax.random.normal(jax.random.PRNGKey(3), shape)
    ts = schedules.spaced_timesteps(LINEAR, 8, "linspace")
    images = solvers.solve(gaussian_model(LINEAR, mu, s), LINEAR, RNG, shape, solver="unipc", timesteps=ts, x_T=x_T)
    assert images.shape == shape and images.dtype == jnp.float32
    vectors = solvers.solve(gaussian_model(LINEAR, np.tile(mu, 9), np.tile(s, 9)), LINEAR, RNG, (2, 18),
                            solver="unipc", timesteps=ts, x_T=x_T.reshape(2, 18))
    np.testing.assert_allclose(images.reshape(2, 18), vectors, rtol=0, atol=1e-6)


def test_clip_denoised_clips_the_x0_prediction():
    model = gaussian_model(LINEAR, [3.0], [0.1])  # data far outside [-1, 1]
    ts = schedules.spaced_timesteps(LINEAR, 6, "linspace")
    x, traj = solvers.solve(model, LINEAR, RNG, (5, 1), solver="dpm++2m", timesteps=ts, clip_denoised=True,
                            trajectory_steps=6)
    assert np.all(np.abs(np.asarray(traj.pred_x0)) <= 1.0) and np.allclose(x, 1.0, atol=1e-5)
    free = solvers.solve(model, LINEAR, RNG, (5, 1), solver="dpm++2m", timesteps=ts)
    assert np.all(np.asarray(free) > 2.0)


@pytest.mark.parametrize("solver", ["heun", "dpm++2m-sde"])
def test_traces_once_per_shape_and_setting(solver):
    ts = tuple(schedules.spaced_timesteps(LINEAR, 5, solvers.DEFAULT_SPACING[solver]))
    solvers.solve(gaussian_model(LINEAR, MU, S), LINEAR, RNG, (3, 6), solver=solver, timesteps=ts)
    traces, compiled = len(TRACES), reverse_loop.run._cache_size()
    for i, scale in enumerate((0.5, 2.0)):  # new params, keys, x_T, first_index: no new trace
        solvers.solve(gaussian_model(LINEAR, MU * scale, S * scale), LINEAR, jax.random.PRNGKey(i), (3, 6),
                      solver=solver, timesteps=list(ts), first_index=i)
    assert len(TRACES) == traces and reverse_loop.run._cache_size() == compiled


def test_heun_evaluates_the_model_2n_minus_1_times():
    calls = []

    def counting(params, x, t):
        jax.debug.callback(lambda: calls.append(1))
        return _APPLY["eps"](params, x, t)

    model = functional.bind(counting, {"mu": jnp.float32(0.0), "s2": jnp.float32(1.0), "abar": LINEAR.alphas_cumprod})
    for solver in ("heun", "unipc"):
        calls.clear()
        ts = schedules.spaced_timesteps(LINEAR, 7, solvers.DEFAULT_SPACING[solver])
        jax.block_until_ready(solvers.solve(model, LINEAR, RNG, (2, 1), solver=solver, timesteps=ts))
        jax.effects_barrier()
        assert len(calls) == solvers.nfe(solver, 7) == (13 if solver == "heun" else 7)


# ---------------------------------------------------------------- timestep spacings and levels


def test_spacings():
    np.testing.assert_array_equal(schedules.spaced_timesteps(LINEAR, 50, "leading"), np.arange(0, 1000, 20)[::-1])
    # The DDIM paper's range(0, T, T // N): 31 levels for N = 30 (1000 // 30 = 33), as ddim_sample has always had.
    np.testing.assert_array_equal(schedules.spaced_timesteps(LINEAR, 30, "leading"), np.arange(31)[::-1] * 33)
    np.testing.assert_array_equal(schedules.spaced_timesteps(LINEAR, 10, "linspace"),
                                  [999, 899, 799, 699, 599, 500, 400, 300, 200, 100])
    np.testing.assert_array_equal(schedules.spaced_timesteps(LINEAR, 3, "trailing"), [999, 666, 332])
    np.testing.assert_array_equal(schedules.spaced_timesteps(LINEAR, 50, "trailing"),
                                  sampling.ddim_timesteps(T, 50, "trailing")[::-1])
    for spacing in schedules.SPACINGS:
        for n in (1, 7, 100, 999):
            ts = schedules.spaced_timesteps(SCHED["cosine"], n, spacing)
            expected = len(range(0, T, T // n)) if spacing == "leading" else n  # leading: DDIM's range
            assert ts.dtype == np.int32 and ts.shape == (expected,) and np.all(np.diff(ts) < 0), (spacing, n)
            assert 0 <= ts[-1] and ts[0] <= T - 1


def test_karras_spacing():
    """EDM eq. 5 (rho = 7) between sigma(0) and sigma(T-1), snapped in log sigma; spread where snaps collide."""
    log_sigma = np.log(np.asarray(LINEAR.sqrt_recipm1_alphas_cumprod, np.float64))
    ts = schedules.spaced_timesteps(LINEAR, 10, "karras")
    lo, hi = np.exp(log_sigma[0] / 7), np.exp(log_sigma[-1] / 7)
    target = 7 * np.log(hi + np.linspace(0, 1, 10) * (lo - hi))
    assert ts[0] == T - 1 and ts[-1] == 0
    for t, g in zip(ts, target):  # the nearest timestep in log sigma
        assert abs(log_sigma[t] - g) <= np.abs(log_sigma - g).min() + 1e-12
    many = schedules.spaced_timesteps(LINEAR, 500, "karras")  # crowds the low-noise end: spread to distinct
    assert len(np.unique(many)) == 500 and many[0] == T - 1 and many[-1] == 0
    np.testing.assert_array_equal(many[-40:], np.arange(39, -1, -1))
    np.testing.assert_array_equal(schedules.spaced_timesteps(LINEAR, T, "karras"), np.arange(T)[::-1])


def test_levels():
    ts = np.array([999, 500, 0], np.int32)
    lv = jax.jit(schedules.levels)(LINEAR, ts)  # works under jit
    abar = np.cumprod(1 - schedules.get_betas("linear", T))[ts]
    np.testing.assert_array_equal(lv.t, [999, 500, 0, -1])
    np.testing.assert_allclose(lv.alpha, np.r_[np.sqrt(abar), 1.0], rtol=1e-6)
    np.testing.assert_allclose(lv.sigma, np.r_[np.sqrt(1 - abar), 0.0], rtol=1e-6)
    np.testing.assert_allclose(lv.lambda_[:-1], 0.5 * np.log(abar / (1 - abar)), rtol=1e-6)
    np.testing.assert_allclose(lv.sigma_ve, np.r_[np.sqrt((1 - abar) / abar), 0.0], rtol=1e-6)
    assert lv.lambda_[-1] == np.inf and lv.alpha.dtype == jnp.float32


# ---------------------------------------------------------------- bad input


def test_bad_input_errors():
    model = gaussian_model(LINEAR, MU, S)
    ts = schedules.spaced_timesteps(LINEAR, 5, "linspace")

    def solve(**kw):
        return solvers.solve(model, LINEAR, RNG, (3, 6), **{"solver": "dpm++2m", "timesteps": ts, **kw})

    with pytest.raises(ValueError, match="Unknown solver 'dpm\\+\\+2s'; accepted: euler, heun, dpm\\+\\+2m, "):
        solve(solver="dpm++2s")
    with pytest.raises(ValueError, match="accepted: linspace, leading, trailing, karras"):
        schedules.spaced_timesteps(LINEAR, 10, "quadratic")
    np.testing.assert_array_equal(schedules.spaced_timesteps(LINEAR, 10, "uniform"),  # the DDIM code's name
                                  schedules.spaced_timesteps(LINEAR, 10, "leading"))
    for n in (0, T + 1, 2.5):
        with pytest.raises(ValueError, match=r"num_steps must be an integer in \[1, 1000\]"):
            schedules.spaced_timesteps(LINEAR, n, "trailing")
    with pytest.raises(ValueError, match=r"'linspace' repeats a timestep .* \[1, 999\]"):
        schedules.spaced_timesteps(LINEAR, T, "linspace")
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda s: schedules.spaced_timesteps(s, 10, "karras"))(LINEAR)
    zero_snr = schedules.make_schedule(schedules.get_betas("linear", 100, zero_terminal_snr=True))
    with pytest.raises(ValueError, match="finite largest sigma"):
        schedules.spaced_timesteps(zero_snr, 10, "karras")
    with pytest.raises(ValueError, match="strictly decreasing"):
        solve(timesteps=ts[::-1])
    with pytest.raises(ValueError, match="strictly decreasing"):
        solve(timesteps=[999, 500, 500, 0])
    for bad in ([1000, 10], [10, -1]):
        with pytest.raises(ValueError, match=r"in \[0, 1000\)"):
            solve(timesteps=bad)
    for bad in ([], [999.0, 10.0], [[999, 10]]):
        with pytest.raises(ValueError, match="non-empty 1-D sequence of ints"):
            solve(timesteps=bad)
    with pytest.raises(ValueError, match="Unknown prediction"):
        solve(prediction="score")
    with pytest.raises(ValueError, match="only used by the stochastic samplers"):
        solve(noise=np.zeros((5, 3, 6)))
    with pytest.raises(ValueError, match=r"expected \(5, 3, 6\)"):
        solve(solver="dpm++2m-sde", noise=np.zeros((4, 3, 6)))
    with pytest.raises(ValueError, match="x_T has shape"):
        solve(x_T=np.zeros((2, 6)))
    with pytest.raises(ValueError, match="Unknown solver"):
        solvers.nfe("ddpm", 10)
