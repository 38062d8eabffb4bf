"""The one loop, the one denoiser and the sampler table: every sampler and entry compiles `reverse_loop.run` only, a
new sampler is one step function, the denoiser inverts the forward process, defaults are the table's everywhere."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax import denoiser, diffusion, editing, processes, reverse_loop, sampling, schedules, solvers, steps
from ddpm_jax.reverse_loop import Sampler

T = 50
SCHED = schedules.make_schedule(schedules.get_betas("linear", T))
X0 = jax.random.uniform(jax.random.PRNGKey(0), (3, 4, 4, 2), minval=-1.0, maxval=1.0)
EPS = jax.random.normal(jax.random.PRNGKey(1), X0.shape)


def toy_model(x, t):
    """A fixed smooth function of (x, t) standing in for a network; float or int t."""
    w = jnp.asarray([[0.9, -0.3], [0.2, 0.7]], jnp.float32)
    return jnp.tanh(x @ w + (t.astype(jnp.float32) / T).reshape(t.shape + (1,) * (x.ndim - 1)))


def test_every_sampler_and_entry_compiles_only_the_one_loop():
    """The sampling modules hold exactly one jitted function, `reverse_loop.run` (before: five, one per loop)."""
    jitted = {f"{m.__name__}.{name}" for m in (sampling, solvers, steps, editing, reverse_loop)
              for name, obj in vars(m).items() if hasattr(obj, "_cache_size") and getattr(obj, "__module__", "")
              == m.__name__}
    assert jitted == {"ddpm_jax.reverse_loop.run"}
    rng, shape = jax.random.PRNGKey(2), (2, 4, 4, 2)
    before = reverse_loop.run._cache_size()
    sampling.ancestral_sample(toy_model, SCHED, rng, shape)
    sampling.ddim_sample(toy_model, SCHED, rng, shape, num_steps=5)
    sampling.ddim_invert(toy_model, SCHED, X0[:2], num_steps=5)
    solvers.solve(toy_model, SCHED, rng, shape, solver="heun", timesteps=[40, 20, 0])
    editing.inpaint(toy_model, SCHED, rng, X0[:2], jnp.ones((4, 4, 1)), sampler="ddim", num_steps=5, resample=2)
    assert reverse_loop.run._cache_size() == before + 5


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_the_denoiser_inverts_the_forward_process_on_a_schedule(prediction):
    """A model that outputs the true target of x_t = q_sample(x0, eps) is denoised back to (x0, eps)."""
    t = jnp.asarray([0, 17, 49], jnp.int32)
    x_t = diffusion.q_sample(SCHED, X0, t, EPS)
    target = diffusion.prediction_target(SCHED, X0, EPS, t, prediction)
    d = denoiser.denoiser(lambda x, tt: jnp.concatenate([target, -target], -1), SCHED, prediction)(x_t, t)
    np.testing.assert_allclose(d.x0, X0, atol=2e-4)
    np.testing.assert_allclose(d.eps[1:], EPS[1:], atol=2e-4)  # at t = 0, eps from x0 is ill-conditioned
    assert d.output.shape == X0.shape[:-1] + (4,)  # the learned-variance half is kept for the ancestral step


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "velocity"])
def test_the_denoiser_inverts_the_forward_process_on_a_process(prediction):
    proc = processes.rectified_flow()
    t = jnp.asarray([0.1, 0.5, 0.9], jnp.float32)
    x_t = proc.sample(X0, t, EPS)
    target = processes.prediction_target(proc, X0, EPS, t, prediction)
    d = denoiser.denoiser(lambda x, tt: target, proc, prediction)(x_t, t)
    np.testing.assert_allclose(d.x0, X0, atol=1e-5)
    np.testing.assert_allclose(d.eps, EPS, atol=1e-5)
    with pytest.raises(ValueError, match="Unknown prediction 'velocity'"):
        denoiser.denoiser(toy_model, SCHED, "velocity")


def _flow_euler(ctx, x, i, state):
    """A researcher's new sampler: the flow-matching Euler step x' = x + (t' - t) u, u = eps - x0."""
    d = ctx.denoise(x, i)
    return x + (ctx.levels.t[i + 1] - ctx.levels.t[i]) * (d.eps - d.x0), d.x0, state


def test_a_new_sampler_is_one_step_function():
    """A `Sampler` passed as `sampler` runs in the loop with everything else the loop gives (keys, x_T, trajectory,
    inpainting); here it equals the built-in Euler on rectified flow."""
    proc = processes.rectified_flow()
    rng, shape = jax.random.PRNGKey(3), (4, 4, 4, 2)
    mine = sampling.sample(toy_model, proc, rng, shape, sampler=Sampler(_flow_euler, num_steps=8),
                           prediction="velocity", trajectory_steps=3)
    euler = sampling.sample(toy_model, proc, rng, shape, sampler="euler", num_steps=8, prediction="velocity",
                            trajectory_steps=3)
    np.testing.assert_allclose(mine[0], euler[0], atol=2e-6)
    np.testing.assert_allclose(mine[1].x_t, euler[1].x_t, atol=2e-6)
    np.testing.assert_array_equal(mine[1].t, euler[1].t)


def test_defaults_come_from_the_table_for_every_entry():
    """The same sampler gives the same samples through every entry when nothing is passed: DDIM clips (as Ho et
    al.'s and diffusers' DDPM/DDIM do), the solvers do not."""
    rng, shape = jax.random.PRNGKey(4), (5, 4, 4, 2)
    assert sampling.SAMPLERS["ddim"].clip_denoised and sampling.SAMPLERS["ancestral"].clip_denoised
    assert not any(sampling.SAMPLERS[s].clip_denoised for s in solvers.SOLVERS)
    np.testing.assert_array_equal(sampling.sample(toy_model, SCHED, rng, shape, sampler="ddim"),
                                  sampling.ddim_sample(toy_model, SCHED, rng, shape))
    np.testing.assert_array_equal(sampling.sample(toy_model, SCHED, rng, shape, sampler="ancestral"),
                                  sampling.ancestral_sample(toy_model, SCHED, rng, shape))
    for name in ("dpm++2m", "ddim"):
        np.testing.assert_allclose(sampling.sample_sharded(toy_model, SCHED, rng, 5, shape[1:], sampler=name),
                                   sampling.sample(toy_model, SCHED, rng, shape, sampler=name), atol=1e-6)
    assert sampling.sampler_timesteps(SCHED, "ddim") == tuple(range(49, -1, -1))  # 50 leading steps of T = 50
    assert len(sampling.sampler_timesteps(SCHED, "heun")) == 20


def test_resampled_inpainting_and_inversion_work_on_a_process():
    """RePaint's resampling and DDIM inversion are steps of the loop, so they run on continuous processes too."""
    proc = processes.rectified_flow()
    shape = (3, 4, 4, 2)
    mask = jnp.ones((4, 4, 1)).at[:2].set(0.0)
    x = sampling.sample(toy_model, proc, jax.random.PRNGKey(5), shape, sampler="ddim", eta=1.0, num_steps=6,
                        prediction="velocity", known=(X0, mask), resample=3)
    np.testing.assert_allclose(np.asarray(x)[:, :2], np.asarray(X0)[:, :2], atol=1e-6)
    assert np.all(np.isfinite(x))
    errors = []
    for n in (10, 160):  # inversion then DDIM back: x0 again up to the discretization error, shrinking with N
        x_T = sampling.ddim_invert(toy_model, proc, X0, num_steps=n, prediction="velocity")
        back = sampling.sample(toy_model, proc, jax.random.PRNGKey(0), shape, sampler="ddim", num_steps=n,
                               prediction="velocity", x_T=x_T, clip_denoised=False)
        errors.append(float(jnp.max(jnp.abs(back - X0))))
    assert errors[1] < errors[0] / 4, errors  # measured: 0.226 and 0.028


def test_resampling_needs_known_pixels_and_a_one_step_sampler():
    known = (X0, jnp.ones((4, 4, 1)))
    with pytest.raises(ValueError, match="pass `known`"):
        sampling.sample(toy_model, SCHED, jax.random.PRNGKey(0), X0.shape, sampler="ddim", resample=2)
    with pytest.raises(ValueError, match="needs a one-step sampler: ancestral, ddim, euler, heun; got 'dpm\\+\\+2m'"):
        sampling.sample(toy_model, SCHED, jax.random.PRNGKey(0), X0.shape, sampler="dpm++2m", known=known, resample=2)
    with pytest.raises(ValueError, match="resample must be an integer >= 1"):
        sampling.sample(toy_model, SCHED, jax.random.PRNGKey(0), X0.shape, sampler="ddim", known=known, resample=0)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
