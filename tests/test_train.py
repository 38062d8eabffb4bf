"""Training end to end on tiny configs: one step through train_and_evaluate on mock tfds data, device-count
invariance, exact resume after a crash and after SIGTERM, the NaN guard and the incompatible-config error."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from conftest import mock_tfds_array_record
from ddpm_jax import checkpoint, configs, data, runs, train

TINY = [
    "--config.model.ch=32", "--config.model.ch_mult=(1,)", "--config.model.num_res_blocks=1",
    "--config.model.attn_resolutions=()", "--config.diffusion.num_timesteps=40",
    "--config.train.batch_size=16", "--config.train.warmup_steps=2", "--config.train.sample_every=0",
    "--config.train.log_every=1", "--config.sample.num_steps=5", "--config.train.num_steps=4",
    "--config.train.checkpoint_every=2",
    # Every due checkpoint is written (the default "skip" drops one due while the previous write is in flight,
    # which depends on the machine's load): resume tests know which step they resume from.
    "--config.train.checkpoint_if_busy=wait",
    # The digits recipe is class-conditional; these tests exercise the unconditional machinery (the conditional
    # one has its own test below).
    "--config.model.num_classes=None", "--config.train.label_dropout=0.0",
]


def tiny_config(*overrides):
    return configs.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", "digits.py"),
                               TINY + list(overrides))


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


class Interrupting:
    """Wraps the pipeline: calls `action(n)` before the n-th batch (1-based) and returns what it gives, if any."""

    def __init__(self, pipeline, action):
        self.pipeline, self.action, self.n = pipeline, action, 0

    def __next__(self):
        self.n += 1
        batch = next(self.pipeline)
        replaced = self.action(self.n, batch)
        return batch if replaced is None else replaced

    def __getattr__(self, name):
        return getattr(self.pipeline, name)


def interrupt(monkeypatch, action):
    real = data.make_iterator
    monkeypatch.setattr(data, "make_iterator", lambda *a, **k: Interrupting(real(*a, **k), action))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """4 uninterrupted steps on 8 devices, checkpoints every 2."""
    config = tiny_config()
    workdir = str(tmp_path_factory.mktemp("reference"))
    return config, train.train_and_evaluate(config, workdir, progress=False), workdir


def test_one_step_on_mock_tfds_mnist(tmp_path):
    config = tiny_config("--config.data.source=mnist", "--config.model.ch_mult=(1, 1)",
                         "--config.model.attn_resolutions=(14,)", "--config.train.num_steps=1",
                         "--config.train.checkpoint_every=1", "--config.train.sample_every=1",
                         "--config.sample.num_images=8")
    with mock_tfds_array_record(num_examples=32):  # read as array_record: no TensorFlow needed
        result = train.train_and_evaluate(config, str(tmp_path), progress=False)
    assert result["step"] == 1 and np.isfinite(result["metrics"]["loss"])
    assert os.path.exists(tmp_path / "samples" / "step_0000001.png")
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert lines[-1]["step"] == 1 and "loss" in lines[-1] and "images_per_sec" in lines[-1]
    assert os.listdir(tmp_path / "tensorboard")
    params, step = checkpoint.restore_params(str(tmp_path))
    assert step == 1 and params["params"]["conv_in"]["kernel"].shape == (3, 3, 1, 32)


def test_same_global_batch_on_one_and_eight_devices(reference_run, tmp_path):
    config, ref, _ = reference_run
    assert jax.local_device_count() == 8
    one = train.train_and_evaluate(config, str(tmp_path), devices=jax.local_devices()[:1], progress=False)
    assert one["metrics"]["loss"] == pytest.approx(ref["metrics"]["loss"], rel=1e-4)
    # Params agree to float noise: Adam moves each weight by up to lr = 1e-3 per step, so other randomness or
    # a wrong gradient average would differ by ~1e-3; reduction order in the gradient sum gives ~1e-6.
    for a, b in zip(jax.tree_util.tree_leaves(one["state"].params), jax.tree_util.tree_leaves(ref["state"].params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-5)


def test_exact_resume_after_a_crash(reference_run, tmp_path):
    config, ref, _ = reference_run
    # Crash after 3 steps (the checkpoint of step 2 is the last one), then rerun to 4.
    first = train.train_and_evaluate(config, str(tmp_path), stop_after=3, progress=False)
    assert first["step"] == 3
    assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 2
    second = train.train_and_evaluate(config, str(tmp_path), progress=False)
    assert second["steps_run"] == 2  # resumed at 2
    for field in ("params", "ema_params", "opt_state", "step", "rng"):
        assert _leaves_equal(getattr(second["state"], field), getattr(ref["state"], field)), field


def test_exact_resume_after_sigterm(reference_run, tmp_path, monkeypatch):
    config, ref, _ = reference_run
    # SIGTERM arrives while the 2nd batch is fetched: step 2 completes, is checkpointed, and the run stops.
    interrupt(monkeypatch, lambda n, batch: os.kill(os.getpid(), signal.SIGTERM) if n == 2 else None)
    with pytest.raises(train.Preempted, match="step 2"):
        train.train_and_evaluate(config, str(tmp_path), progress=False)
    monkeypatch.undo()
    assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 2
    resumed = train.train_and_evaluate(config, str(tmp_path), progress=False)
    assert _leaves_equal(resumed["state"].params, ref["state"].params)
    assert _leaves_equal(resumed["state"].ema_params, ref["state"].ema_params)


def test_nan_guard_keeps_the_last_good_checkpoint(reference_run, tmp_path, monkeypatch):
    config, ref, _ = reference_run
    first = train.train_and_evaluate(config, str(tmp_path), stop_after=2, progress=False)
    good = checkpoint.restore_params(str(tmp_path), ema=False)[0]
    # The 3rd batch is poisoned: the loss of step 3 is NaN.
    interrupt(monkeypatch, lambda n, batch: dict(batch, image=batch["image"] * np.nan) if n == 1 else None)
    with pytest.raises(FloatingPointError, match="non-finite training metrics at step 3"):
        train.train_and_evaluate(config, str(tmp_path), progress=False)
    params, step = checkpoint.restore_params(str(tmp_path), ema=False)
    assert step == 2 and first["step"] == 2
    assert _leaves_equal(params, good)


def test_incompatible_config_is_refused(reference_run):
    _, _, workdir = reference_run
    with pytest.raises(ValueError, match=r"model.ch: saved 32, now 64"):
        train.train_and_evaluate(tiny_config("--config.model.ch=64"), workdir, progress=False)
    with pytest.raises(ValueError, match="does not fit this config's train state"):
        train.train_and_evaluate(tiny_config("--config.train.grad_clip=0.0"), workdir, progress=False)
    # The same model with other logging is fine: it resumes (and has nothing left to do).
    same = tiny_config("--config.train.log_every=2")
    assert train.train_and_evaluate(same, workdir, progress=False)["steps_run"] == 0


def test_config_overrides():
    config = tiny_config("--config.train.learning_rate=3e-4", "--config.model.ch_mult=[1, 2]")
    assert config.train.learning_rate == 3e-4 and config.model.ch_mult == (1, 2)
    with pytest.raises(ValueError, match="unknown config field 'train.lr'"):
        tiny_config("--config.train.lr=1")
    with pytest.raises(ValueError, match="train.batch_size"):
        tiny_config("--config.train.batch_size=big")


def test_sample_command(reference_run, tmp_path, capsys):
    from ddpm_jax.__main__ import main

    _, _, workdir = reference_run
    out = tmp_path / "grid.png"
    assert main(["sample", "--workdir", workdir, "--num", "5", "--steps", "5", "--out", str(out)]) == 0
    images = np.load(tmp_path / "grid.npz")["images"]
    assert out.exists() and images.shape == (5, 8, 8, 1) and np.all(np.abs(images) <= 1)
    assert "5 samples in" in capsys.readouterr().out
    assert main(["sample", "--workdir", str(tmp_path / "nothing"), "--num", "2"]) == 2  # a clear error, no trace


def test_class_conditional_training_and_guided_sampling(tmp_path):
    config = tiny_config("--config.model.num_classes=10", "--config.train.label_dropout=0.5",
                         "--config.train.num_steps=1", "--config.sample.clip_denoised=False")
    result = train.train_and_evaluate(config, str(tmp_path), progress=False)
    # Zero-initialized layers make labels barely matter after a few steps: perturb every weight.
    leaves, tree = jax.tree_util.tree_flatten(result["state"].params)
    noise = [0.05 * np.random.default_rng(i).standard_normal(x.shape) for i, x in enumerate(leaves)]
    params = jax.tree_util.tree_unflatten(tree, [x + n.astype(x.dtype) for x, n in zip(leaves, noise)])
    assert params["params"]["label_emb"]["embedding"].shape == (11, 128)  # 10 classes + the null label
    from ddpm_jax.__main__ import main

    assert main(["sample", "--workdir", str(tmp_path), "--num", "12", "--steps", "2",
                 "--out", str(tmp_path / "grid.png")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "grid.npz")["labels"], np.arange(12) % 10)  # the balanced ones
    labels = np.arange(6) % 10
    guided = runs.sample(config, params, jax.random.PRNGKey(0), 6, (8, 8, 1), num_steps=3, labels=labels,
                            guidance_scale=3.0)
    plain = runs.sample(config, params, jax.random.PRNGKey(0), 6, (8, 8, 1), num_steps=3, labels=labels)
    assert guided.shape == (6, 8, 8, 1) and np.all(np.isfinite(guided))
    assert np.abs(guided - plain).mean() > 1e-2 * np.abs(plain).mean()
    # Without labels a conditional model samples balanced classes (i mod 10), as with those labels given.
    balanced = runs.sample(config, params, jax.random.PRNGKey(0), 6, (8, 8, 1), num_steps=3)
    np.testing.assert_array_equal(balanced, plain)
    with pytest.raises(ValueError, match="unconditional"):
        runs.sample(tiny_config(), params, jax.random.PRNGKey(0), 2, (8, 8, 1), labels=[1, 2])


def test_plots_command(reference_run, tmp_path):
    from ddpm_jax.__main__ import main

    _, _, workdir = reference_run
    assert main(["plots", "--out-dir", str(tmp_path), "--workdir", workdir]) == 0
    for name in ("schedules.png", "forward_process.png", "reverse_process.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_mixed_precision_and_remat_steps_match_float32():
    """Three train steps from the same state and batch (the fresh model outputs zero and the warmup's first
    learning rate is 0, so the third step's loss is the first that depends on the precision): remat=True gives the float32 run's losses and params to float noise;
    model.dtype=bfloat16 keeps float32 params and loss, within bfloat16's precision of the float32 run."""
    from ddpm_jax import parallel

    devices = tuple(jax.local_devices()[:1])
    batch = dict(image=np.random.RandomState(0).uniform(-1, 1, (1, 1, 16, 8, 8, 1)).astype(np.float32))
    out = {}
    for name, extra in {"float32": [], "remat": ["--config.model.remat=True"],
                        "bfloat16": ["--config.model.dtype=bfloat16"]}.items():
        config = tiny_config(*extra)
        model = configs.create_model(config)
        state = train.create_train_state(config, model, train.create_optimizer(config), (8, 8, 1))
        step = train.make_train_step(config, devices)
        replicated, losses = parallel.replicate(state, devices), []
        for _ in range(3):
            replicated, metrics = step(replicated, batch)
            losses.append(np.asarray(metrics["loss"])[0])
        params = parallel.unreplicate(replicated).params
        delta = jax.tree_util.tree_map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b), params, state.params)
        out[name] = (losses, params, np.concatenate([d.ravel() for d in jax.tree_util.tree_leaves(delta)]))

    losses32, params32, delta32 = out["float32"]
    losses_r, params_r, _ = out["remat"]
    np.testing.assert_allclose(losses_r, losses32, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(params_r), jax.tree_util.tree_leaves(params32)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)

    losses16, params16, delta16 = out["bfloat16"]
    assert all(loss.dtype == np.float32 for loss in losses16)
    assert all(p.dtype == np.float32 for p in jax.tree_util.tree_leaves(params16))
    assert losses16[2] != losses32[2] and losses16[2] == pytest.approx(losses32[2], rel=2e-2)
    assert delta16 @ delta32 / np.linalg.norm(delta16) / np.linalg.norm(delta32) > 0.9   # the same updates


def test_make_train_step_is_shared_across_fields_outside_the_step():
    devices = tuple(jax.local_devices()[:1])
    step = train.make_train_step(tiny_config(), devices)
    assert train.make_train_step(tiny_config("--config.train.log_every=7", "--config.train.checkpoint_every=3"),
                                 devices) is step  # one compile
    assert train.make_train_step(tiny_config("--config.train.learning_rate=0.5"), devices) is not step
    assert train.make_train_step(tiny_config(), devices, steps=2) is not step


def test_two_steps_on_an_image_folder(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("DDPM_JAX_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for i in range(16):
        os.makedirs(tmp_path / "images" / str(i % 2), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(tmp_path / "images" / str(i % 2)
                                                                                / f"{i}.png")
    config = tiny_config(f"--config.data.source=folder:{tmp_path / 'images'}", "--config.data.image_size=8",
                         "--config.train.num_steps=2", "--config.model.num_classes=2")
    result = train.train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    assert result["step"] == 2 and np.isfinite(result["metrics"]["loss"])
    params, _ = checkpoint.restore_params(str(tmp_path / "run"))
    assert params["params"]["conv_in"]["kernel"].shape == (3, 3, 3, 32)
