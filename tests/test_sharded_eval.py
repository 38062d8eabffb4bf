"""Sampling and bits/dim on a sharded run's mesh (`parallel.Sharded.map`: the per-device sampler and likelihood,
jitted over the mesh, the params split along FSDP) against pmap on 8 forced CPU devices: a tiny class-conditional
U-Net, data=8 and data=2 x fsdp=4, 11 items in padded rounds of one per device."""

import os

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ddpm_jax import configs, data, functional, parallel, runs, sampling

TINY = ["--config.model.ch=32", "--config.model.ch_mult=(1,)", "--config.model.num_res_blocks=1",
        "--config.model.attn_resolutions=()", "--config.diffusion.num_timesteps=20",
        "--config.diffusion.schedule=cosine"]
MESHES = {"data8": [], "fsdp4": ["--config.train.mesh.fsdp=4"]}
# The same samples and bits/dim as under pmap, float reduction order apart (the mesh runs the pmap's per-device
# function under vmap, XLA partitioning it). Measured with jax 0.10.2 on XLA:CPU: data=8 bitwise equal to pmap;
# data=2 x fsdp=4 samples (in [-1, 1]) within 2.2e-6, bits/dim (~8) within 4.8e-7. Asserted with ~10x margin.
RTOL, ATOL = 1e-5, 2e-5


def _config(*extra):
    return configs.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", "digits.py"),
                               TINY + list(extra))


@pytest.fixture(scope="module")
def tiny():
    """(config, model, params): random params, perturbed so that the zero-initialized output layer is not zero."""
    config = _config()
    model = configs.create_model(config)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1), np.float32), np.zeros((1,), np.int32))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [np.asarray(x + 0.02 * jax.random.normal(k, x.shape))
                                                 for x, k in zip(leaves, keys)])
    return config, model, params


@pytest.fixture(scope="module")
def pmap_results(tiny):
    config, model, params = tiny
    test = data.load_arrays("digits", "test")
    samples = runs.sample(config, params, jax.random.PRNGKey(2), 11, (8, 8, 1), sampler="ddim", num_steps=3)
    bpd = configs.create_objective(config).bits_per_dim_dataset(model, params, test.images[:11],
                                                                 jax.random.PRNGKey(3), max_value=test.max_value,
                                                                 per_device_batch=1)
    return samples, bpd


@pytest.mark.parametrize("mesh", list(MESHES))
def test_samples_and_bits_per_dim_on_the_mesh_match_pmap(tiny, pmap_results, mesh):
    _, model, params = tiny
    config = _config("--config.train.parallelism=sharded", *MESHES[mesh])
    layout = configs.create_layout(config)
    assert isinstance(layout, parallel.Sharded) and layout.mesh.size == 8
    # runs.sample takes the config's layout (the CLI's `sample` and evaluate's samples go through it).
    samples = runs.sample(config, params, jax.random.PRNGKey(2), 11, (8, 8, 1), sampler="ddim", num_steps=3)
    np.testing.assert_allclose(samples, pmap_results[0], rtol=RTOL, atol=ATOL)
    assert samples.shape == (11, 8, 8, 1) and np.std(samples) > 0.1
    test = data.load_arrays("digits", "test")
    bpd = configs.create_objective(config).bits_per_dim_dataset(model, params, test.images[:11],
                                                                 jax.random.PRNGKey(3), max_value=test.max_value,
                                                                 per_device_batch=1, layout=layout)
    for key in ("bpd", "prior_bpd", "decoder_bpd"):
        np.testing.assert_allclose(bpd[key], pmap_results[1][key], rtol=RTOL, atol=ATOL)
    assert bpd["num_examples"] == 11 and np.all(np.isfinite(bpd["bpd"]))


def test_the_params_are_split_along_fsdp_inside_the_mapped_function(tiny):
    config, model, params = tiny
    layout = parallel.make_layout("sharded", dict(fsdp=4))
    placed = layout.put_state(functional.bind(model.apply, params))
    kernel = placed.args[0]["params"]["down_0_block_0"]["conv1"]["kernel"]  # [3, 3, 32, 32]
    assert kernel.sharding.spec == P(None, None, "fsdp", None)
    assert {s.data.shape for s in kernel.addressable_shards} == {(3, 3, 8, 32)}
    # The per-device sampler as sample_sharded maps it: compiled for params split along FSDP, 1/4 of them per device.
    mapped = layout.map(sampling._device_sampler("ddim", dict(timesteps=(15, 5), shape=(1, 8, 8, 1),
                                                              clip_denoised=True)),
                        (layout.placed_axis, None, None, 0, 0, None))
    index = np.arange(8, dtype=np.int32)[:, None]
    compiled = mapped.lower(placed, configs.create_schedule(config), jax.random.PRNGKey(0), index[:, 0],
                            index % 10, np.float32(1)).compile()
    in_params = compiled.input_shardings[0][0].args[0]["params"]["down_0_block_0"]["conv1"]["kernel"]
    assert in_params.spec == P(None, None, "fsdp", None)
    assert compiled.output_shardings.spec == P(("data", "fsdp"))
    total = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(params))
    per_device = sum(x.addressable_shards[0].data.nbytes for x in jax.tree_util.tree_leaves(placed))
    assert per_device < 0.4 * total
    with pytest.raises(ValueError, match="devices or a layout, not both"):
        sampling.sample_sharded(placed, configs.create_schedule(config), jax.random.PRNGKey(0), 2, (8, 8, 1),
                                sampler="ddim", num_steps=3, devices=jax.devices(), layout=layout)
