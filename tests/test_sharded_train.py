"""The sharded train step (jax.jit over a (data, fsdp) mesh, parallel.Sharded) against the pmap one on 8 forced CPU
devices: the mesh and sharding rules, bad meshes and batches, 20 steps with the same losses and state under pmap,
data=8 and fsdp=4 x data=2, and a run resumed on 8 -> 4 -> 1 devices (and from sharded to pmap and back) that
continues the uninterrupted trajectory."""

import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ddpm_jax import checkpoint, configs, parallel, train
from test_train import tiny_config

SHARDED = ["--config.train.parallelism=sharded"]
FSDP4 = SHARDED + ["--config.train.mesh.fsdp=4"]
STEPS = 20
# 20 steps from the same seed: the losses agree to 1e-5 relative and every array of the state (params, EMA, Adam's
# moments) to rtol 1e-4 / atol 1e-6, float reduction order apart (a wrong gradient average or other randomness moves
# Adam's weights by ~lr = 1e-3 a step). Measured with jax 0.10.2 on XLA:CPU: data=8 bitwise equal to pmap;
# fsdp=4 x data=2 losses within 1.2e-7 relative, params and EMA within 2e-7, Adam's moments within 1.5e-8.
LOSS_RTOL, RTOL, ATOL = 1e-5, 1e-4, 1e-6


def test_fsdp_spec_splits_the_largest_divisible_axis():
    assert parallel.fsdp_spec((3, 3, 32, 64), 4) == P(None, None, None, "fsdp")
    assert parallel.fsdp_spec((3, 3, 64, 32), 4) == P(None, None, "fsdp", None)
    assert parallel.fsdp_spec((64, 64), 4) == P("fsdp", None)  # the first of equal axes
    assert parallel.fsdp_spec((6, 1024), 4) == P(None, "fsdp")
    assert parallel.fsdp_spec((3, 3, 5, 1023), 4) == P()  # no axis divides
    assert parallel.fsdp_spec((64,), 4) == P()  # small: replicated
    assert parallel.fsdp_spec((), 4) == P()
    assert parallel.fsdp_spec((3, 3, 32, 64), 1) == P()


def test_mesh_shapes_and_bad_meshes_and_batches():
    devices = jax.devices()
    assert dict(parallel.make_mesh().shape) == dict(data=8, fsdp=1)
    assert dict(parallel.make_mesh(dict(fsdp=4)).shape) == dict(data=2, fsdp=4)
    assert dict(parallel.make_mesh(dict(data=2, fsdp=-1), devices[:4]).shape) == dict(data=2, fsdp=2)
    with pytest.raises(ValueError, match=r"a mesh with fsdp=3 does not divide the 8 devices"):
        parallel.make_mesh(dict(fsdp=3))
    with pytest.raises(ValueError, match=r"data=3 x fsdp=2 = 6 devices does not match the 8 devices"):
        parallel.make_mesh(dict(data=3, fsdp=2))
    with pytest.raises(ValueError, match=r"positive integers, one of them may be -1"):
        parallel.make_mesh(dict(data=-1, fsdp=-1))
    with pytest.raises(ValueError, match=r"has the axes 'data' and 'fsdp', got \['data', 'fsdp', 'model'\]"):
        parallel.make_mesh(dict(model=2))
    with pytest.raises(ValueError, match=r"unknown parallelism 'tpu'"):
        parallel.make_layout("tpu")
    # Refused by the config check and the trainer, before anything compiles.
    with pytest.raises(ValueError, match=r"Unknown parallelism \(config.train.parallelism\) 'shard'"):
        train.train_and_evaluate(tiny_config("--config.train.parallelism=shard"), "/nonexistent/x", progress=False)
    with pytest.raises(ValueError, match=r"config.train.mesh"):
        train.train_and_evaluate(tiny_config("--config.train.mesh.fsdp=0"), "/nonexistent/x", progress=False)
    layout = parallel.make_layout("sharded", dict(fsdp=4))
    with pytest.raises(ValueError, match=r"a global batch of 12 .* does not divide over the mesh of data=2 x fsdp=4 "
                                         r"devices .* multiple of 8"):
        layout.check_batch(12)


def test_the_state_is_split_along_fsdp_and_gathered_back():
    config = tiny_config()
    model = configs.create_model(config)
    state = train.create_train_state(config, model, train.create_optimizer(config), (8, 8, 1))
    layout = parallel.make_layout("sharded", dict(fsdp=4))
    placed = layout.put_state(state)
    block = placed.params["params"]["down_0_block_0"]
    kernel = block["conv1"]["kernel"]  # [3, 3, 32, 32]: split on the first of its largest axes
    assert kernel.sharding.spec == P(None, None, "fsdp", None)
    assert {s.data.shape for s in kernel.addressable_shards} == {(3, 3, 8, 32)}
    assert block["conv1"]["bias"].sharding.spec == P()  # 32 elements: replicated
    assert placed.params["params"]["conv_in"]["kernel"].sharding.spec == P()  # [3, 3, 1, 32]: 288, replicated
    # Every array (params, EMA, Adam's moments) as the rule says, replicated along data.
    for x in jax.tree_util.tree_leaves(placed):
        assert x.sharding.spec == parallel.fsdp_spec(x.shape, 4) and dict(x.sharding.mesh.shape) == dict(data=2, fsdp=4)
    assert placed.step.sharding.spec == P() and placed.rng.sharding.spec == P()
    host = layout.host(placed)
    for a, b in zip(jax.tree_util.tree_leaves(host), jax.tree_util.tree_leaves(state)):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, np.asarray(b))
    # 1/4 of the big arrays per device: the per-device bytes of the state shrink accordingly.
    per_device = sum(x.addressable_shards[0].data.nbytes for x in jax.tree_util.tree_leaves(placed))
    total = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(state))
    assert per_device < 0.3 * total


def _losses(workdir):
    return [json.loads(line)["loss"] for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _assert_close(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """20 steps from the same seed under pmap, sharded data=8 and sharded fsdp=4 x data=2 (8 devices)."""
    out = {}
    for name, extra in (("pmap", []), ("data", SHARDED), ("fsdp", FSDP4)):
        workdir = str(tmp_path_factory.mktemp(name))
        config = tiny_config(f"--config.train.num_steps={STEPS}", "--config.train.checkpoint_every=4",
                             "--config.train.sample_every=20", "--config.sample.num_images=8", *extra)
        out[name] = dict(result=train.train_and_evaluate(config, workdir, progress=False), workdir=workdir)
    return out


@pytest.mark.parametrize("name", ["data", "fsdp"])
def test_twenty_steps_match_pmap(three_runs, name):
    ref, run = three_runs["pmap"], three_runs[name]
    assert run["result"]["step"] == STEPS
    np.testing.assert_allclose(_losses(run["workdir"]), _losses(ref["workdir"]), rtol=LOSS_RTOL)
    assert len(_losses(ref["workdir"])) == STEPS
    _assert_close(run["result"]["state"], ref["result"]["state"])
    # The checkpoint (gathered from the shards) holds the same state, and the EMA samples drawn from it match.
    params, step = checkpoint.restore_params(run["workdir"])
    assert step == STEPS
    _assert_close(params, ref["result"]["state"].ema_params)
    from PIL import Image

    grids = [np.asarray(Image.open(os.path.join(r["workdir"], "samples", f"step_{STEPS:07d}.png")), np.int16)
             for r in (run, ref)]
    assert np.abs(grids[0] - grids[1]).max() <= 1


def test_resume_on_eight_then_four_then_one_device(three_runs, tmp_path):
    """fsdp=4 x data=2 on 8 devices to step 8, pmap on 4 devices to 16, one device (sharded) to 20: the
    trajectory of the uninterrupted fsdp run, up to float reduction order."""
    workdir = str(tmp_path)
    base = [f"--config.train.num_steps={STEPS}", "--config.train.checkpoint_every=4"]
    first = train.train_and_evaluate(tiny_config(*base, *FSDP4), workdir, stop_after=8, progress=False)
    assert first["step"] == 8
    second = train.train_and_evaluate(tiny_config(*base), workdir, devices=jax.devices()[:4], stop_after=8,
                                      progress=False)
    assert second["steps_run"] == 8 and second["step"] == 16
    third = train.train_and_evaluate(tiny_config(*base, *SHARDED), workdir, devices=jax.devices()[:1],
                                     progress=False)
    assert third["steps_run"] == 4 and third["step"] == STEPS
    ref = three_runs["fsdp"]
    np.testing.assert_allclose(_losses(workdir), _losses(ref["workdir"]), rtol=LOSS_RTOL)
    _assert_close(third["state"], ref["result"]["state"])
