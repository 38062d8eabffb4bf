"""Objectives as plug-ins: flow matching trained from a config like any run (resumed exactly, sampled through the
CLI by every sampler but "ancestral", refused where it defines nothing), and the objective a config builds."""

import os

import jax
import numpy as np
import pytest

from ddpm_jax import config_schema, configs, evaluate, objectives, processes, runs, train
from ddpm_jax.__main__ import main
from ddpm_jax.schedules import Schedule
from test_train import TINY, _leaves_equal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOW = os.path.join(ROOT, "experiments", "digits_flow.py")
EDM = os.path.join(ROOT, "experiments", "digits_edm.py")


def flow_config(*overrides):
    return configs.load_config(FLOW, TINY + ["--config.model.num_classes=None", "--config.train.label_dropout=0.0",
                                             *overrides])


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("flow"))
    return workdir, train.train_and_evaluate(flow_config(), workdir, progress=False)


def test_a_config_builds_its_objective():
    ddpm = configs.create_objective(configs.load_config(os.path.join(ROOT, "experiments", "digits.py"), TINY))
    assert isinstance(ddpm, objectives.Denoising) and isinstance(ddpm.process, Schedule)
    flow = configs.create_objective(flow_config())
    assert isinstance(flow.process, processes.RectifiedFlow) and flow.loss_options == {"prediction": "velocity"}
    assert isinstance(configs.create_schedule(flow_config()), processes.RectifiedFlow)
    vdm = configs.create_objective(configs.load_config(os.path.join(ROOT, "experiments", "digits_vdm.py")))
    assert isinstance(vdm, objectives.VDM)


def test_flow_matching_trains_and_resumes_exactly(flow_run, tmp_path):
    workdir, full = flow_run
    assert full["step"] == 4 and np.isfinite(full["metrics"]["loss"])
    crashed = train.train_and_evaluate(flow_config(), str(tmp_path), stop_after=3, progress=False)
    assert crashed["step"] == 3  # the checkpoint of step 2 is the newest
    resumed = train.train_and_evaluate(flow_config(), str(tmp_path), progress=False)
    assert resumed["steps_run"] == 2
    for field in ("params", "ema_params", "opt_state", "step", "rng"):
        assert _leaves_equal(getattr(resumed["state"], field), getattr(full["state"], field)), field


def test_the_model_sees_t_scaled_to_the_timestep_range(flow_run):
    """The U-Net's embedding was made for timesteps 0..T-1: flow matching's t in [0, 1] is fed as T t."""
    config = flow_config()
    model = configs.create_model(config)
    params = runs.load_run(flow_run[0]).params
    x, t = np.zeros((2, 8, 8, 1), np.float32), np.array([0.25, 1.0], np.float32)
    np.testing.assert_array_equal(model.apply(params, x, t), model.net.apply({"params": params["params"]["net"]}, x,
                                                                              t * config.diffusion.num_timesteps))


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpm++2m", "ddim"])
def test_every_sampler_but_ancestral_samples_a_flow_run(flow_run, tmp_path, sampler):
    out = tmp_path / "grid.png"
    assert main(["sample", "--workdir", flow_run[0], "--num", "4", "--sampler", sampler, "--steps", "3",
                 "--out", str(out)]) == 0
    images = np.load(tmp_path / "grid.npz")["images"]
    assert images.shape == (4, 8, 8, 1) and np.all(np.isfinite(images)) and np.abs(images).max() <= 1.0


def test_euler_on_a_flow_run_is_the_flow_matching_euler_step(flow_run):
    """x_{t'} = x_t + (t' - t) v(x_t, t) from x_1 = eps over t = 1, 2/3, 1/3, 0, computed by hand."""
    run = runs.load_run(flow_run[0])
    rng = jax.random.PRNGKey(3)
    x_T = np.asarray(jax.random.normal(rng, (2, 8, 8, 1)))
    from ddpm_jax import sampling

    got = sampling.sample(run.model_fn, run.sched, rng, (2, 8, 8, 1), sampler="euler", num_steps=3,
                          prediction="velocity", x_T=x_T)
    x, ts = x_T.astype(np.float64), [1.0, 2 / 3, 1 / 3, 0.0]
    for t, t_next in zip(ts[:-1], ts[1:]):
        v = np.asarray(run.model_fn(x.astype(np.float32), np.full((2,), t, np.float32)), np.float64)
        x = x + (t_next - t) * v
    np.testing.assert_allclose(got, x, atol=2e-5)


def test_what_flow_matching_does_not_define_is_refused(flow_run, tmp_path):
    with pytest.raises(ValueError, match="sampler 'ancestral' .* flow samples a continuous process"):
        config_schema.validate_config(flow_config("--config.sample.sampler='ancestral'"))
    with pytest.raises(ValueError, match=r"prediction of flow matching .*'eps'; accepted: velocity, x0, v"):
        config_schema.validate_config(flow_config("--config.diffusion.prediction='eps'"))
    with pytest.raises(ValueError, match="flow matching regresses .* loss_type 'mse'"):
        config_schema.validate_config(flow_config("--config.diffusion.loss_type='hybrid'"))
    with pytest.raises(ValueError, match="objective 'flow' defines no bits/dim"):
        evaluate.evaluate(flow_run[0], num_samples=0, bpd_examples=4)


def edm_config(*overrides):
    return configs.load_config(EDM, TINY + ["--config.model.num_classes=None", "--config.train.label_dropout=0.0",
                                            *overrides])


def test_edm_trains_and_samples_with_its_preconditioned_denoiser(tmp_path):
    config = edm_config()
    objective = configs.create_objective(config)
    assert isinstance(objective.process, processes.EDM) and objective.loss_options == dict(prediction="x0",
                                                                                           weighting="edm")
    workdir = str(tmp_path / "edm")
    result = train.train_and_evaluate(config, workdir, progress=False)
    assert result["step"] == 4 and np.isfinite(result["metrics"]["loss"])
    # D(x, sigma) = c_skip x + c_out F(c_in x, T c_noise) with table 1's coefficients (numpy float64 here).
    run = runs.load_run(workdir)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
    sigma = np.array([0.01, 5.0], np.float32)
    raw = np.asarray(run.model.net.apply({"params": run.params["params"]["net"]}, x / np.sqrt(sigma**2 + 0.25)[
        :, None, None, None], config.diffusion.num_timesteps * np.log(sigma) / 4), np.float64)
    s = sigma.astype(np.float64)[:, None, None, None]
    expected = 0.25 / (s**2 + 0.25) * x + s * 0.5 / np.sqrt(s**2 + 0.25) * raw
    np.testing.assert_allclose(run.model_fn(x, sigma), expected, rtol=1e-4, atol=1e-5)
    assert main(["sample", "--workdir", workdir, "--num", "4", "--steps", "3", "--out", str(tmp_path / "g.png")]) == 0
    images = np.load(tmp_path / "g.npz")["images"]
    assert images.shape == (4, 8, 8, 1) and np.all(np.isfinite(images))
    with pytest.raises(ValueError, match="EDM trains its preconditioned denoiser, an x0 model"):
        config_schema.validate_config(edm_config("--config.diffusion.prediction='eps'"))
