"""`sampling.sample` (every sampler behind one entry), its sharded and guided paths, img2img and inpainting.

Models are Bayes-optimal denoisers of Gaussian data, so expectations are closed forms.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax import editing, functional, sampling, schedules

T = 200
SCHED = schedules.make_schedule(schedules.get_betas("linear", T))
ABAR = np.cumprod(1 - schedules.get_betas("linear", T))


def _eps(params, x, t):
    """Exact eps for data N(0, S) with S = s^2 [[1, rho], [rho, 1]] on the last axis (pairs of pixels)."""
    abar = SCHED.alphas_cumprod[t].reshape((-1,) + (1,) * (x.ndim - 1))
    s2, rho = params["s"] ** 2, params["rho"]
    a, b = abar * s2 + 1 - abar, abar * s2 * rho  # Cov(x_t) = [[a, b], [b, a]]
    det = a * a - b * b
    x1, x2 = x[..., :1], x[..., 1:]
    inv = jnp.concatenate([(a * x1 - b * x2) / det, (a * x2 - b * x1) / det], -1)
    return jnp.sqrt(1 - abar) * inv


def model(s=0.5, rho=0.0):
    return functional.bind(_eps, {"s": jnp.float32(s), "rho": jnp.float32(rho)})


def test_every_sampler_through_the_entry():
    shape = (3, 2, 2, 2)
    rng = jax.random.PRNGKey(0)
    for name in sampling.SAMPLERS:
        steps = None if name == "ancestral" else 10
        x = sampling.sample(model(), SCHED, rng, shape, sampler=name, num_steps=steps)
        assert x.shape == shape and np.all(np.isfinite(x)), name
    # The entry reproduces the named samplers.
    np.testing.assert_array_equal(
        sampling.sample(model(), SCHED, rng, shape, sampler="ddim", num_steps=10, eta=0.3, clip_denoised=True),
        sampling.ddim_sample(model(), SCHED, rng, shape, num_steps=10, eta=0.3))
    np.testing.assert_array_equal(
        sampling.sample(model(), SCHED, rng, shape, sampler="ancestral", clip_denoised=True),
        sampling.ancestral_sample(model(), SCHED, rng, shape))
    # The DDIM paper's spacing and "trailing" are the same timesteps under both names.
    for n in (1, 7, 10, 50):
        np.testing.assert_array_equal(schedules.spaced_timesteps(SCHED, n, "leading"),
                                      sampling.ddim_timesteps(T, n, "uniform")[::-1])
        np.testing.assert_array_equal(schedules.spaced_timesteps(SCHED, n, "trailing"),
                                      sampling.ddim_timesteps(T, n, "trailing")[::-1])


def test_sharded_solvers_same_on_one_or_eight_devices_with_guidance():
    def conditional(params, x, t, y):  # class 1 shifts the data mean: a visible effect of guidance
        return _eps(params, x - 0.3 * y[:, None, None, None], t)

    fn = functional.bind(conditional, {"s": jnp.float32(0.5), "rho": jnp.float32(0.0)})
    labels = np.array([0, 1, 1, 0, 1], np.int32)
    for name in ("dpm++2m-sde", "unipc", "heun"):
        kwargs = dict(sampler=name, num_steps=6, labels=labels, guidance_scale=2.0, null_label=0)
        one = sampling.sample_sharded(fn, SCHED, jax.random.PRNGKey(1), 5, (2, 2, 2),
                                      devices=jax.local_devices()[:1], **kwargs)
        eight = sampling.sample_sharded(fn, SCHED, jax.random.PRNGKey(1), 5, (2, 2, 2), **kwargs)
        np.testing.assert_allclose(one, eight, rtol=1e-5, atol=1e-5)
        plain = sampling.sample_sharded(fn, SCHED, jax.random.PRNGKey(1), 5, (2, 2, 2), sampler=name, num_steps=6,
                                        labels=labels)
        assert not np.allclose(plain, eight)  # guidance changed the conditional samples


def test_entry_trajectories_and_bad_input():
    x, traj = sampling.sample(model(), SCHED, jax.random.PRNGKey(0), (2, 2, 2, 2), sampler="unipc", num_steps=8,
                              trajectory_steps=8)
    np.testing.assert_array_equal(traj.t, schedules.spaced_timesteps(SCHED, 8, "linspace"))
    for kwargs, match in [
        (dict(sampler="dpm++9m"), "accepted: ancestral, ddim, euler"),
        (dict(sampler="ddim", spacing="uniform"), "accepted: linspace, leading, trailing, karras"),
        (dict(sampler="dpm++2m", num_steps=0), r"num_steps"),
        (dict(sampler="dpm++2m", num_steps=T + 1), r"num_steps"),
        (dict(sampler="euler", eta=0.5), "eta"),
        (dict(sampler="ancestral", num_steps=10), "all T"),
        (dict(sampler="ddim", timesteps=(5, 9)), "decreasing"),
    ]:
        with pytest.raises(ValueError, match=match):
            sampling.sample(model(), SCHED, jax.random.PRNGKey(0), (1, 2), **kwargs)


def test_img2img():
    rng = jax.random.PRNGKey(3)
    images = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, (4, 2, 2, 2)), jnp.float32)
    full = sampling.sampler_timesteps(SCHED, "ddim", 20)
    for strength, kept in [(1.0, 20), (0.5, 10), (0.26, 5), (0.01, 1)]:
        out, traj = editing.img2img(model(), SCHED, rng, images, strength=strength, sampler="ddim", num_steps=20,
                                    trajectory_steps=20)
        np.testing.assert_array_equal(traj.t, full[20 - kept:])  # the last int(N * strength) levels
    # Strength 1 is sampling from the input noised to the first level, with the noise where x_T would be.
    noised = sampling.sample(model(), SCHED, rng, images.shape, sampler="ddim", num_steps=20, trajectory_steps=1)[1]
    start = editing.img2img(model(), SCHED, rng, images, strength=1.0, sampler="ddim", num_steps=20,
                            trajectory_steps=1)[1].x_t[0]
    abar = ABAR[full[0]]
    np.testing.assert_allclose(start, np.sqrt(abar) * images + np.sqrt(1 - abar) * noised.x_t[0], atol=1e-5)
    # One step at the smallest level barely changes an image the data distribution finds likely.
    near = editing.img2img(model(), SCHED, rng, images, strength=0.01, sampler="ddim", num_steps=20)
    assert float(jnp.max(jnp.abs(near - images))) < 0.15
    for strength in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
            editing.img2img(model(), SCHED, rng, images, strength=strength)


def test_inpaint_keeps_known_pixels_and_follows_the_conditional():
    """x = (x1, x2) ~ N(0, s^2 [[1, rho], [rho, 1]]); keep x1 = c, generate x2: E[x2 | x1 = c] = rho c = 0.54 and
    sd s sqrt(1 - rho^2) = 0.218. Replacement alone is known to miss it (Lugmayr et al. 2022: measured here, mean
    0.35, sd 0.26); RePaint's resampling brings the mean close (0.515 with U = 10), its sd stays low (0.166)."""
    s, rho, c, n = 0.5, 0.9, 0.6, 2000
    fn = model(s, rho)
    images = jnp.tile(jnp.array([c, 0.0], jnp.float32), (n, 1))
    mask = jnp.array([0.0, 1.0])
    for name in ("ddim", "dpm++2m", "euler", "ancestral"):
        out = editing.inpaint(fn, SCHED, jax.random.PRNGKey(4), images[:8], mask, sampler=name,
                              num_steps=None if name == "ancestral" else 10)
        np.testing.assert_array_equal(out[:, 0], np.float32(c))  # known pixels back exactly
    kwargs = dict(sampler="ddim", num_steps=50, eta=1.0)
    replaced = editing.inpaint(fn, SCHED, jax.random.PRNGKey(5), images, mask, **kwargs)
    out = editing.inpaint(fn, SCHED, jax.random.PRNGKey(5), images, mask, resample=10, **kwargs)
    np.testing.assert_array_equal(out[:, 0], np.float32(c))
    sd = s * np.sqrt(1 - rho**2)
    assert abs(float(out[:, 1].mean()) - rho * c) < 0.04 < 0.15 < abs(float(replaced[:, 1].mean()) - rho * c)
    assert 0.6 * sd < float(out[:, 1].std()) < 1.1 * sd
    with pytest.raises(ValueError, match="does not broadcast"):
        editing.inpaint(fn, SCHED, jax.random.PRNGKey(0), images[:2], jnp.ones((3,)))
    with pytest.raises(ValueError, match="one-step"):
        editing.inpaint(fn, SCHED, jax.random.PRNGKey(0), images[:2], mask, sampler="dpm++2m", resample=2)
    with pytest.raises(ValueError, match=r"mask values must be in \[0, 1\]"):
        editing.inpaint(fn, SCHED, jax.random.PRNGKey(0), images[:2], mask * 2)
