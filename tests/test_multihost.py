"""Two processes on localhost (2 CPU devices each, gloo) train like one process on 4 devices, write one
checkpoint, and resume from it; and compute FID/IS features each for its own share, ending with the features and
metrics of one process. The same with the sharded step (a data=2 x fsdp=2 mesh over both processes), evaluating
FID/IS during training as `evaluate` does, whose checkpoint one process then resumes on one device."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from ddpm_jax import checkpoint, classifier, evaluate, train
from test_sharded_features import ATOL, RTOL, multihost_case
from test_train import tiny_config

WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")
# A bound that only a hung worker reaches: the two workers take under a minute side by side on a quiet 2-core machine.
WORKER_TIMEOUT_S = 900


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_two_processes(workdir, tmp_path, tag, *overrides):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    outs = [str(tmp_path / f"{tag}_{i}.npz") for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, WORKER, str(port), str(i), "2", workdir, outs[i], *overrides], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    try:
        logs = [p.communicate(timeout=WORKER_TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:  # a worker left waiting for its dead peer
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return [dict(np.load(o)) for o in outs]


def _params(result):
    return [result[f"p{i}"] for i in range(len([k for k in result if k.startswith("p")]))]


def _check_features(two):
    """Each process computed and fed half of what one process does; both hold the features and metrics of one
    process on one device, identical on the two processes."""
    one = multihost_case(devices=jax.local_devices()[:1])
    for result in two:
        assert int(result["features_computed"]) == one["computed"] // 2
        assert int(result["features_fed"]) == one["fed"] // 2
        for key in ("features", "logits", "real"):
            np.testing.assert_allclose(result[f"features_{key}"], one[key], rtol=RTOL, atol=ATOL)
        for key in ("fid", "is", "is_std", "kid", "precision", "recall"):
            assert float(result[f"features_{key}"]) == pytest.approx(one[key], rel=1e-4, abs=1e-7), key
    for key in ("features", "logits", "real", "fid", "is"):
        np.testing.assert_array_equal(two[0][f"features_{key}"], two[1][f"features_{key}"])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """One process on 4 devices (pmap, the global batch of the two processes): 2 steps, and 4 uninterrupted."""
    return {steps: train.train_and_evaluate(tiny_config(f"--config.train.num_steps={steps}"),
                                            str(tmp_path_factory.mktemp(f"one_{steps}")),
                                            devices=jax.local_devices()[:4], progress=False)
            for steps in (2, 4)}


def test_two_processes_match_one_process_on_four_devices(tmp_path, one_process):
    workdir = str(tmp_path / "run")
    stop = "--config.train.num_steps=2"
    two = _run_two_processes(workdir, tmp_path, "first", stop, "--config.train.sample_every=2", "--features")
    _check_features(two)
    # Both processes hold identical params.
    for a, b in zip(_params(two[0]), _params(two[1])):
        np.testing.assert_array_equal(a, b)
    assert int(two[0]["step"]) == 2
    # One process on 4 devices, same global batch.
    one = one_process[2]
    assert float(two[0]["loss"]) == pytest.approx(one["metrics"]["loss"], rel=1e-4)
    for a, b in zip(_params(two[0]), jax.tree_util.tree_leaves(one["state"].params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-5)
    # Process 0 alone wrote the logs and the sample grid; the checkpoint restores and the run continues.
    assert os.path.exists(os.path.join(workdir, "samples", "step_0000002.png"))
    assert checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).latest_step() == 2
    resumed = _run_two_processes(workdir, tmp_path, "resumed", "--config.train.num_steps=4")
    assert int(resumed[0]["steps_run"]) == 2 and int(resumed[0]["step"]) == 4
    for a, b in zip(_params(resumed[0]), _params(resumed[1])):
        np.testing.assert_array_equal(a, b)
    # ... to where one uninterrupted 4-device process gets.
    for a, b in zip(_params(resumed[0]), jax.tree_util.tree_leaves(one_process[4]["state"].params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=4e-5)


def test_sharded_step_on_two_processes_then_one_process_on_one_device(tmp_path, one_process):
    """The jit step over a data=2 x fsdp=2 mesh spanning both processes (each process one data row, its two devices
    each holding half of every large array) trains like pmap on one process, and evaluates during training (FID/IS
    of samples drawn on the mesh, as `evaluate` measures the checkpoint in one process); its checkpoint, gathered
    from the shards of both processes, resumes in one process on one device and continues the same trajectory."""
    workdir = str(tmp_path / "run")
    feature_net = "classifier:" + str(tmp_path / "classifier")
    classifier.train_classifier("digits", str(tmp_path / "classifier"), num_steps=30, batch_size=64)
    sharded = ["--config.train.parallelism=sharded", "--config.train.mesh.fsdp=2"]
    two = _run_two_processes(workdir, tmp_path, "sharded", "--config.train.num_steps=2",
                             "--config.train.sample_every=2", *sharded, "--config.train.eval_every=2",
                             "--config.train.eval_samples=16", f"--config.train.eval_feature_net={feature_net}")
    for a, b in zip(_params(two[0]), _params(two[1])):
        np.testing.assert_array_equal(a, b)
    assert int(two[0]["step"]) == 2 and os.path.exists(os.path.join(workdir, "samples", "step_0000002.png"))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        (logged,) = [line for line in map(json.loads, f) if "fid" in line]  # process 0 alone logs
    report = evaluate.evaluate(workdir, step=2, num_samples=16, seed=tiny_config().seed, bpd_examples=0,
                               feature_net=feature_net, progress=False, write=False)
    assert logged["step"] == 2
    assert logged["fid"] == pytest.approx(report["metrics"]["fid"], rel=1e-3)
    assert logged["is"] == pytest.approx(report["metrics"]["is"], rel=1e-3)
    assert float(two[0]["loss"]) == pytest.approx(one_process[2]["metrics"]["loss"], rel=1e-4)
    for a, b in zip(_params(two[0]), jax.tree_util.tree_leaves(one_process[2]["state"].params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-5)
    resumed = train.train_and_evaluate(tiny_config("--config.train.parallelism=sharded"), workdir,
                                       devices=jax.local_devices()[:1], progress=False)
    assert resumed["steps_run"] == 2 and resumed["step"] == 4
    for a, b in zip(jax.tree_util.tree_leaves(resumed["state"].params),
                    jax.tree_util.tree_leaves(one_process[4]["state"].params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=4e-5)
