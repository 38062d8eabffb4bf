"""Distillation (issue 25): the consistency function's boundary condition and coefficients, the progressive target
as an identity against an independent float64 computation, a progressive student trained on a toy reproducing two
teacher DDIM steps, the consistency sampler in 1/2/4 steps, and the `distill` command end to end on a tiny teacher
(then `sample --steps` and `evaluate`), with its errors."""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddpm_jax import config_schema, configs, distillation, evaluate, processes, runs, sampling, schedules, train
from ddpm_jax.__main__ import main
from ddpm_jax.denoiser import denoiser
from ddpm_jax.metrics import FeatureNetwork
from ddpm_jax.objectives import Consistency, Progressive
from test_train import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = 40  # the toy schedules' steps


def _linear_schedule():
    return schedules.make_schedule(schedules.get_betas("linear", T))


# ---------------------------------------------------------------- the consistency function


def test_consistency_function_is_the_identity_at_sigma_min():
    rng = np.random.default_rng(0)
    y, x0 = (rng.normal(size=(3, 8, 8, 1)).astype(np.float32) * 5 for _ in range(2))
    for process, num_levels in ((_linear_schedule(), 6), (processes.edm(), 6), (processes.rectified_flow(), 6)):
        eps = distillation.sigma_min(process, num_levels)
        f = distillation.consistency_output(jnp.asarray(y), jnp.asarray(x0), jnp.float32(eps), eps,
                                            distillation.sigma_data(process))
        np.testing.assert_array_equal(np.asarray(f), y)  # bitwise: c_skip = 1, c_out = 0


def test_consistency_function_coefficients():
    """f = c_skip y + c_out F with Song et al.'s App. C coefficients and F = (D - c_skip^EDM y) / c_out^EDM, in
    float64 by hand."""
    rng = np.random.default_rng(1)
    y, x0 = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    sigma, eps, sd = np.array([0.01, 0.3, 2.0, 80.0])[:, None], 0.002, 0.5
    c_skip = sd**2 / ((sigma - eps) ** 2 + sd**2)
    c_out = sd * (sigma - eps) / np.sqrt(sd**2 + sigma**2)
    raw = (x0 - sd**2 / (sigma**2 + sd**2) * y) / (sigma * sd / np.sqrt(sigma**2 + sd**2))
    got = distillation.consistency_output(*(jnp.asarray(a, jnp.float32) for a in (y, x0, sigma)), eps, sd)
    np.testing.assert_allclose(np.asarray(got), c_skip * y + c_out * raw, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the progressive target


def _toy_teacher(process, prediction):
    """A fixed nonlinear teacher (jnp) and the same function in float64 numpy: output = tanh(c x + d t_scaled)."""
    c, d = 0.7, 0.3
    scale = 1.0 / T if not processes.is_process(process) else 1.0 / process.t_max

    def model_fn(x, t):
        return jnp.tanh(c * x + d * (t.astype(jnp.float32) * scale).reshape((-1,) + (1,) * (x.ndim - 1)))

    def reference(x, t):
        return np.tanh(c * x + d * t * scale)

    return model_fn, reference


def _alpha_sigma_64(process, t):
    """alpha, sigma of a level in float64: a Schedule's int t (-1: the clean end) or a process's float t."""
    if not processes.is_process(process):
        abar = np.cumprod(1.0 - schedules.get_betas("linear", T))
        a2 = 1.0 if t < 0 else abar[t]
        return np.sqrt(a2), np.sqrt(1.0 - a2)
    if isinstance(process, processes.EDM):
        return 1.0, t
    return 1.0 - t, t  # rectified flow


def _x0_64(process, prediction, out, x, t):
    alpha, sigma = _alpha_sigma_64(process, t)
    return {"eps": lambda: (x - sigma * out) / alpha, "x0": lambda: out, "velocity": lambda: x - t * out}[prediction]()


def _teacher_step_64(process, prediction, reference, x, level, i, solver):
    """The teacher's step from level[i] to level[i + 1] in float64: DDIM (eta 0), or Heun (EDM alg. 1: on a
    Schedule in y = x / alpha and sigma_ve, on a process in its time t with the velocity alpha' D + sigma' eps),
    an Euler (= DDIM) step onto the clean end."""
    (alpha, sigma), (a1, s1) = _alpha_sigma_64(process, level[i]), _alpha_sigma_64(process, level[i + 1])
    x0 = _x0_64(process, prediction, reference(x, level[i]), x, level[i])
    euler = a1 * x0 + s1 * (x - alpha * x0) / sigma
    if solver == "ddim" or s1 == 0:
        return euler
    x0_e = _x0_64(process, prediction, reference(euler, level[i + 1]), euler, level[i + 1])
    if not processes.is_process(process):  # Heun in y = x / alpha, slope (y - D) / sigma_ve
        y, y_e, ve, ve1 = x / alpha, euler / a1, sigma / alpha, s1 / a1
        return a1 * (y + 0.5 * ((y - x0) / ve + (y_e - x0_e) / ve1) * (ve1 - ve))
    d_alpha = 0.0 if isinstance(process, processes.EDM) else -1.0  # alpha'(t): EDM 1, rectified flow 1 - t
    velocity = lambda x, x0, a, s: d_alpha * x0 + (x - a * x0) / s  # noqa: E731  sigma'(t) = 1 for both
    return x + 0.5 * (level[i + 1] - level[i]) * (velocity(x, x0, alpha, sigma) + velocity(euler, x0_e, a1, s1))


@pytest.mark.parametrize("solver", ["ddim", "heun"])
@pytest.mark.parametrize("process, prediction", [(_linear_schedule(), "eps"), (processes.edm(), "x0"),
                                                 (processes.rectified_flow(), "velocity")],
                         ids=["ddpm-eps", "edm-x0", "flow-velocity"])
def test_progressive_target_makes_one_student_step_land_on_two_teacher_steps(process, prediction, solver):
    """Salimans & Ho, Alg. 2: with x~ the target, ONE DDIM step t -> t'' of a student predicting x~ lands on the
    teacher's two steps t -> t' -> t'' (DDIM, or Heun for a first round); the teacher's steps and the student's
    step are recomputed in float64 numpy from the levels and the teacher's function, independently of the
    implementation."""
    model_fn, reference = _toy_teacher(process, prediction)
    student_steps = 4
    times = distillation.progressive_times(process, 2 * student_steps)
    lv = distillation.levels(process, times)
    j = np.array([0, 2, 4, 6], np.int32)  # every student level, including the last step to the clean end
    z = np.random.default_rng(2).normal(size=(4, 6)).astype(np.float32) * np.asarray(lv.sigma)[j, None]
    denoise = lambda x, t, labels: denoiser(model_fn, process, prediction)(x, t)  # noqa: E731
    step = distillation.PROGRESSIVE_SOLVERS[solver]
    z1 = distillation.teacher_step(step, process, lv, denoise, jnp.asarray(z), jnp.asarray(j))
    z2 = distillation.teacher_step(step, process, lv, denoise, z1, jnp.asarray(j + 1))
    at = lambda a, idx: np.asarray(a)[idx][:, None]  # noqa: E731
    target = np.asarray(distillation.ddim_x0_target(z, z2, at(lv.alpha, j), at(lv.sigma, j), at(lv.alpha, j + 2),
                                                    at(lv.sigma, j + 2)), np.float64)
    level = list(times) + ([] if processes.is_process(process) else [-1])
    moved = 0.0
    for b, jb in enumerate(j):
        x = z[b].astype(np.float64)
        a0, s0 = _alpha_sigma_64(process, level[jb])
        for i in (jb, jb + 1):  # the teacher's two steps, float64
            x = _teacher_step_64(process, prediction, reference, x, level, i, solver)
        a2, s2 = _alpha_sigma_64(process, level[jb + 2])
        student = a2 * target[b] + s2 * (z[b] - a0 * target[b]) / s0  # one DDIM step from x0 = x~
        np.testing.assert_allclose(student, x, rtol=1e-5, atol=2e-5)
        ddim = z[b].astype(np.float64)
        for i in (jb, jb + 1):
            ddim = _teacher_step_64(process, prediction, reference, ddim, level, i, "ddim")
        moved = max(moved, np.abs(x - ddim).max())
    assert (moved > 1e-3) == (solver == "heun")  # Heun's steps are not DDIM's: the check tells them apart


def test_progressive_levels_are_nested():
    for process in (schedules.make_schedule(schedules.get_betas("linear", 1000)), processes.edm(),
                    processes.rectified_flow()):
        for n in (1, 2, 4, 64):
            half, full = distillation.progressive_times(process, n), distillation.progressive_times(process, 2 * n)
            visited = n if not processes.is_process(process) else n + 1
            assert len(half) == visited and tuple(full[::2]) == half
    assert distillation.progressive_times(schedules.make_schedule(schedules.get_betas("linear", 1000)), 4) == (
        999, 749, 499, 249)


class AffineModel(nn.Module):
    """A toy x0 model: x0 = a[t] x + b[t] (one slope and one offset per timestep), so the student family holds
    the composition of two teacher DDIM steps exactly."""

    num_timesteps: int = T
    dim: int = 4
    num_classes = None
    null_label = None

    @nn.compact
    def __call__(self, x, t, y=None, train=False):
        a = self.param("a", nn.initializers.uniform(0.5), (self.num_timesteps,))
        b = self.param("b", nn.initializers.normal(0.3), (self.num_timesteps, self.dim))
        return a[t][:, None] * x + b[t]


def test_a_progressive_student_reproduces_two_teacher_steps_after_training():
    sched, model = _linear_schedule(), AffineModel()
    x_data = jax.random.normal(jax.random.PRNGKey(0), (64, 4)) * 0.5
    teacher = model.init(jax.random.PRNGKey(1), x_data, jnp.zeros((64,), jnp.int32))
    objective = Progressive(sched, "x0", num_steps=2)
    optimizer = optax.adam(optax.cosine_decay_schedule(0.05, 600))

    @jax.jit
    def fit(params):
        def step(carry, key):
            params, opt_state = carry
            (loss, _), grads = objective.loss_and_grads(
                model, params, x_data, key, labels=None, rngs={}, first_index=0, global_batch=64, importance=None,
                frozen=dict(teacher=teacher), ema_params=None)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(2), jnp.arange(600))
        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), keys)
        return params, losses

    student, losses = fit(teacher)
    assert losses[-1] < 1e-3 * losses[0]
    times = list(distillation.progressive_times(sched, 4)) + [-1]
    z = np.random.default_rng(3).normal(size=(4,))
    for k in range(2):  # both student levels: t = times[2k], t'' = times[2k + 2]
        x, t0 = z.copy(), times[2 * k]
        for i in (2 * k, 2 * k + 1):
            alpha, sigma = _alpha_sigma_64(sched, times[i])
            a1, s1 = _alpha_sigma_64(sched, times[i + 1])
            pa, pb = (np.asarray(teacher["params"][n], np.float64)[times[i]] for n in "ab")
            x0 = pa * x + pb
            x = a1 * x0 + s1 * (x - alpha * x0) / sigma
        alpha, sigma = _alpha_sigma_64(sched, t0)
        a2, s2 = _alpha_sigma_64(sched, times[2 * k + 2])
        pa, pb = (np.asarray(student["params"][n], np.float64)[t0] for n in "ab")
        x0 = pa * z + pb
        np.testing.assert_allclose(a2 * x0 + s2 * (z - alpha * x0) / sigma, x, atol=1e-5)  # reached: ~1e-7


@pytest.mark.parametrize("process, prediction", [(_linear_schedule(), "eps"), (processes.edm(), "x0"),
                                                 (processes.rectified_flow(), "velocity")],
                         ids=["ddpm-eps", "edm-x0", "flow-velocity"])
@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_the_teachers_step_per_example_is_the_samplers_step(process, prediction, solver):
    """`teacher_step` moves each example from its own level as the sampler's step of the one loop does (the loop's
    trajectory after one step over the same two levels)."""
    model_fn, _ = _toy_teacher(process, prediction)
    times = distillation.consistency_times(process, 6)
    lv = distillation.levels(process, times)
    denoise = lambda x, t, labels: denoiser(model_fn, process, prediction)(x, t)  # noqa: E731
    x = np.random.default_rng(5).normal(size=(5, 3)).astype(np.float32)
    j = np.arange(5, dtype=np.int32) % 5  # levels 0 .. 4, each moved to the next (all visited)
    got = distillation.teacher_step(distillation.TEACHER_SOLVERS[solver], process, lv, denoise, jnp.asarray(x),
                                    jnp.asarray(j))
    for b in range(5):
        pair = (times[j[b]], times[j[b] + 1]) + ((0.0,) if processes.is_process(process) else ())
        _, trajectory = sampling.sample(model_fn, process, jax.random.PRNGKey(0), (1, 3), sampler=solver,
                                        timesteps=pair, prediction=prediction, x_T=x[b:b + 1], trajectory_steps=2)
        np.testing.assert_allclose(np.asarray(got[b]), np.asarray(trajectory.x_t[1, 0]), rtol=1e-5, atol=1e-5)


class TanhModel(nn.Module):
    """A toy network of any level t (int or float): tanh(w x + c log(1 + t))."""

    num_classes = None
    null_label = None

    @nn.compact
    def __call__(self, x, t, y=None, train=False):
        w = self.param("w", nn.initializers.constant(0.7), ())
        c = self.param("c", nn.initializers.constant(0.3), ())
        return jnp.tanh(w * x + c * jnp.log1p(t.astype(jnp.float32)).reshape((-1,) + (1,) * (x.ndim - 1)))


@pytest.mark.parametrize("process, prediction", [(_linear_schedule(), "eps"), (processes.edm(), "x0"),
                                                 (processes.rectified_flow(), "velocity")],
                         ids=["ddpm-eps", "edm-x0", "flow-velocity"])
def test_both_objectives_train_on_every_teacher_process(process, prediction):
    """One loss and gradient of each objective on each process the distillation takes: finite, and for a student
    equal to its teacher a positive loss (one student step is not two teacher steps; f at a level is not its
    target one teacher step on) with gradients on both parameters."""
    model, x0 = TanhModel(), jax.random.normal(jax.random.PRNGKey(0), (8, 3))
    params = model.init(jax.random.PRNGKey(1), x0, jnp.zeros((8,), jnp.float32))
    for objective in (Progressive(process, prediction, 2), Consistency(process, prediction, 5, "heun")):
        (loss, aux), grads = objective.loss_and_grads(
            model, params, x0, jax.random.PRNGKey(2), labels=None, rngs={}, first_index=0, global_batch=8,
            importance=None, frozen=dict(teacher=params), ema_params=params)
        assert np.isfinite(loss) and loss > 0 and aux["loss"].shape == (8,), objective.name
        assert all(np.isfinite(g) and g != 0 for g in jax.tree_util.tree_leaves(grads)), objective.name


class EpsOrV(nn.Module):
    """TanhModel's output read as eps on the linear schedule of T steps, given as that eps (as_v = 0) or as the v of
    the same x0 (as_v = 1): v = alpha eps - sigma x0 = (eps - sigma x) / alpha."""

    num_classes = None
    null_label = None

    @nn.compact
    def __call__(self, x, t, y=None, train=False):
        eps = TanhModel()(x, t)
        as_v = self.param("as_v", nn.initializers.zeros, ())
        abar = jnp.asarray(np.cumprod(1.0 - schedules.get_betas("linear", T)), jnp.float32)[t][:, None]
        return eps + jax.lax.stop_gradient(as_v) * ((eps - jnp.sqrt(1.0 - abar) * x) / jnp.sqrt(abar) - eps)


def test_a_v_student_of_an_eps_teacher_reads_each_in_its_own_parametrization():
    """Salimans & Ho sec. 4: a v student of an eps teacher. The same denoiser written as v (student) and as eps
    (teacher, teacher_prediction "eps") gives the loss and gradients of an eps student of that teacher: both
    objectives see only x0 predictions. Reading the teacher as v instead (no teacher_prediction) changes them."""
    sched, model = _linear_schedule(), EpsOrV()
    x0 = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
    as_eps = model.init(jax.random.PRNGKey(1), x0, jnp.zeros((8,), jnp.int32))
    as_v = jax.tree_util.tree_map(lambda a: a, as_eps)
    as_v["params"]["as_v"] = jnp.float32(1.0)
    for eps_student, v_student, misread in (
            (Progressive(sched, "eps", 2), Progressive(sched, "v", 2, teacher_prediction="eps"),
             Progressive(sched, "v", 2)),
            (Consistency(sched, "eps", 5), Consistency(sched, "v", 5, teacher_prediction="eps"),
             Consistency(sched, "v", 5))):
        def run(objective, student):
            return objective.loss_and_grads(model, student, x0, jax.random.PRNGKey(2), labels=None, rngs={},
                                            first_index=0, global_batch=8, importance=None,
                                            frozen=dict(teacher=as_eps), ema_params=student)
        (loss, _), grads = run(eps_student, as_eps)
        (loss_v, _), grads_v = run(v_student, as_v)
        np.testing.assert_allclose(loss_v, loss, rtol=1e-4)
        for g, g_v in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_v)):
            np.testing.assert_allclose(g_v, g, rtol=1e-3, atol=1e-7)
        (loss_misread, _), _ = run(misread, as_v)
        assert abs(float(loss_misread) - float(loss)) > 0.1 * float(loss), eps_student.name


# ---------------------------------------------------------------- the consistency sampler


@pytest.mark.parametrize("num_steps", [1, 2, 4])
def test_the_consistency_sampler_takes_1_2_and_4_steps(num_steps):
    """On EDM with the x0 model D = 0.5 x: one step is f(x_T, sigma_max) by hand; more steps are finite and visit
    num_steps levels of the discretization, the first sigma_max."""
    process, num_levels = processes.edm(), 8
    eps, sd = distillation.sigma_min(process, num_levels), 0.5
    times = distillation.consistency_sampling_times(distillation.consistency_times(process, num_levels), num_steps,
                                                    True)
    assert len(times) == num_steps + 1 and times[0] == pytest.approx(80.0) and times[-1] == 0.0
    x_T = np.random.default_rng(4).normal(size=(3, 4, 4, 1)).astype(np.float32) * 80.0
    out = sampling.sample(lambda x, t: 0.5 * x, process, jax.random.PRNGKey(0), x_T.shape,
                          sampler=distillation.consistency_sampler(eps, sd), timesteps=times, prediction="x0",
                          x_T=x_T)
    assert out.shape == x_T.shape and np.all(np.isfinite(out))
    if num_steps == 1:
        s, y = 80.0, x_T.astype(np.float64)
        c_skip, c_out = sd**2 / ((s - eps) ** 2 + sd**2), sd * (s - eps) / np.sqrt(sd**2 + s**2)
        raw = (0.5 * y - sd**2 / (s**2 + sd**2) * y) / (s * sd / np.sqrt(s**2 + sd**2))
        np.testing.assert_allclose(out, c_skip * y + c_out * raw, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="samples in 1 to 8 steps"):
        distillation.consistency_sampling_times(distillation.consistency_times(process, num_levels), 9, True)


# ---------------------------------------------------------------- the command, end to end

SMALL = ["--config.model.ch=16", "--config.model.ch_mult=(1, 2)", "--config.model.attn_resolutions=()"]
STUDENT = ["--config.train.num_steps=2", "--config.train.checkpoint_every=2", "--config.train.batch_size=16",
           "--config.train.log_every=1"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny unconditional digits DDPM (T = 40, width 16, two resolutions), trained 4 steps."""
    workdir = str(tmp_path_factory.mktemp("teacher"))
    train.train_and_evaluate(tiny_config(*SMALL), workdir, progress=False)
    return workdir


def _sample(workdir, steps, out, capsys):
    rc = main(["sample", "--workdir", workdir, "--steps", str(steps), "--num", "4", "--out", str(out)])
    return rc, capsys.readouterr().err


def test_progressive_distillation_end_to_end(teacher, tmp_path, capsys):
    chain = str(tmp_path / "pd")
    argv = ["distill", "--teacher", teacher, "--method", "progressive", "--workdir", chain,
            "--config.distill.teacher_steps=4", "--config.distill.solver=heun", *STUDENT]
    assert main(argv) == 0
    assert json.load(open(os.path.join(chain, "distill.json")))["rounds"] == {"2": "steps_2", "1": "steps_1"}
    first = runs.load_config(os.path.join(chain, "steps_2"))
    assert first.distill.teacher == os.path.abspath(teacher) and first.distill.timesteps == (39, 19)
    assert first.distill.teacher_prediction == "eps" == first.diffusion.prediction
    second = runs.load_config(os.path.join(chain, "steps_1"))
    assert first.distill.solver == "heun" and second.distill.solver == "ddim"  # the later teachers are students
    assert second.distill.teacher == os.path.join(os.path.abspath(chain), "steps_2")
    assert second.distill.timesteps == (39,)
    for n in (2, 1):
        rc, err = _sample(chain, n, tmp_path / f"s{n}.png", capsys)
        assert rc == 0, err
        images = np.load(tmp_path / f"s{n}.npz")["images"]
        assert images.shape == (4, 8, 8, 1) and np.all(np.isfinite(images))
    rc, err = _sample(chain, 3, tmp_path / "s3.png", capsys)
    assert rc == 2 and "holds students of 2, 1 steps" in err
    rc, err = _sample(os.path.join(chain, "steps_2"), 4, tmp_path / "s4.png", capsys)
    assert rc == 2 and "this student was distilled for 2 steps" in err
    assert main(["sample", "--workdir", chain, "--steps", "2", "--sampler", "dpm++2m", "--out",
                 str(tmp_path / "x.png")]) == 2
    assert "samples with 'ddim' over the levels it was distilled for" in capsys.readouterr().err
    assert runs.load_run(chain).config.distill.steps == 1  # the chain's fewest-step student
    pixels = FeatureNetwork(name="pixels", fn=lambda images: dict(features=images.reshape(len(images), -1)[:, :6],
                                                                 logits=images.reshape(len(images), -1)[:, :4]))
    report = evaluate.evaluate(chain, num_steps=1, num_samples=16, bpd_examples=0, feature_net=pixels,
                               progress=False)
    assert report["sampler"] == dict(name="ddim", clip_denoised=True, num_steps=1, eta=0.0)
    assert report["workdir"].endswith("steps_1") and np.isfinite(report["metrics"]["fid"])
    with pytest.raises(ValueError, match="a progressive-distilled student defines no bits/dim"):
        evaluate.evaluate(chain, num_steps=1, num_samples=0, bpd_examples=4, progress=False)
    np.savez(tmp_path / "in.npz", images=np.zeros((1, 8, 8, 1), np.float32))
    assert main(["img2img", "--workdir", chain, "--input", str(tmp_path / "in.npz"), "--out",
                 str(tmp_path / "i2i.png")]) == 2
    assert "a distilled student samples only from pure noise" in capsys.readouterr().err
    assert main(argv) == 0  # resumed: both rounds are done
    assert "nothing left to train" in capsys.readouterr().out


def test_consistency_distillation_end_to_end(teacher, tmp_path, capsys):
    workdir = str(tmp_path / "cd")
    assert main(["distill", "--teacher", teacher, "--method", "consistency", "--workdir", workdir,
                 "--config.distill.num_levels=5", *STUDENT]) == 0
    config = runs.load_config(workdir)
    assert config.sample.sampler == "consistency" and config.train.ema_decay == 0.95
    for n in (1, 2, 4):
        rc, err = _sample(workdir, n, tmp_path / f"c{n}.png", capsys)
        assert rc == 0, err
        assert np.all(np.isfinite(np.load(tmp_path / f"c{n}.npz")["images"]))
    rc, err = _sample(workdir, 6, tmp_path / "c6.png", capsys)
    assert rc == 2 and "samples in 1 to 5 steps" in err


def test_bad_teachers_and_settings_are_refused(teacher, tmp_path, capsys):
    def refused(*argv):
        assert main(["distill", "--workdir", str(tmp_path / "out"), *argv]) == 2
        return capsys.readouterr().err

    assert "config.json not found" in refused("--teacher", str(tmp_path / "nowhere"), "--method", "progressive")
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(os.path.join(teacher, "config.json"), untrained / "config.json")
    assert "no checkpoint in" in refused("--teacher", str(untrained), "--method", "consistency")
    assert "Unknown distillation method (--method) 'rectified'" in refused("--teacher", teacher, "--method",
                                                                            "rectified")
    assert "teacher_steps must be a power of 2" in refused("--teacher", teacher, "--method", "progressive",
                                                           "--config.distill.teacher_steps=6")
    assert "Unknown teacher ODE solver" in refused("--teacher", teacher, "--method", "consistency",
                                                   "--config.distill.solver='dpm++2m'")
    assert "Unknown progressive teacher solver (config.distill.solver, the first round's) 'euler'" in refused(
        "--teacher", teacher, "--method", "progressive", "--config.distill.solver=euler")
    assert "Unknown teacher prediction (config.distill.teacher_prediction) 'velocity'" in refused(
        "--teacher", teacher, "--method", "progressive", "--config.distill.teacher_prediction=velocity")
    vdm = configs.load_config(os.path.join(ROOT, "experiments", "digits_vdm.py"))
    with pytest.raises(ValueError, match="a VDM teacher cannot be distilled"):
        config_schema.check_distillable(vdm)
