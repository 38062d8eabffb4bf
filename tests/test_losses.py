"""Training losses, weightings and timestep sampling against closed forms and identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax import diffusion, losses, schedules

T = 30
BETAS = schedules.get_betas("linear", T)
SCHED = schedules.make_schedule(BETAS)
ABAR = np.cumprod(1 - BETAS)
SHAPE = (6, 4, 4, 2)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    noise = rng.standard_normal(SHAPE).astype(np.float32)
    t = rng.integers(0, T, SHAPE[0]).astype(np.int32)
    return x0, noise, t


def _affine_model(x, t):
    return 0.3 * x - 0.1


def test_mse_is_l_simple():
    x0, noise, t = _batch()
    terms = losses.training_losses(_affine_model, SCHED, x0, t, noise)
    x_t = np.sqrt(ABAR[t])[:, None, None, None] * x0 + np.sqrt(1 - ABAR[t])[:, None, None, None] * noise
    expected = np.mean((noise - (0.3 * x_t - 0.1)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(terms["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(terms["mse"], expected, rtol=1e-5)
    v_terms = losses.training_losses(_affine_model, SCHED, x0, t, noise, prediction="v")
    v = np.sqrt(ABAR[t])[:, None, None, None] * noise - np.sqrt(1 - ABAR[t])[:, None, None, None] * x0
    np.testing.assert_allclose(v_terms["loss"], np.mean((v - (0.3 * x_t - 0.1)) ** 2, axis=(1, 2, 3)), rtol=1e-4)


def test_weights_closed_forms():
    t = np.arange(T, dtype=np.int32)
    snr = ABAR / (1 - ABAR)
    gamma = 5.0
    w = lambda p, kind, **kw: np.asarray(losses.mse_weight(SCHED, t, p, kind, **kw))
    np.testing.assert_allclose(w("eps", "none"), 1.0)
    np.testing.assert_allclose(w("eps", "min_snr"), np.minimum(snr, gamma) / snr, rtol=1e-4)
    np.testing.assert_allclose(w("x0", "min_snr"), np.minimum(snr, gamma), rtol=1e-4)
    np.testing.assert_allclose(w("v", "min_snr"), np.minimum(snr, gamma) / (snr + 1), rtol=1e-4)
    np.testing.assert_allclose(w("eps", "p2", p2_k=1.0, p2_gamma=0.5), (1 + snr) ** -0.5, rtol=1e-4)


@pytest.mark.parametrize("weighting", ["min_snr", "p2"])
def test_weighted_losses_agree_across_parametrizations(weighting):
    # One prediction of x0, expressed as eps, x0 and v: the weighted losses must be identical, since the
    # weightings are defined on the same underlying x0 error.
    x0, noise, t = _batch(1)
    x_t = diffusion.q_sample(SCHED, x0, t, noise)
    x0_hat = jnp.tanh(x0 + 0.3)
    outputs = {
        "x0": x0_hat,
        "eps": diffusion.predict_eps_from_x0(SCHED, x_t, t, x0_hat),
    }
    outputs["v"] = diffusion.v_from_x0_eps(SCHED, x0_hat, outputs["eps"], t)
    values = {
        p: losses.training_losses(lambda x, tt, o=o: o, SCHED, x0, t, noise, prediction=p, weighting=weighting)[
            "loss"
        ]
        for p, o in outputs.items()
    }
    np.testing.assert_allclose(values["eps"], values["x0"], rtol=2e-3)
    np.testing.assert_allclose(values["v"], values["x0"], rtol=2e-3)


def test_kl_loss_averages_to_the_vlb_without_prior():
    # A batch holding every t once, with the noise bits_per_dim uses at each t: the mean of L_vlb = T * L_t
    # over the batch is the sum of the VLB terms.
    x0_one = np.random.default_rng(2).uniform(-1, 1, (1, 4, 4, 2)).astype(np.float32)
    x0 = np.repeat(x0_one, T, axis=0)
    rng = jax.random.PRNGKey(5)
    t = np.arange(T, dtype=np.int32)
    noise = jnp.concatenate([jax.random.normal(jax.random.fold_in(rng, s), x0_one.shape) for s in range(T)])
    model = lambda x, tt: jnp.concatenate([0.2 * x, jnp.tanh(x)], -1)
    terms = losses.training_losses(model, SCHED, x0, t, noise, loss_type="kl", variance="learned_range")
    bpd = diffusion.bits_per_dim_terms(model, SCHED, x0_one, rng, variance="learned_range", clip_denoised=False)
    assert float(jnp.mean(terms["loss"])) == pytest.approx(float(jnp.sum(bpd["vb_bpd"])), rel=1e-4)
    assert float(jnp.mean(terms["loss"]) + bpd["prior_bpd"][0]) == pytest.approx(float(bpd["total_bpd"][0]), rel=1e-4)


def test_hybrid_loss_and_its_stopped_gradient():
    x0, noise, t = _batch(3)
    out = jnp.asarray(np.random.default_rng(4).normal(size=SHAPE[:-1] + (4,)).astype(np.float32)) * 0.5
    kwargs = dict(variance="learned_range", loss_type="hybrid", hybrid_lambda=1e-3)

    def loss(o):
        return jnp.mean(losses.training_losses(lambda x, tt: o, SCHED, x0, t, noise, **kwargs)["loss"])

    terms = losses.training_losses(lambda x, tt: out, SCHED, x0, t, noise, **kwargs)
    x_t = diffusion.q_sample(SCHED, x0, t, noise)
    vlb = T * diffusion.vlb_term_bpd(SCHED, out, x0, x_t, t, variance="learned_range", clip_denoised=False)
    mse = jnp.mean((noise - out[..., :2]) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(terms["loss"], mse + 1e-3 * vlb, rtol=1e-5)
    np.testing.assert_allclose(terms["vlb"], vlb, rtol=1e-5)
    grad = jax.grad(loss)(out)
    # The prediction channels see only the MSE; the variance channels only lambda * L_vlb.
    mse_grad = jax.grad(lambda o: jnp.mean(jnp.mean((noise - o[..., :2]) ** 2, axis=(1, 2, 3))))(out)
    np.testing.assert_allclose(grad[..., :2], mse_grad[..., :2], rtol=1e-5, atol=1e-9)
    vlb_grad = jax.grad(lambda o: jnp.mean(1e-3 * T * diffusion.vlb_term_bpd(
        SCHED, o, x0, x_t, t, variance="learned_range")))(out)
    np.testing.assert_allclose(grad[..., 2:], vlb_grad[..., 2:], rtol=1e-4, atol=1e-9)
    assert float(jnp.abs(grad[..., 2:]).max()) > 0


def test_importance_sampling_state():
    state = losses.ImportanceState.create(T)
    assert not bool(state.is_warm())
    np.testing.assert_allclose(state.probabilities(), 1.0 / T)
    # Fill every t with 12 losses of value t + 1 (the ring buffer keeps the last 10).
    ts = np.repeat(np.arange(T, dtype=np.int32), 12)
    state = state.update(ts, (ts + 1).astype(np.float32))
    assert bool(state.is_warm())
    np.testing.assert_allclose(state.history, np.repeat(np.arange(1, T + 1, dtype=np.float32)[:, None], 10, 1))
    p = np.asarray(state.probabilities())
    expected = np.arange(1, T + 1) / np.sum(np.arange(1, T + 1)) * (1 - 1e-3) + 1e-3 / T
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    assert p.sum() == pytest.approx(1.0, abs=1e-6)
    # A newer loss replaces the oldest one of its t.
    state2 = state.update(np.array([3], np.int32), np.array([100.0], np.float32))
    assert sorted(np.asarray(state2.history[3])) == [4.0] * 9 + [100.0]
    assert int(state2.counts.max()) < 2 * losses.HISTORY_LENGTH


def test_importance_weights_are_unbiased():
    state = losses.ImportanceState.create(T)
    ts = np.repeat(np.arange(T, dtype=np.int32), 10)
    state = state.update(ts, np.sqrt(ts + 1.0).astype(np.float32))
    per_t_loss = np.linspace(0.5, 3.0, T)
    t, w = losses.sample_timesteps(jax.random.split(jax.random.PRNGKey(0), 200_000), T, state)
    t, w = np.asarray(t), np.asarray(w)
    np.testing.assert_allclose(w, 1.0 / (T * np.asarray(state.probabilities())[t]), rtol=1e-6)
    assert np.mean(w * per_t_loss[t]) == pytest.approx(per_t_loss.mean(), rel=1e-2)
    # Frequencies follow p.
    np.testing.assert_allclose(np.bincount(t, minlength=T) / len(t), state.probabilities(), atol=3e-3)


def test_uniform_timesteps_and_training_loss():
    t, w = losses.sample_timesteps(jax.random.split(jax.random.PRNGKey(1), 5000), T)
    assert t.dtype == jnp.int32 and int(t.min()) == 0 and int(t.max()) == T - 1
    np.testing.assert_allclose(w, 1.0)
    x0, _, _ = _batch(5)
    loss, aux = losses.training_loss(_affine_model, SCHED, x0, jax.random.PRNGKey(2), prediction="x0")
    jitted, aux_j = jax.jit(lambda x: losses.training_loss(_affine_model, SCHED, x, jax.random.PRNGKey(2),
                                                           prediction="x0"))(x0)
    assert float(loss) == pytest.approx(float(jitted), rel=1e-6)
    assert aux["t"].shape == (SHAPE[0],)
    np.testing.assert_array_equal(aux["t"], aux_j["t"])
    assert float(loss) == pytest.approx(float(jnp.mean(aux["loss"])), rel=1e-6)
    # Per-example randomness: the second half of the batch, drawn alone with first_index=3, is the same.
    _, half = losses.training_loss(_affine_model, SCHED, x0[3:], jax.random.PRNGKey(2), first_index=3,
                                   prediction="x0")
    np.testing.assert_array_equal(half["t"], aux["t"][3:])
    np.testing.assert_allclose(half["loss"], aux["loss"][3:], rtol=1e-6)


def test_bad_input():
    x0, noise, t = _batch(6)
    with pytest.raises(ValueError, match="mse, kl, hybrid"):
        losses.training_losses(_affine_model, SCHED, x0, t, noise, loss_type="l1")
    with pytest.raises(ValueError, match="none, min_snr, p2"):
        losses.training_losses(_affine_model, SCHED, x0, t, noise, weighting="snr")
    with pytest.raises(ValueError, match="hybrid' or 'kl'"):
        losses.training_losses(_affine_model, SCHED, x0, t, noise, variance="learned_range")
    with pytest.raises(ValueError, match="learned_range"):
        losses.training_losses(_affine_model, SCHED, x0, t, noise, loss_type="hybrid")
    with pytest.raises(ValueError, match="weighting='none'"):
        losses.training_losses(_affine_model, SCHED, x0, t, noise, loss_type="kl", weighting="p2")
    with pytest.raises(ValueError, match="2 channels, then v's 2"):
        losses.training_losses(_affine_model, SCHED, x0, t, noise, loss_type="kl", variance="learned_range")
