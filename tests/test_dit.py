"""Tests for ddpm_jax.models.dit: shapes of every option (eval_shape, no compute), adaLN-Zero (identity blocks, zero
output at init), patchify, the embeddings and the whole forward against numpy float64, the paper's parameter counts
and Gflops, errors, the config wiring, and training and sampling through train_and_evaluate with every objective."""

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddpm_jax import config_schema, configs, runs, train
from ddpm_jax.models import dit, text, unet

from test_unet import B, C, H, NUM_CLASSES, W, _abstract, _inputs  # the same 2 x 8 x 8 x 3 inputs as the U-Net

TINY = dict(hidden_size=32, depth=2, num_heads=2, patch_size=2)
EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "experiments")


@pytest.fixture(scope="module")
def tiny_model():
    """The shared tiny class-conditional DiT and its fresh params (one real init for the file)."""
    model = dit.DiT(**TINY, num_classes=NUM_CLASSES)
    x, t = _inputs()
    return model, jax.jit(model.init)(jax.random.key(0), x, t)


@pytest.fixture(scope="module")
def perturbed(tiny_model):
    """The tiny params with every all-zero leaf (adaLN-Zero's modulations, the final layer, the biases) replaced by
    small noise, so that every path of the network acts."""
    model, params = tiny_model
    rng = np.random.default_rng(7)
    noisy = lambda leaf: jnp.asarray(0.05 * rng.standard_normal(leaf.shape), leaf.dtype) if not np.any(leaf) else leaf
    return model, jax.tree_util.tree_map(noisy, params)


@pytest.fixture(scope="module")
def apply_fn(tiny_model):
    return jax.jit(tiny_model[0].apply)


# ----- shapes (no compute) -----

@pytest.mark.parametrize("kw, out_c", [
    (dict(), C),
    (dict(learn_sigma=True), 2 * C),
    (dict(out_channels=5), 5),
    (dict(out_channels=4, learn_sigma=True), 4),
    (dict(pos_embed="learned"), C),
    (dict(patch_size=1), C),
    (dict(patch_size=4), C),
    (dict(mlp_ratio=2.0, depth=1), C),
    (dict(remat=True), C),
])
def test_output_shapes(kw, out_c):
    x, t = _inputs()
    params, out = _abstract(dit.DiT(**{**TINY, **kw}), x, t)
    assert out.shape == (B, H, W, out_c) and out.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))


def test_non_square_float_time_and_mixed_precision_shapes():
    x, t = _inputs(h=8, w=16)
    _, out = _abstract(dit.DiT(**TINY), x, t.astype(jnp.float32) / 7)  # a continuous level, as flow matching's
    assert out.shape == (B, 8, 16, C)
    params, out = _abstract(dit.DiT(**TINY, dtype=jnp.bfloat16), x, t)
    assert out.dtype == jnp.float32 and all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))


def test_class_conditioning_and_learned_position_params():
    x, t = _inputs()
    params, out = _abstract(dit.DiT(**TINY, num_classes=NUM_CLASSES), x, t, jnp.array([0, 2]))
    assert out.shape == (B, H, W, C)
    assert params["params"]["label_emb"]["embedding"].shape == (NUM_CLASSES + 1, 32)  # + the null label
    fixed, _ = _abstract(dit.DiT(**TINY), x, t)
    learned, _ = _abstract(dit.DiT(**TINY, pos_embed="learned"), x, t)
    assert "pos_embed" not in fixed["params"] and learned["params"]["pos_embed"].shape == (16, 32)
    assert unet.count_params(learned) - unet.count_params(fixed) == 16 * 32


def test_text_cross_attention_shapes():
    """The DiT as TextUNet's denoiser: every block attends to the text encoder's (embeddings, mask)."""
    x, t = _inputs()
    model = text.TextUNet(unet=dit.DiT(**TINY, cross_attention=True),
                          encoder=text.TextEncoder(vocab_size=9, max_length=4, width=16, depth=1, num_heads=2))
    tokens = jnp.array([[1, 4, 5, 0], [1, 0, 0, 0]], jnp.int32)
    params, out = _abstract(model, x, t, tokens)
    assert out.shape == (B, H, W, C)
    cross = params["params"]["unet"]["block_1"]["cross_attn"]
    assert cross["k"]["kernel"].shape == (16, 32) and cross["proj"]["kernel"].shape == (32, 32)


# ----- adaLN-Zero: identity blocks, zero output -----

@pytest.mark.parametrize("with_context", [False, True])
def test_block_is_the_identity_at_init(with_context):
    keys = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(keys[0], (B, 16, 32))
    c = jax.random.normal(keys[1], (B, 32))
    context = (jax.random.normal(keys[2], (B, 5, 16)), jnp.array([[True] * 5, [True, True, False, False, False]]))
    block = dit.DiTBlock(num_heads=2)
    context = context if with_context else None
    out = jax.jit(lambda: block.apply(block.init(jax.random.key(0), x, c, context), x, c, context))()
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_fresh_model_outputs_exactly_zero(tiny_model, apply_fn):
    model, params = tiny_model
    x, t = _inputs()
    out = apply_fn(params, x, t, jnp.array([1, 2]))
    assert np.all(np.asarray(out) == 0.0)
    head = params["params"]["final_layer"]
    assert not np.any(head["linear"]["kernel"]) and not np.any(head["adaLN_modulation"]["kernel"])


def test_conditioning_reaches_the_output(perturbed, apply_fn):
    model, params = perturbed
    x, t = _inputs()
    out = np.asarray(apply_fn(params, x, t, jnp.array([0, 1])))
    assert np.abs(out).mean() > 1e-3
    assert np.abs(out - np.asarray(apply_fn(params, x, t + 100, jnp.array([0, 1])))).max() > 1e-4
    assert np.abs(out - np.asarray(apply_fn(params, x, t, jnp.array([2, 2])))).max() > 1e-4
    null = jnp.full((B,), model.null_label, jnp.int32)
    np.testing.assert_array_equal(np.asarray(apply_fn(params, x, t)), np.asarray(apply_fn(params, x, t, null)))


def test_learned_table_equal_to_sincos_gives_the_same_output(perturbed):
    """The fixed embedding is added to the patch embeddings: a learned table holding its values acts the same."""
    model, params = perturbed
    x, t = _inputs()
    table = jnp.asarray(dit.sincos_pos_embed(32, H // 2, W // 2), jnp.float32)
    learned = {"params": {**params["params"], "pos_embed": table}}
    out = model.apply(params, x, t)
    np.testing.assert_allclose(model.clone(pos_embed="learned").apply(learned, x, t), out, rtol=1e-6, atol=1e-6)


def test_remat_same_outputs_and_gradients(perturbed):
    model, params = perturbed
    x, t = _inputs()

    def loss_and_grad(m):
        return jax.jit(jax.value_and_grad(lambda p: jnp.mean(m.apply(p, x, t) ** 2)))(params)

    (l0, g0), (l1, g1) = loss_and_grad(model), loss_and_grad(model.clone(remat=True))
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def _numpy_dit(params, x, t, y, depth, num_heads, p):
    """The DiT forward of Peebles & Xie (their released models.py) written out in float64 numpy from the params:
    patches, sin-cos positions, timestep MLP + label, adaLN-Zero blocks, final layer, unpatchify."""
    P = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["params"])
    x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
    b, h, w, ch = x.shape
    gh, gw = h // p, w // p

    def dense(layer, v):
        return v @ layer["kernel"] + layer["bias"]

    def silu(v):
        return v / (1 + np.exp(-v))

    def layer_norm(v):
        return (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-6)

    def gelu_tanh(v):
        return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))

    tokens = x.reshape(b, gh, p, gw, p, ch).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, p * p * ch)
    d = P["x_embedder"]["kernel"].shape[1]
    hs = dense(P["x_embedder"], tokens) + dit.sincos_pos_embed(d, gh, gw)[None]
    half = P["t_embedder_0"]["kernel"].shape[0] // 2  # the frequency features' width, read from the params
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / half)
    temb = np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], axis=1)
    c = dense(P["t_embedder_1"], silu(dense(P["t_embedder_0"], temb))) + P["label_emb"]["embedding"][y]
    for i in range(depth):
        blk = P[f"block_{i}"]
        shift1, scale1, gate1, shift2, scale2, gate2 = np.split(dense(blk["adaLN_modulation"], silu(c)), 6, axis=-1)
        a = layer_norm(hs) * (1 + scale1[:, None]) + shift1[:, None]
        q, k, v = (m.reshape(b, gh * gw, num_heads, -1) for m in np.split(dense(blk["attn_qkv"], a), 3, axis=-1))
        logits = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(q.shape[-1])
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        attended = np.einsum("bnqk,bknd->bqnd", weights, v).reshape(b, gh * gw, d)
        hs = hs + gate1[:, None] * dense(blk["attn_proj"], attended)
        m = layer_norm(hs) * (1 + scale2[:, None]) + shift2[:, None]
        hs = hs + gate2[:, None] * dense(blk["mlp_fc2"], gelu_tanh(dense(blk["mlp_fc1"], m)))
    fin = P["final_layer"]
    shift, scale = np.split(dense(fin["adaLN_modulation"], silu(c)), 2, axis=-1)
    out = dense(fin["linear"], layer_norm(hs) * (1 + scale[:, None]) + shift[:, None])
    return out.reshape(b, gh, gw, p, p, -1).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def test_forward_matches_the_reference_in_float64(perturbed, apply_fn):
    """The whole network, every zero-initialized leaf perturbed, against `_numpy_dit` (float32 agrees to ~2e-7)."""
    model, params = perturbed
    x, t = _inputs()
    y = np.array([2, 0])
    out = np.asarray(apply_fn(params, x, t, jnp.asarray(y)))
    expected = _numpy_dit(params, x, t, y, TINY["depth"], TINY["num_heads"], TINY["patch_size"])
    assert np.abs(expected).mean() > 1e-2  # every path acts: a vanishing output would pass trivially
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


# ----- patchify and the embeddings against independent numpy -----

@pytest.mark.parametrize("p", [1, 2, 4])
def test_patchify_order_and_round_trip(p):
    x = np.random.default_rng(0).standard_normal((2, 8, 12, 3)).astype(np.float32)
    tokens = np.asarray(dit.patchify(jnp.asarray(x), p))
    gh, gw = 8 // p, 12 // p
    expected = np.zeros((2, gh * gw, p * p * 3), np.float32)
    for r in range(gh):
        for c in range(gw):
            for i in range(p):
                for j in range(p):
                    expected[:, r * gw + c, (i * p + j) * 3:(i * p + j + 1) * 3] = x[:, r * p + i, c * p + j, :]
    np.testing.assert_array_equal(tokens, expected)
    np.testing.assert_array_equal(np.asarray(dit.unpatchify(jnp.asarray(tokens), p, gh, gw)), x)


def test_sincos_pos_embed_matches_the_papers_formula_in_float64():
    """MAE's 2-D table, written out: channel k < D/4 is sin(col / 10000^(4k/D)), then cos; the second half the row."""
    D, gh, gw = 16, 3, 5
    got = dit.sincos_pos_embed(D, gh, gw)
    assert got.shape == (gh * gw, D) and got.dtype == np.float64
    q = D // 4
    for r in range(gh):
        for c in range(gw):
            for k in range(q):
                w = math.pow(10000.0, -k / q)
                row = got[r * gw + c]
                np.testing.assert_allclose([row[k], row[q + k], row[2 * q + k], row[3 * q + k]],
                                           [math.sin(c * w), math.cos(c * w), math.sin(r * w), math.cos(r * w)],
                                           rtol=0, atol=1e-12)


@pytest.mark.parametrize("dim", [256, 7])
def test_timestep_embedding_matches_numpy_float64(dim):
    t = np.array([0, 1, 37, 999], np.int64)
    half = dim // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half, dtype=np.float64) / half)
    args = t[:, None].astype(np.float64) * freqs[None]
    expected = np.concatenate([np.cos(args), np.sin(args), np.zeros((4, dim % 2))], axis=1)
    got = np.asarray(dit.timestep_embedding(jnp.asarray(t, jnp.int32), dim))
    assert got.shape == (4, dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-4)  # float32 arguments up to 999


# ----- the paper's sizes: parameters and Gflops -----

# Peebles & Xie 2023: parameters of the /2 models (their release, which counts the fixed sin-cos table) and Table 1's
# Gflops at I = 32, p = 4 (one multiply-add = one flop, as fvcore counts; XLA counts 2); Table 4: DiT-XL/2 118.6.
PAPER = {"DiT-S": (33e6, 1.4), "DiT-B": (130e6, 5.6), "DiT-L": (458e6, 19.7), "DiT-XL": (675e6, 29.1)}
EXACT = {"DiT-S": 32_865_056, "DiT-B": 130_315_808, "DiT-L": 457_840_672, "DiT-XL": 674_834_720}


def _imagenet_256(name):
    """(model, params, x, t) as abstract values: 1000 classes, learned sigma, 32x32x4 latents."""
    model = dit.preset(name, num_classes=1000, learn_sigma=True)
    x, t = jax.ShapeDtypeStruct((1, 32, 32, 4), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32)
    return model, jax.eval_shape(model.init, jax.random.key(0), x, t), x, t


def _gflops(name):
    model, params, x, t = _imagenet_256(name)
    return jax.jit(model.apply).lower(params, x, t, t).cost_analysis()["flops"] / 2e9


@pytest.mark.parametrize("size", PAPER)
def test_preset_param_counts_and_gflops_match_the_paper(size):
    model, params, _, _ = _imagenet_256(size + "/2")
    n = unet.count_params(params)
    paper_params, paper_gflops = PAPER[size]
    assert n == EXACT[size]
    assert abs(n + 256 * model.hidden_size - paper_params) <= 0.01 * paper_params  # + the sin-cos table, as theirs
    assert abs(n - paper_params) <= 0.01 * paper_params
    assert abs(_gflops(size + "/4") - paper_gflops) <= max(0.01 * paper_gflops, 0.05)  # Table 1 rounds to 0.1
    if size == "DiT-XL":
        assert abs(_gflops("DiT-XL/2") - 118.6) <= 0.01 * 118.6


# ----- errors -----

def test_bad_patch_size_names_the_sizes():
    x, t = _inputs(h=8, w=12)
    with pytest.raises(ValueError, match=r"patch size 3 .*divides the image size 8x12"):
        _abstract(dit.DiT(**{**TINY, "patch_size": 3}), x, t)
    with pytest.raises(ValueError, match=r"patch size 0"):
        _abstract(dit.DiT(**{**TINY, "patch_size": 0}), x, t)


def test_bad_fields_and_inputs():
    x, t = _inputs()
    with pytest.raises(ValueError, match=r"hidden_size \(30\) must be divisible by num_heads \(4\)"):
        _abstract(dit.DiT(**{**TINY, "hidden_size": 30, "num_heads": 4}), x, t)
    with pytest.raises(ValueError, match="divisible by 4"):
        _abstract(dit.DiT(**{**TINY, "hidden_size": 6}), x, t)
    with pytest.raises(ValueError, match=r"Unknown position embedding .*'rope'; accepted: sincos, learned"):
        _abstract(dit.DiT(**TINY, pos_embed="rope"), x, t)
    with pytest.raises(ValueError, match="no class conditioning"):
        _abstract(dit.DiT(**TINY), x, t, jnp.array([0, 1]))
    with pytest.raises(ValueError, match=r"y must have shape \[B\]"):
        _abstract(dit.DiT(**TINY, num_classes=3), x, t, jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match="t must have shape"):
        _abstract(dit.DiT(**TINY), x, t[:1])
    with pytest.raises(ValueError, match="needs context"):
        _abstract(dit.DiT(**TINY, cross_attention=True), x, t)
    with pytest.raises(ValueError, match="NHWC"):
        _abstract(dit.DiT(**TINY), x[0], t)


def test_presets_by_name():
    assert dit.preset("DiT-XL/2").patch_size == 2 and dit.preset("DiT-B/8").hidden_size == 768
    assert dit.preset("mnist", num_classes=10).num_classes == 10
    for bad in ("DiT-M/2", "DiT-S/x", "mnist/2", "dit-s"):
        with pytest.raises(ValueError, match=r"Unknown DiT preset .*accepted: DiT-S, DiT-B, DiT-L, DiT-XL"):
            dit.preset(bad)


# ----- configs and training -----

def test_config_arch_selects_the_dit_and_is_validated():
    config = configs.load_config(os.path.join(EXPERIMENTS, "mnist_dit.py"))
    config_schema.validate_config(config)
    model = configs.create_model(config)
    assert isinstance(model, dit.DiT) and (model.hidden_size, model.depth, model.patch_size) == (128, 6, 4)
    assert configs.create_model(configs.apply_overrides(config, ["--config.diffusion.variance=learned_range"])
                                ).learn_sigma
    for override, message in [
        ("--config.model.arch=transformer", r"Unknown model architecture .*accepted: unet, dit, unet1d"),
        ("--config.model.pos_embed=rope", r"Unknown position embedding .*accepted: sincos, learned"),
        ("--config.model.num_heads=5", "divisible by num_heads"),
        ("--config.model.patch_size=0", "patch_size must be an integer >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            config_schema.validate_config(configs.load_config(os.path.join(EXPERIMENTS, "mnist_dit.py"), [override]))
    stale = configs.load_config(os.path.join(EXPERIMENTS, "mnist_fast.py"))
    stale.model.update(arch="dit", hidden_size=64)  # a U-Net section turned into a DiT one: ch, dropout, ... unread
    with pytest.raises(ValueError, match=r"config.model sets attn_resolutions, ch, .*which a DiT .*does not read"):
        config_schema.validate_config(stale)


def test_train_two_steps_and_sample(tmp_path):
    """A tiny class-conditional DiT with learned variance through the trainer (8 devices), then sampled."""
    config = configs.load_config(os.path.join(EXPERIMENTS, "digits_dit.py"), [
        "--config.model.hidden_size=32", "--config.model.depth=1", "--config.model.num_heads=2",
        "--config.diffusion.num_timesteps=40", "--config.diffusion.variance=learned_range",
        "--config.diffusion.loss_type=hybrid", "--config.train.batch_size=16", "--config.train.warmup_steps=1",
        "--config.train.num_steps=2", "--config.train.checkpoint_every=2", "--config.train.sample_every=0",
        "--config.train.log_every=1", "--config.sample.num_steps=3"])
    result = train.train_and_evaluate(config, str(tmp_path), progress=False)
    assert result["steps_run"] == 2 and np.isfinite(float(result["metrics"]["loss"]))
    run = runs.load_run(str(tmp_path))
    assert isinstance(run.model, dit.DiT) and run.model.learn_sigma
    images = runs.sample(run.config, run.params, jax.random.PRNGKey(0), 4, (8, 8, 1))
    assert images.shape == (4, 8, 8, 1) and np.all(np.isfinite(images))


def test_flow_matching_on_the_fsdp_mesh_trains_and_samples(tmp_path):
    """The DiT through another objective (flow matching's velocity) and the sharded step (params split along fsdp),
    then sampled with heun on the run's mesh."""
    config = configs.load_config(os.path.join(EXPERIMENTS, "digits_dit.py"), [
        "--config.model.hidden_size=32", "--config.model.depth=1", "--config.model.num_heads=2",
        "--config.train.parallelism=sharded", "--config.train.mesh.fsdp=2", "--config.train.batch_size=16",
        "--config.train.warmup_steps=1", "--config.train.num_steps=2", "--config.train.checkpoint_every=2",
        "--config.train.sample_every=0", "--config.train.log_every=1", "--config.sample.sampler=heun",
        "--config.sample.num_steps=3"])
    config.diffusion.update(objective="flow", prediction="velocity", variance="fixed_small")  # as digits_flow.py
    config.diffusion.flow = ml_collections.ConfigDict(dict(t_distribution="uniform"))
    result = train.train_and_evaluate(config, str(tmp_path), progress=False)
    assert result["steps_run"] == 2 and np.isfinite(float(result["metrics"]["loss"]))
    run = runs.load_run(str(tmp_path))
    assert isinstance(run.model.net, dit.DiT)  # fed 1000 t by flow matching's TimeScaled
    images = runs.sample(run.config, run.params, jax.random.PRNGKey(0), 4, (8, 8, 1),
                         layout=configs.create_layout(run.config))
    assert images.shape == (4, 8, 8, 1) and np.all(np.isfinite(images))


def test_edm_preconditioning_around_it_trains_and_samples(tmp_path):
    """EDM's objective (preconditioning c_skip/c_out/c_in/c_noise around the network, log-normal sigma) with the DiT
    as its network under pmap, sampled with its own heun."""
    config = configs.load_config(os.path.join(EXPERIMENTS, "digits_edm.py"), [
        "--config.train.batch_size=16", "--config.train.warmup_steps=1", "--config.train.num_steps=2",
        "--config.train.checkpoint_every=2", "--config.train.sample_every=0", "--config.train.log_every=1",
        "--config.sample.num_steps=3"])
    config.model = ml_collections.ConfigDict(dict(arch="dit", hidden_size=32, depth=1, num_heads=2, patch_size=2,
                                                  num_classes=10))
    result = train.train_and_evaluate(config, str(tmp_path), progress=False)
    assert result["steps_run"] == 2 and np.isfinite(float(result["metrics"]["loss"]))
    run = runs.load_run(str(tmp_path))
    assert isinstance(run.model.net, dit.DiT)  # inside models.EDMPreconditioned
    images = runs.sample(run.config, run.params, jax.random.PRNGKey(0), 4, (8, 8, 1))
    assert images.shape == (4, 8, 8, 1) and np.all(np.isfinite(images))


def test_a_variational_diffusion_model_trains_and_samples_with_it(tmp_path):
    """VDM's objective (continuous time, learned schedule) around the DiT: two steps, its own bits/dim-bound loss,
    sampled with ddim on the learned schedule."""
    config = configs.load_config(os.path.join(EXPERIMENTS, "digits_vdm.py"), [
        "--config.train.batch_size=16", "--config.train.warmup_steps=1", "--config.train.num_steps=2",
        "--config.train.checkpoint_every=2", "--config.train.sample_every=0", "--config.train.log_every=1",
        "--config.sample.num_steps=3"])
    config.model = ml_collections.ConfigDict(dict(arch="dit", hidden_size=32, depth=1, num_heads=2, patch_size=2,
                                                  num_classes=None))
    result = train.train_and_evaluate(config, str(tmp_path), progress=False)
    assert result["steps_run"] == 2 and np.isfinite(float(result["metrics"]["loss"]))
    run = runs.load_run(str(tmp_path))
    assert isinstance(run.model.unet, dit.DiT)  # vdm.VDM's noise-prediction network
    images = runs.sample(run.config, run.params, jax.random.PRNGKey(0), 4, (8, 8, 1))
    assert images.shape == (4, 8, 8, 1) and np.all(np.isfinite(images))
