"""Tests for ddpm_jax.models.unet: shapes of every option (eval_shape, no compute), zero-initialized outputs,
errors, the CIFAR-10 parameter count, dropout, the timestep embedding, and one training step on a tiny model."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddpm_jax.models import unet

B, H, W, C = 2, 8, 8, 3
NUM_CLASSES = 3


def _inputs(h=H, w=W, c=C, b=B):
    x = jax.random.normal(jax.random.key(1), (b, h, w, c), jnp.float32)
    t = jnp.arange(b, dtype=jnp.int32) * 37
    return x, t


def _abstract(model, x, t, y=None, **kw):
    """(params, output) as ShapeDtypeStructs: traces init + apply without computing anything."""
    return jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, t, y, **kw)[::-1])


@pytest.fixture(scope="module")
def tiny_model():
    """The shared tiny class-conditional model and its fresh params (one real init for the file)."""
    model = unet.tiny(num_classes=NUM_CLASSES)
    x, t = _inputs()
    params = jax.jit(model.init)(jax.random.key(0), x, t)
    return model, params


@pytest.fixture(scope="module")
def perturbed(tiny_model):
    """The tiny params with every all-zero kernel (conv2, proj_out, conv_out) replaced by small noise."""
    model, params = tiny_model
    rng = np.random.default_rng(7)

    def perturb(path, leaf):
        if jax.tree_util.keystr(path).endswith("['kernel']") and not np.any(leaf):
            return jnp.asarray(0.05 * rng.standard_normal(leaf.shape), leaf.dtype)
        return leaf

    return model, jax.tree_util.tree_map_with_path(perturb, params)


@pytest.fixture(scope="module")
def apply_fn(tiny_model):
    model, _ = tiny_model
    return jax.jit(model.apply, static_argnames="train")


# ----- shapes (no compute) -----

@pytest.mark.parametrize("kw, out_c", [
    (dict(), C),
    (dict(learn_sigma=True), 2 * C),
    (dict(out_channels=5), 5),
    (dict(out_channels=4, learn_sigma=True), 4),
    (dict(scale_shift_norm=True), C),
    (dict(attn_resolutions=()), C),
    (dict(attn_resolutions=(8, 4)), C),
    (dict(resamp_with_conv=False), C),
    (dict(num_heads=4), C),
    (dict(ch_mult=(1, 2, 2), num_res_blocks=2), C),
])
def test_output_shapes(kw, out_c):
    x, t = _inputs()
    params, out = _abstract(unet.tiny(**kw), x, t)
    assert out.shape == (B, H, W, out_c) and out.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))


def test_non_square_shape():
    x, t = _inputs(h=8, w=16)
    params, out = _abstract(unet.tiny(learn_sigma=True), x, t)
    assert out.shape == (B, 8, 16, 2 * C)
    # As in the reference, attention placement compares the feature-map height (4 at level 1).
    assert "down_1_attn_0" in params["params"] and "down_0_attn_0" not in params["params"]


def test_grayscale_digits_shape():
    x, t = _inputs(c=1)
    _, out = _abstract(unet.digits(), x, t)
    assert out.shape == (B, H, W, 1)


def test_class_conditioning_shapes():
    model = unet.tiny(num_classes=10)
    assert model.null_label == 10
    x, t = _inputs()
    params, out = _abstract(model, x, t, jnp.array([0, 9], jnp.int32))
    assert out.shape == (B, H, W, C)
    assert params["params"]["label_emb"]["embedding"].shape == (11, 4 * 32)
    _, out = _abstract(model, x, t, None)
    assert out.shape == (B, H, W, C)


def test_attention_placement():
    x, t = _inputs()
    params, _ = _abstract(unet.tiny(), x, t)
    names = set(params["params"])
    assert {"down_1_attn_0", "mid_attn_1", "up_1_attn_0", "up_1_attn_1"} <= names
    assert not any(n.startswith(("down_0_attn", "up_0_attn")) for n in names)
    params, _ = _abstract(unet.tiny(attn_resolutions=()), x, t)
    assert [n for n in params["params"] if "attn" in n] == ["mid_attn_1"]   # the middle always has one


def test_mixed_precision_dtype():
    x, t = _inputs()
    params, out = _abstract(unet.tiny(dtype=jnp.bfloat16), x, t)
    assert out.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))


def test_cifar10_param_count():
    x, t = _inputs(h=32, w=32, b=1)
    params = jax.eval_shape(unet.ddpm_cifar10().init, jax.random.key(0), x, t)
    assert unet.count_params(params) == 35_746_307


def test_configs_registry():
    assert {"ddpm_cifar10", "ddpm_celeba64", "digits", "tiny"} <= set(unet.CONFIGS)
    assert unet.ddpm_cifar10(dropout=0.0).dropout == 0.0   # keyword overrides reach the fields


# ----- errors -----

def test_bad_image_size():
    x, t = _inputs(h=6, w=8)
    with pytest.raises(ValueError, match=r"6x8.*multiples of 4"):
        _abstract(unet.tiny(ch_mult=(1, 2, 2)), x, t)
    x, t = _inputs(h=8, w=7)
    with pytest.raises(ValueError, match=r"8x7.*multiples of 2"):
        _abstract(unet.tiny(), x, t)


def test_patches_shape_params_and_attention_levels():
    x, t = _inputs(h=16, w=8)
    params, out = _abstract(unet.tiny(patch_size=2, attn_resolutions=(8,)), x, t)
    assert out.shape == (B, 16, 8, C)
    p = params["params"]
    assert p["conv_in"]["kernel"].shape == (3, 3, 4 * C, 32)      # 2x2 patches of C channels in
    assert p["conv_out"]["kernel"].shape == (3, 3, 32, 4 * C)     # and out
    assert "down_0_attn_0" in p and "down_1_attn_0" not in p      # levels at 8 (patched height) and 4
    with pytest.raises(ValueError, match=r"6x8 in patches of 2.*multiples of 4"):
        _abstract(unet.tiny(patch_size=2), *_inputs(h=6, w=8))
    with pytest.raises(ValueError, match="patch_size must be a positive int"):
        _abstract(unet.tiny(patch_size=0), *_inputs())


def test_space_to_depth_matches_numpy_and_inverts():
    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    y = np.asarray(unet.space_to_depth(jnp.asarray(x), 2))
    assert y.shape == (2, 2, 3, 12)
    for i, j in [(0, 0), (1, 2), (0, 1)]:  # each position holds its 2x2 patch, (row, column, channel) order
        np.testing.assert_array_equal(y[:, i, j], x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(2, 12))
    np.testing.assert_array_equal(np.asarray(unet.depth_to_space(jnp.asarray(y), 2)), x)
    np.testing.assert_array_equal(unet.space_to_depth(x, 1), x)


def test_bad_label_shape():
    x, t = _inputs()
    model = unet.tiny(num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="y must have shape"):
        _abstract(model, x, t, jnp.zeros((B, 1), jnp.int32))
    with pytest.raises(ValueError, match="y must have shape"):
        _abstract(model, x, t, jnp.zeros((B + 1,), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        _abstract(model, x, t, jnp.zeros((B,), jnp.float32))
    with pytest.raises(ValueError, match="no class conditioning"):
        _abstract(unet.tiny(), x, t, jnp.zeros((B,), jnp.int32))


def test_bad_channels_and_timesteps():
    x, t = _inputs()
    with pytest.raises(ValueError, match="32 GroupNorm groups"):
        _abstract(unet.tiny(ch=48), x, t)
    with pytest.raises(ValueError, match="t must have shape"):
        _abstract(unet.tiny(), x, t[:, None])
    with pytest.raises(ValueError, match="NHWC"):
        _abstract(unet.tiny(), x[0], t)


# ----- timestep embedding -----

@pytest.mark.parametrize("dim", [32, 128, 33])
def test_timestep_embedding_matches_numpy_float64(dim):
    t = np.array([0, 1, 7, 250, 999], np.int64)
    half = dim // 2
    freqs = np.exp(-math.log(10000) / (half - 1) * np.arange(half, dtype=np.float64))
    args = t[:, None].astype(np.float64) * freqs[None, :]
    expected = np.concatenate([np.sin(args), np.cos(args)], axis=1)
    if dim % 2:
        expected = np.pad(expected, [(0, 0), (0, 1)])
    got = unet.get_timestep_embedding(jnp.asarray(t, jnp.int32), dim)
    assert got.shape == (5, dim) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=2e-4)
    np.testing.assert_allclose(np.asarray(got)[0, :half], 0.0)          # sin(0)
    np.testing.assert_allclose(np.asarray(got)[0, half:2 * half], 1.0)  # cos(0)


# ----- real compute on the shared tiny model -----

def test_fresh_model_outputs_exactly_zero(tiny_model, apply_fn):
    _, params = tiny_model
    x, t = _inputs()
    out = apply_fn(params, x, t)
    assert out.shape == (B, H, W, C) and out.dtype == jnp.float32
    assert not np.any(np.asarray(out))
    zero_kernels = [jax.tree_util.keystr(p) for p, v in jax.tree_util.tree_leaves_with_path(params)
                    if jax.tree_util.keystr(p).endswith("['kernel']") and not np.any(v)]
    assert any("conv_out" in k for k in zero_kernels)
    assert any("proj_out" in k for k in zero_kernels)
    assert any("conv2" in k for k in zero_kernels)


def test_null_label_is_the_default(perturbed, apply_fn):
    model, params = perturbed
    x, t = _inputs()
    out_none = apply_fn(params, x, t)
    out_null = apply_fn(params, x, t, jnp.full((B,), model.null_label, jnp.int32))
    out_cls = apply_fn(params, x, t, jnp.zeros((B,), jnp.int32))
    np.testing.assert_array_equal(np.asarray(out_none), np.asarray(out_null))
    assert np.any(np.asarray(out_null) != np.asarray(out_cls))
    assert np.all(np.isfinite(np.asarray(out_cls)))


def test_dropout_only_in_training(perturbed, apply_fn):
    _, params = perturbed
    x, t = _inputs()
    k1, k2 = jax.random.key(11), jax.random.key(12)
    eval1 = np.asarray(apply_fn(params, x, t))
    eval2 = np.asarray(apply_fn(params, x, t, rngs={"dropout": k1}))
    np.testing.assert_array_equal(eval1, eval2)                # train=False ignores the dropout key
    tr1 = np.asarray(apply_fn(params, x, t, train=True, rngs={"dropout": k1}))
    tr1b = np.asarray(apply_fn(params, x, t, train=True, rngs={"dropout": k1}))
    tr2 = np.asarray(apply_fn(params, x, t, train=True, rngs={"dropout": k2}))
    np.testing.assert_array_equal(tr1, tr1b)                   # same key, same mask
    assert np.any(tr1 != eval1) and np.any(tr1 != tr2)
    with pytest.raises(Exception, match="dropout"):           # train=True needs a dropout key
        apply_fn(params, x, t, train=True)


def test_adam_steps_decrease_mse(perturbed):
    model, params = perturbed
    x, t = _inputs()
    target = jax.random.normal(jax.random.key(3), x.shape)
    y = jnp.array([0, 2], jnp.int32)
    opt = optax.adam(1e-3)

    def loss_fn(p):
        return jnp.mean((model.apply(p, x, t, y) - target) ** 2)

    @jax.jit
    def step(p, s):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss, grads

    state = opt.init(params)
    losses = []
    for i in range(3):
        params, state, loss, grads = step(params, state)
        losses.append(float(loss))
        if i == 0:   # every parameter is wired into the output
            dead = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(grads)
                    if not np.any(np.asarray(g))]
            assert not dead, dead
    assert losses[1] < losses[0] and losses[2] < losses[1], losses


def test_time_conditioning_survives_small_group_norms():
    """With one channel per group the additive time embedding is normalized away (Ho's design at ch 32); fewer
    groups or scale-shift norm keep it. Checked on a random (non-zero) model."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))

    def time_effect(**fields):
        model = unet.UNet(ch=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0, **fields)
        params = model.init(jax.random.PRNGKey(1), x, jnp.zeros((2,), jnp.int32))
        leaves, tree = jax.tree_util.tree_flatten(params)
        params = jax.tree_util.tree_unflatten(
            tree, [p + 0.1 * jax.random.normal(jax.random.PRNGKey(i), p.shape) for i, p in enumerate(leaves)])
        a = model.apply(params, x, jnp.array([1, 1]))
        b = model.apply(params, x, jnp.array([900, 900]))
        return float(jnp.abs(a - b).mean() / jnp.abs(a).mean())

    assert time_effect() < 1e-4
    assert time_effect(norm_groups=8) > 1e-2
    assert time_effect(scale_shift_norm=True) > 1e-2
    with pytest.raises(ValueError, match="norm_groups"):
        unet.UNet(ch=32, norm_groups=5).init(jax.random.PRNGKey(0), x, jnp.zeros((2,), jnp.int32))


def test_remat_same_params_outputs_and_gradients(perturbed):
    """remat=True recomputes the blocks' activations in the backward pass: identical param tree, loss and
    gradients (dropout masks included); the compiled gradient really recomputes (more FLOPs, XLA's count)."""
    model, params = perturbed
    remat_model = model.clone(remat=True, dropout=0.1)
    model = model.clone(dropout=0.1)
    x, t = _inputs(b=4)
    y = jnp.array([0, 1, 2, 3], jnp.int32)
    assert (jax.tree_util.tree_structure(params)
            == jax.tree_util.tree_structure(jax.eval_shape(remat_model.init, jax.random.key(0), x, t, y)))

    def loss_and_grad(m):
        def loss(p):
            out = m.apply(p, x, t, y, train=True, rngs={"dropout": jax.random.key(5)})
            return jnp.mean(out ** 2)
        return jax.jit(jax.value_and_grad(loss))

    (l0, g0), (l1, g1) = loss_and_grad(model)(params), loss_and_grad(remat_model)(params)
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)

    def flops(m):
        cost = loss_and_grad(m).lower(params).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    assert flops(remat_model) > 1.1 * flops(model)


@pytest.mark.parametrize("groups, shape", [(8, (3, 5, 4, 32)), (32, (2, 4, 4, 64)), (1, (2, 3, 3, 6))])
def test_group_norm_matches_float64_and_flax(groups, shape):
    """unet.GroupNorm against the definition in float64 numpy (per example and group: subtract the mean, divide by
    sqrt(var + eps), then the per-channel affine map) and against flax's nn.GroupNorm: same params, output and
    gradients. The input has a large common offset, where E[x^2] - E[x]^2 is least accurate."""
    rng = np.random.default_rng(groups)
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    ours = unet.GroupNorm(num_groups=groups)
    flax_gn = unet.nn.GroupNorm(num_groups=groups, epsilon=unet.GROUPNORM_EPS)
    params = ours.init(jax.random.key(0), x)
    assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(
        jnp.shape, flax_gn.init(jax.random.key(0), x))
    C = shape[-1]
    params = {"params": {"scale": jnp.asarray(1 + 0.1 * rng.standard_normal(C), jnp.float32),
                         "bias": jnp.asarray(0.1 * rng.standard_normal(C), jnp.float32)}}

    xg = x.astype(np.float64).reshape(shape[0], -1, groups, C // groups)
    mean = xg.mean(axis=(1, 3), keepdims=True)
    var = ((xg - mean) ** 2).mean(axis=(1, 3), keepdims=True)
    want = ((xg - mean) / np.sqrt(var + unet.GROUPNORM_EPS)).reshape(shape)
    want = want * np.asarray(params["params"]["scale"], np.float64) + np.asarray(params["params"]["bias"])
    got = np.asarray(ours.apply(params, x))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got, np.asarray(flax_gn.apply(params, x)), rtol=1e-5, atol=1e-5)

    w = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    grad = jax.grad(lambda p, x, m: jnp.sum(jnp.tanh(m.apply(p, x)) * w), argnums=(0, 1))
    (gp_ours, gx_ours), (gp_flax, gx_flax) = grad(params, x, ours), grad(params, x, flax_gn)
    np.testing.assert_allclose(np.asarray(gx_ours), np.asarray(gx_flax), rtol=1e-3, atol=1e-4)
    for k in ("scale", "bias"):
        np.testing.assert_allclose(np.asarray(gp_ours["params"][k]), np.asarray(gp_flax["params"][k]),
                                   rtol=1e-4, atol=1e-4)


def test_group_norm_bad_channels():
    with pytest.raises(ValueError, match="not divisible into 8 groups"):
        unet.GroupNorm(num_groups=8).init(jax.random.key(0), jnp.zeros((1, 4, 4, 12)))
