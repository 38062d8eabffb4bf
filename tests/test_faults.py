"""Bad input and faults (issue 18): every mistake a clear error, no crash path that loses a run.

Refused with a message naming the value and what is accepted, before anything loads or compiles:
  config.train.num_steps = 0, a learning rate <= 0 (and other impossible config values), `sample --num 0` or
  `--num -3`, `--steps 0`, `--eta -1`, `--out x.txt` (only PNG is written), a guidance scale other than 1 on an
  unconditional model, a workdir that is a file or read-only, a config file with a syntax error (file and line
  first), `--feature-net inception:FILE` where FILE is no weights archive, labels outside [0, num_classes).
Warned once: a learning rate above 1, DDIM eta above 1.
Checkpoints: a corrupt newest checkpoint is skipped (named, with the reason) by train, sample and evaluate, and
  `--step N` picks one; an interrupted write's tmp directory is ignored and cleaned on restart; a SIGKILL during
  an asynchronous write leaves the previous checkpoint resumable; `save` blocks for the copy, not the write;
  SIGTERM waits for the write in flight; a full disk stops the run with a clear message and the previous
  checkpoint resumable; a second train process on a workdir is refused with the first one's PID, and the lock of
  a killed process is taken over.
Outputs: a grid PNG, the sample command's .npz and the plots never appear truncated under their final names.
"""

import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ddpm_jax import checkpoint, config_schema, configs, runs, train, validation, viz
from ddpm_jax.__main__ import main
from ddpm_jax.metrics import inception
from conftest import read_only_directory
from test_train import _leaves_equal, interrupt, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "experiments", "digits.py")
# A bound that only a hung child reaches: a child that imports JAX takes ~5 s on a quiet 2-core machine.
SUBPROCESS_TIMEOUT_S = 900
HOLD_BOUND_S = 120


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """4 steps of the tiny config, checkpoints at steps 2 and 4: (workdir, result)."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    return workdir, train.train_and_evaluate(tiny_config(), workdir, progress=False)


def copy_run(reference, tmp_path) -> str:
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[0], workdir)
    return workdir


def garble(workdir: str, step: int) -> None:
    """Overwrite the array data of a checkpoint with random bytes (its metadata stays readable)."""
    files = glob.glob(os.path.join(workdir, "checkpoints", str(step), "packed", "**", "d", "*"), recursive=True)
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.write(os.urandom(os.path.getsize(path)))


def hold_json_writes(monkeypatch, release: threading.Event | None = None, fail_in: str | None = None):
    """Hold the background write of the pipeline position (the JSON item of every checkpoint) until `release` is
    set, and return an Event set when a write completes; with `fail_in`, raise ENOSPC instead where the
    checkpoint's directory name starts with it, as a full disk would. A held write gives up waiting after
    HOLD_BOUND_S, so a test whose code under test waits for the write fails instead of hanging."""
    real = ocp.handlers.JsonCheckpointHandler._save_fn
    written = threading.Event()

    async def save_fn(self, x, directory):
        if fail_in is not None and os.path.basename(os.path.dirname(str(directory))).startswith(fail_in):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
        if release is not None:
            release.wait(HOLD_BOUND_S)
        await real(self, x, directory)
        written.set()

    monkeypatch.setattr(ocp.handlers.JsonCheckpointHandler, "_save_fn", save_fn)
    return written


def tmp_dirs(workdir: str) -> list:
    return glob.glob(os.path.join(workdir, "checkpoints", "*orbax-checkpoint-tmp*"))


# ------------------------------------------------------------------------------------------------ values


@pytest.mark.parametrize("override, message", [
    ("--config.train.num_steps=0", r"config.train.num_steps must be an integer >= 1, got 0"),
    ("--config.train.learning_rate=-0.001", r"config.train.learning_rate must be a number in \(0.0, inf\)"),
    ("--config.train.ema_decay=1.5", r"config.train.ema_decay must be a number in \[0.0, 1.0\]"),
    ("--config.diffusion.prediction='epsilon'", r"Unknown prediction .*'epsilon'; accepted: eps, x0, v"),
    ("--config.sample.eta=-1.0", r"eta must be a number in \[0.0, inf\)"),
])
def test_impossible_config_values_are_refused_before_anything_runs(tmp_path, override, message):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(tiny_config(override), str(workdir), progress=False)
    assert not workdir.exists()  # nothing was written, loaded or compiled


def test_cli_refuses_num_steps_zero(tmp_path, capsys):
    assert main(["train", "--config", DIGITS, "--workdir", str(tmp_path / "run"), "--config.train.num_steps=0"]) == 2
    assert "error: config.train.num_steps must be an integer >= 1, got 0." in capsys.readouterr().err


def test_suspicious_values_warn_once():
    config = tiny_config("--config.train.learning_rate=1.5")
    with pytest.warns(validation.SuspiciousValueWarning, match="learning_rate = 1.5 is above 1") as record:
        config_schema.validate_config(config)
        config_schema.validate_config(config)
    assert len(record) == 1
    with pytest.warns(validation.SuspiciousValueWarning, match="eta = 1.25 is above 1") as record:
        runs.sampler_options(tiny_config(), "ddim", 5, None, 1.25)
        runs.sampler_options(tiny_config(), "ddim", 5, None, 1.25)
    assert len(record) == 1
    with pytest.raises(ValueError, match=r"eta must be a number in \[0.0, inf\), got -0.5"):
        runs.sampler_options(tiny_config(), "ddim", 5, None, -0.5)


@pytest.mark.parametrize("source, warned", [("fashion_mnist", True), ("npz:/data/fashion_mnist.npz", True),
                                            ("mnist", True), ("digits", True), ("cifar10", False),
                                            ("npz:/data/pets.npz", False), ("folder:/data/mnist", False)])
def test_flips_of_one_sided_data_warn(source, warned, monkeypatch):
    import warnings

    def flip_warnings(config):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            config_schema.validate_config(config)
        return [w for w in record if "random_flip" in str(w.message)]

    monkeypatch.setattr(validation, "_warned", set())
    config = tiny_config(f"--config.data.source={source}", "--config.data.random_flip=True")
    flips = flip_warnings(config)
    assert len(flips) == int(warned)
    if warned:
        assert issubclass(flips[0].category, validation.SuspiciousValueWarning)
        assert "set config.data.random_flip = False" in str(flips[0].message)
    config.data.random_flip = False
    assert not flip_warnings(config)


@pytest.mark.parametrize("args, message", [
    (["--num", "0"], "--num must be an integer >= 1, got 0."),
    (["--num", "-3"], "--num must be an integer >= 1, got -3."),
    (["--steps", "0"], "--steps must be an integer >= 1, got 0."),
    (["--eta", "-1"], r"--eta must be a number in [0.0, inf), got -1.0."),
    (["--out", "grid.txt"], "images are written as PNG only; give a path ending in .png"),
])
def test_bad_sample_arguments_are_refused_before_loading(monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.setattr(runs, "load_run", lambda *a, **k: pytest.fail("loaded the run"))
    assert main(["sample", "--workdir", str(tmp_path)] + args) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_guidance_needs_a_class_conditional_model(reference, capsys):
    with pytest.raises(ValueError, match="This model is unconditional .*use guidance scale 1"):
        runs.sample(tiny_config(), None, jax.random.PRNGKey(0), 2, (8, 8, 1), guidance_scale=3.0)
    with pytest.raises(ValueError, match=r"needs class labels.*Pass labels"):  # (runs.sample passes balanced)
        validation.check_guidance(3.0, True, False)
    with pytest.raises(ValueError, match=r"sampling: labels must be in \[0, 10\)"):
        runs.sample(tiny_config("--config.model.num_classes=10"), None, jax.random.PRNGKey(0), 2, (8, 8, 1),
                       labels=[3, 12])
    assert main(["sample", "--workdir", reference[0], "--num", "2", "--guidance-scale", "3"]) == 2
    assert "use guidance scale 1" in capsys.readouterr().err


def test_config_file_with_a_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "experiment.py"
    path.write_text("def get_config():\n    return dict(a=1,, b=2)\n")
    with pytest.raises(ValueError, match=rf"^{path}, line 2: .*\(a syntax error in the config file\)"):
        configs.load_config(str(path))


def test_workdir_that_is_a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a run")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        train.train_and_evaluate(tiny_config(), str(path), progress=False)


def test_read_only_workdir(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with read_only_directory(workdir, monkeypatch):
        with pytest.raises(ValueError, match=r"is not writable .*training writes its config, checkpoints"):
            train.train_and_evaluate(tiny_config(), str(workdir), progress=False)
    assert not list(workdir.iterdir())


def test_inception_weights_that_are_not_an_archive(tmp_path):
    for content in (b"hello", b"PK\x03\x04 truncated"):
        path = tmp_path / "weights.npz"
        path.write_bytes(content)
        with pytest.raises(ValueError, match="is not an .npz archive of FID Inception weights"):
            inception.load_fid_inception_params(path)


def test_labels_outside_the_models_classes_are_refused_when_the_data_loads(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (64, 8, 8), dtype=np.uint8), y_train=np.arange(64) % 12)
    config = tiny_config(f"--config.data.source=npz:{npz}", "--config.model.num_classes=10")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\) .* 10 of 64 are outside it \(min 0, max 11\)"):
        train.train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    # Following the advice works in the same workdir: the config of a run without checkpoints is replaced.
    runs.save_or_check_config(str(tmp_path / "run"), tiny_config(f"--config.data.source=npz:{npz}",
                                                                  "--config.model.num_classes=12"))
    assert runs.load_config(str(tmp_path / "run")).model.num_classes == 12


# ------------------------------------------------------------------------------------------------ checkpoints


def test_train_resumes_from_the_newest_checkpoint_that_restores(reference, tmp_path):
    workdir = copy_run(reference, tmp_path)
    garble(workdir, 4)
    with pytest.warns(checkpoint.SkippedCheckpointWarning, match=r"step 4 aside as .*4\.unreadable-"), \
            pytest.warns(checkpoint.SkippedCheckpointWarning, match="step 4 does not restore .*restoring step 2"):
        resumed = train.train_and_evaluate(tiny_config(), workdir, progress=False)
    assert resumed["steps_run"] == 2
    assert _leaves_equal(resumed["state"].params, reference[1]["state"].params)
    assert glob.glob(os.path.join(workdir, "checkpoints", "4.unreadable-*"))  # set aside, not deleted
    assert checkpoint.restore_params(workdir)[1] == 4  # the step written again


def test_sample_and_evaluate_skip_a_corrupt_checkpoint_or_take_step(reference, tmp_path, capsys):
    workdir = copy_run(reference, tmp_path)
    garble(workdir, 4)
    with pytest.warns(checkpoint.SkippedCheckpointWarning, match="step 4 does not restore"):
        assert runs.load_run(workdir).step == 2
    with pytest.raises(ValueError, match="the checkpoint of step 4 does not restore"):
        checkpoint.restore_params(workdir, step=4)
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 3 .*steps there: 2, 4"):
        checkpoint.restore_params(workdir, step=3)
    assert main(["evaluate", "--workdir", workdir, "--step", "2", "--bpd-examples", "1"]) == 0
    assert json.load(open(os.path.join(workdir, "eval_2.json")))["step"] == 2
    assert main(["sample", "--workdir", workdir, "--step", "3"]) == 2
    assert "steps there: 2, 4" in capsys.readouterr().err


def test_a_failed_restore_prints_one_warning_not_a_screen_of_tracebacks(reference, tmp_path):
    workdir = copy_run(reference, tmp_path)
    garble(workdir, 4)
    script = (f"import time; from ddpm_jax import checkpoint; print(checkpoint.restore_params({workdir!r})[1]); "
              "time.sleep(1)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.returncode == 0 and out.stdout.strip() == "2"
    assert "step 4 does not restore" in out.stderr
    assert "Event loop is closed" not in out.stderr and "Traceback" not in out.stderr


def test_restart_ignores_and_cleans_an_interrupted_write(reference, tmp_path):
    workdir = copy_run(reference, tmp_path)
    leftover = os.path.join(workdir, "checkpoints", "6.orbax-checkpoint-tmp-1700000000", "state")
    os.makedirs(leftover)
    open(os.path.join(leftover, "half_written"), "wb").write(b"\0" * 100)
    assert checkpoint.restore_params(workdir)[1] == 4 and tmp_dirs(workdir)  # sample/evaluate: ignored, kept
    assert train.train_and_evaluate(tiny_config(), workdir, progress=False)["steps_run"] == 0
    assert not tmp_dirs(workdir)  # removed by the time train returns (the Checkpointer's close waits)


SIGKILL_MID_WRITE = """
import os, signal, sys, threading, time
import numpy as np
import orbax.checkpoint as ocp
from ddpm_jax import checkpoint

async def never(self, x, directory):  # the write of step 2 stays in flight until the kill
    threading.Event().wait()

ckpt = checkpoint.Checkpointer(sys.argv[1])
ckpt.save(1, {"w": np.full(1000, 1.0, np.float32)}, {"epoch": 0, "index": 1})
ckpt.wait()
ocp.handlers.JsonCheckpointHandler._save_fn = never
ckpt.save(2, {"w": np.full(1000, 2.0, np.float32)}, {"epoch": 0, "index": 2})
while not [n for n in os.listdir(sys.argv[1]) if n.startswith("2.orbax-checkpoint-tmp")]:
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_during_an_async_write_leaves_the_previous_checkpoint_resumable(tmp_path):
    directory = str(tmp_path / "checkpoints")
    out = subprocess.run([sys.executable, "-c", SIGKILL_MID_WRITE, directory], capture_output=True, text=True,
                         timeout=SUBPROCESS_TIMEOUT_S, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert [n for n in os.listdir(directory) if n.startswith("2.orbax-checkpoint-tmp")]  # killed mid-write
    ckpt = checkpoint.Checkpointer(directory)
    assert ckpt.latest_step() == 1
    state, data_state = ckpt.restore({"w": np.zeros(1000, np.float32)})
    ckpt.close()
    assert np.all(state["w"] == 1.0) and data_state == {"epoch": 0, "index": 1}
    assert os.listdir(directory) == ["1"]  # the interrupted write is cleaned up (close waits for it)


def test_save_blocks_for_the_host_copy_not_the_write(tmp_path, monkeypatch):
    release = threading.Event()
    written = hold_json_writes(monkeypatch, release)
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    weights = np.full(4_000_000, 1.0, np.float32)
    ckpt.save(1, {"w": weights}, {"epoch": 0, "index": 0})
    # save returned while the write is held: a save that waited for it would return only after HOLD_BOUND_S,
    # with the write done.
    assert not written.is_set() and not (tmp_path / "1").exists()
    weights[:] = 7.0  # the caller may reuse its buffers at once
    release.set()
    ckpt.wait()
    assert written.is_set() and ckpt.latest_step() == 1 and np.all(ckpt.restore({"w": weights})[0]["w"] == 1.0)
    ckpt.close()


def test_sigterm_waits_for_the_write_in_flight(reference, tmp_path, monkeypatch):
    release = threading.Event()
    hold_json_writes(monkeypatch, release)

    def terminate_while_step_1_is_written(n, batch):
        if n == 2:  # step 1's write is held, so in flight when the signal arrives
            os.kill(os.getpid(), signal.SIGTERM)
            release.set()

    interrupt(monkeypatch, terminate_while_step_1_is_written)
    workdir = str(tmp_path / "run")
    with pytest.raises(train.Preempted, match="step 2"):
        train.train_and_evaluate(tiny_config("--config.train.checkpoint_every=1"), workdir, progress=False)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]  # both complete


def test_a_checkpoint_due_while_one_is_written_is_skipped_not_waited_for(tmp_path, monkeypatch):
    release = threading.Event()
    hold_json_writes(monkeypatch, release)
    interrupt(monkeypatch, lambda n, batch: release.set() if n == 4 else None)  # step 1's write held to step 4
    workdir = str(tmp_path / "run")
    result = train.train_and_evaluate(tiny_config("--config.train.checkpoint_every=1",
                                                  "--config.train.checkpoint_if_busy=skip"), workdir, progress=False)
    assert result["checkpoints"] == dict(written=2, skipped=2)  # steps 2 and 3 did not wait for step 1's write
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "4"]  # the final one waited
    assert checkpoint.restore_params(workdir)[1] == 4


def test_checkpoint_if_busy_wait_writes_every_due_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    result = train.train_and_evaluate(
        tiny_config("--config.train.checkpoint_every=1", "--config.train.checkpoint_if_busy='wait'",
                    "--config.train.keep_checkpoints=4"), workdir, progress=False)
    assert result["checkpoints"] == dict(written=4, skipped=0)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2", "3", "4"]


def test_a_full_disk_stops_the_run_and_keeps_the_previous_checkpoint(reference, tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    hold_json_writes(monkeypatch, fail_in="4.")
    with pytest.raises(checkpoint.CheckpointWriteError,
                       match=r"checkpoint of step 4 .*No space left on device.*step 2 is intact: free space"):
        train.train_and_evaluate(tiny_config(), workdir, progress=False)
    monkeypatch.undo()
    assert checkpoint.restore_params(workdir)[1] == 2
    resumed = train.train_and_evaluate(tiny_config(), workdir, progress=False)  # space freed
    assert resumed["steps_run"] == 2 and not tmp_dirs(workdir)
    assert _leaves_equal(resumed["state"].params, reference[1]["state"].params)


def test_a_failed_write_lets_the_checkpoints_other_items_finish_before_the_run_stops(tmp_path, monkeypatch):
    """The JSON items of step 4 fail at once while its array item is still written (its metadata delayed here):
    the run must not return, and a resumed run must not clean the directory, while that write goes on."""
    import asyncio

    from orbax.checkpoint._src.handlers import base_pytree_checkpoint_handler as pytree_handler

    real = pytree_handler.BasePyTreeCheckpointHandler._write_metadata_after_commits
    finished = []

    async def late(self, *args, **kwargs):
        await asyncio.sleep(1.0)  # widens the window: the assertion below holds however long this takes
        await real(self, *args, **kwargs)
        finished.append(True)

    monkeypatch.setattr(pytree_handler.BasePyTreeCheckpointHandler, "_write_metadata_after_commits", late)
    hold_json_writes(monkeypatch, fail_in="4.")
    workdir = str(tmp_path / "run")
    with pytest.raises(checkpoint.CheckpointWriteError, match="checkpoint of step 4"):
        train.train_and_evaluate(tiny_config(), workdir, progress=False)
    assert len(finished) == 2  # steps 2 and 4: step 4's array item ended before train returned


HOLD_LOCK = """
import sys
from ddpm_jax import runs
with runs.lock_workdir(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # holds the lock until killed (or its stdin closes)
"""


def test_a_second_train_process_is_refused_and_a_dead_ones_lock_taken_over(reference, tmp_path):
    workdir = copy_run(reference, tmp_path)
    first = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, workdir], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"in use by another train process \(PID {first.pid} on "):
            train.train_and_evaluate(tiny_config(), workdir, progress=False)
    finally:
        first.kill()
        first.wait()
    assert open(os.path.join(workdir, runs.LOCK_FILE)).read().startswith(str(first.pid))  # a stale lock
    assert train.train_and_evaluate(tiny_config(), workdir, progress=False)["steps_run"] == 0
    assert open(os.path.join(workdir, runs.LOCK_FILE)).read() == ""  # released on exit


# ------------------------------------------------------------------------------------------------ outputs


def _write_half_then_fail(target, *args, **kwargs):
    """Stands in for a writer killed mid-file: half a file, then an error."""
    if hasattr(target, "write"):
        target.write(b"\x89PNG half")
    else:
        open(target, "wb").write(b"\x89PNG half")
    raise OSError(errno.EIO, "killed mid-write")


def test_images_never_appear_truncated(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    from PIL import Image

    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: _write_half_then_fail(fp))
    with pytest.raises(OSError, match="killed mid-write"):
        viz.save_grid(np.zeros((4, 8, 8, 1), np.float32), tmp_path / "grid.png")
    monkeypatch.setattr(Figure, "savefig", lambda self, fname, *a, **k: _write_half_then_fail(fname))
    with pytest.raises(OSError, match="killed mid-write"):
        viz.plot_schedules(tmp_path / "schedules.png", num_timesteps=50)
    assert not list(tmp_path.iterdir())  # neither the final names nor temporary files


def test_the_sample_commands_npz_never_appears_truncated(reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(np, "savez", lambda file, **arrays: _write_half_then_fail(file))
    out = tmp_path / "grid.png"
    assert main(["sample", "--workdir", reference[0], "--num", "2", "--steps", "2", "--out", str(out)]) == 2
    assert "killed mid-write" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["grid.png"]  # the grid is complete; no grid.npz, not even half
    from PIL import Image

    with Image.open(out) as image:
        image.verify()


def test_no_warning_for_ordinary_values():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config_schema.validate_config(tiny_config())
        runs.sampler_options(tiny_config(), "ddim", 5, None, 1.0)
