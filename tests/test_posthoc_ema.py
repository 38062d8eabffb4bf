"""Post-hoc EMA (EDM2): the power-function profile and sigma_rel (against quadrature), the compiled EMA update
against its closed form, the profile inner products, a toy reconstruction of a directly tracked EMA from snapshots
of two others, and the errors. Training with it is tested in test_posthoc_ema_training.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from ddpm_jax import posthoc_ema


def _profile(t, gamma):
    """The power-function profile p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t]."""
    return lambda tau: (gamma + 1) * tau ** gamma / t ** (gamma + 1) if 0 <= tau <= t else 0.0


def test_sigma_rel_is_the_relative_std_of_the_profile_and_round_trips():
    for gamma in (0.5, 1.0, 6.94, 16.97, 40.0):
        p = _profile(1.0, gamma)
        mean = integrate.quad(lambda tau: tau * p(tau), 0, 1)[0]
        var = integrate.quad(lambda tau: (tau - mean) ** 2 * p(tau), 0, 1)[0]
        assert posthoc_ema.exp_to_std(gamma) == pytest.approx(np.sqrt(var), rel=1e-9)
        assert posthoc_ema.std_to_exp(posthoc_ema.exp_to_std(gamma)) == pytest.approx(gamma, rel=1e-9)
    sigma = np.geomspace(1e-3, 0.288, 50)
    np.testing.assert_allclose(posthoc_ema.exp_to_std(posthoc_ema.std_to_exp(sigma)), sigma, rtol=1e-9)
    # EDM2's two default profiles (Sec. 3.1): gamma 16.97 and 6.94.
    np.testing.assert_allclose(posthoc_ema.std_to_exp(np.array([0.05, 0.10])), [16.97, 6.94], atol=5e-3)
    assert posthoc_ema.std_to_exp(np.array([[0.05]])).shape == (1, 1)


@pytest.fixture(scope="module")
def compiled_update():
    return jax.jit(posthoc_ema.update, static_argnums=3)


def test_update_is_the_profile_weighted_sum_of_the_params(compiled_update):
    """After t steps the EMA is sum_i w_i theta_i, w_i the profile's integral over (i - 1, i] (EDM2 eq. 127 unrolled),
    here by quadrature in float64."""
    steps, gammas = 200, (16.97, 6.94)
    rng = np.random.default_rng(0)
    thetas = [dict(a=rng.normal(size=(3, 2)).astype(np.float32) + i / 50, b=rng.normal(size=(4,)).astype(np.float32))
              for i in range(1, steps + 1)]
    emas = (thetas[0], thetas[0])  # any start: the first update (t = 1) replaces it
    for t, theta in enumerate(thetas, start=1):
        emas = compiled_update(emas, theta, jnp.int32(t), gammas)
        if t == 1:
            assert all(np.array_equal(e["a"], theta["a"]) for e in emas)  # exactly the params at t = 1
    for ema, gamma in zip(emas, gammas):
        p = _profile(steps, gamma)
        weights = np.array([integrate.quad(p, i - 1, i)[0] for i in range(1, steps + 1)])
        assert weights.sum() == pytest.approx(1.0, abs=1e-9)
        for key in ("a", "b"):
            expected = np.tensordot(weights, np.stack([th[key] for th in thetas]).astype(np.float64), axes=1)
            np.testing.assert_allclose(ema[key], expected, rtol=2e-5, atol=2e-6)


def test_update_weights_stay_accurate_late_in_training(compiled_update):
    """At t = 10^6, 1 - beta = 1 - (1 - 1/t)^(gamma + 1) ~ (gamma + 1) / t: a float32 1 - 1/t would be off by
    several percent; the update's log1p/expm1 form is not."""
    t, gamma = 1_000_000, 6.94
    ema, params = dict(w=jnp.zeros(())), dict(w=jnp.ones(()))
    (new,) = compiled_update((ema,), params, jnp.int32(t), (gamma,))
    expected = -np.expm1((gamma + 1) * np.log1p(-1.0 / t))
    assert float(new["w"]) == pytest.approx(expected, rel=1e-5)


def test_profile_inner_products_match_quadrature():
    for ta, sa, tb, sb in ((100, 0.05, 100, 0.10), (60, 0.05, 100, 0.07), (100, 0.10, 40, 0.05), (7, 0.2, 9, 0.01)):
        ga, gb = posthoc_ema.std_to_exp(sa), posthoc_ema.std_to_exp(sb)
        pa, pb = _profile(ta, ga), _profile(tb, gb)
        expected = integrate.quad(lambda tau: pa(tau) * pb(tau), 0, min(ta, tb), epsabs=0, epsrel=1e-11)[0]
        assert posthoc_ema.profile_inner_products(ta, sa, tb, sb) == pytest.approx(expected, rel=1e-8)
        assert posthoc_ema.profile_inner_products(tb, sb, ta, sa) == pytest.approx(expected, rel=1e-8)


def test_a_tracked_profile_is_reconstructed_exactly():
    """A target that is one of the inputs gets coefficient 1 on it and profile error 0."""
    steps = np.repeat([50, 100], 2)
    sigmas = np.tile([0.05, 0.10], 2)
    x, err = posthoc_ema.solve_coefficients(steps, sigmas, 100, [0.10, 0.05])
    np.testing.assert_allclose(x[:, 0], [0, 0, 0, 1], atol=1e-8)
    np.testing.assert_allclose(x[:, 1], [0, 0, 1, 0], atol=1e-8)
    np.testing.assert_allclose(err, 0, atol=1e-6)


def _toy_run(workdir, steps=2000, snapshot_every=100):
    """Noisy gradient descent on a quadratic (64 params, a drifting target) with three power-function EMAs tracked
    by `update`: sigma_rel 0.05 and 0.10 snapshotted every `snapshot_every` steps, 0.07 only tracked. Returns the
    directly tracked 0.05, 0.07 and 0.10 EMAs at the end."""
    sigma_rels = (0.05, 0.07, 0.10)
    gammas = tuple(float(g) for g in posthoc_ema.std_to_exp(np.array(sigma_rels)))

    @jax.jit
    def chunk(theta, emas, first, key):
        def body(i, carry):
            theta, emas = carry
            t = first + i
            target = jnp.sin(t / 300.0 + jnp.arange(64) / 10.0)
            noise = jax.random.normal(jax.random.fold_in(key, t), theta["w"].shape)
            theta = dict(w=theta["w"] - 0.02 * (theta["w"] - target) + 0.05 * noise)
            return theta, posthoc_ema.update(emas, theta, t, gammas)

        return jax.lax.fori_loop(0, snapshot_every, body, (theta, emas))

    theta = dict(w=jnp.zeros(64))
    emas = (theta,) * 3
    for start in range(1, steps + 1, snapshot_every):
        theta, emas = chunk(theta, emas, jnp.int32(start), jax.random.PRNGKey(0))
        step = start + snapshot_every - 1
        host = [jax.tree_util.tree_map(np.asarray, e) for e in emas]
        posthoc_ema.write_snapshot(workdir, step, (0.05, 0.10), [host[0], host[2]])
    return [np.asarray(e["w"]) for e in emas]


def test_toy_reconstruction_matches_a_directly_tracked_ema(tmp_path):
    ema05, ema07, ema10 = _toy_run(str(tmp_path))
    params, info = posthoc_ema.reconstruct(str(tmp_path), 0.07)
    assert info["step"] == 2000 and len(info["inputs"]) == 40
    assert sum(i["coefficient"] for i in info["inputs"]) == pytest.approx(1.0)
    assert info["profile_error"] < 0.01
    error = np.linalg.norm(params["w"] - ema07) / np.linalg.norm(ema05 - ema10)
    print(f"toy reconstruction of sigma_rel 0.07 from 20 snapshots x (0.05, 0.10): |rec - direct| / |ema05 - ema10| "
          f"= {error:.2e}, profile error {info['profile_error']:.2e}")
    assert error < 0.02
    # The tracked ones come back as they are.
    back, info10 = posthoc_ema.reconstruct(str(tmp_path), 0.10)
    np.testing.assert_allclose(back["w"], ema10, atol=1e-5)
    assert info10["profile_error"] < 1e-6

    path, _ = posthoc_ema.export(str(tmp_path), 0.07)
    loaded, step = posthoc_ema.load_reconstruction(str(tmp_path), 0.07)
    assert step == 2000 and path == posthoc_ema.reconstruction_path(str(tmp_path), 0.07, 2000)
    np.testing.assert_array_equal(loaded["w"], params["w"])


def test_bad_input(tmp_path):
    workdir = str(tmp_path)
    with pytest.raises(ValueError, match=r"no post-hoc EMA snapshots .* config.train.posthoc_ema = dict"):
        posthoc_ema.reconstruct(workdir, 0.07)
    with pytest.raises(FileNotFoundError, match="no post-hoc EMA snapshots"):
        posthoc_ema.load_reconstruction(workdir, 0.07)
    ema = dict(w=np.ones(3, np.float32))
    for step in (100, 200):
        posthoc_ema.write_snapshot(workdir, step, (0.05, 0.10), [ema, ema])
    with pytest.raises(ValueError, match=r"sigma_rel must be a number in \(0.0, 0.289\), got 0.3"):
        posthoc_ema.reconstruct(workdir, 0.3)
    # Two snapshots of 0.05 and 0.10 cannot give a long EMA: the message says what they can.
    with pytest.raises(ValueError, match=r"sigma_rel 0.25 is outside what .* relative L2 error of 0.7\d\d, above the "
                                         r"0.1 accepted; they give sigma_rel in \[0.03\d, 0.1\d\d\]"):
        posthoc_ema.reconstruct(workdir, 0.25)
    lo, hi = posthoc_ema.supported_range([100, 100, 200, 200], [0.05, 0.10] * 2, 200)
    _, errors = posthoc_ema.solve_coefficients([100, 100, 200, 200], [0.05, 0.10] * 2, 200,
                                               [lo, hi, lo * 0.97, hi * 1.03])
    assert np.all(errors[:2] <= 0.1) and np.all(errors[2:] > 0.1)
    with pytest.raises(ValueError, match="no post-hoc EMA snapshot of step 150 .* steps there: 100, 200"):
        posthoc_ema.reconstruct(workdir, 0.07, step=150)
    with pytest.raises(FileNotFoundError, match="python -m ddpm_jax ema --workdir .* --sigma-rel 0.07"):
        posthoc_ema.load_reconstruction(workdir, 0.07)
    with pytest.raises(ValueError, match="max_error must be"):
        posthoc_ema.reconstruct(workdir, 0.07, max_error=0)
    # A reconstruction at an earlier snapshot uses the snapshots up to it only.
    _, info = posthoc_ema.reconstruct(workdir, 0.07, step=100)
    assert [i["step"] for i in info["inputs"]] == [100, 100]
