"""Text-to-image latent diffusion (issue 16): tokenizer, text encoder, cross-attention masks, the autoencoder,
the captioned digit pairs, the guidance formula with the empty prompt, the null condition in training, and a tiny
end to end run (both stages, resume, sampling with guidance, img2img, the CLI and its errors)."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddpm_jax import __main__ as cli
from ddpm_jax import configs, data, latent, runs, sampling, text_pairs, text_to_image, train
from ddpm_jax.models import autoencoder, dit, text, unet

VOCAB = text.build_vocabulary(["three left of eight", "eight right of three", "one left of two"])


def test_tokenizer_shapes_and_special_tokens():
    tok = text.Tokenizer(VOCAB, max_length=6)
    assert VOCAB == ("eight", "left", "of", "one", "right", "three", "two")
    ids = tok.encode(["three left of eight", "", "One  LEFT of two"])
    assert ids.shape == (3, 6) and ids.dtype == np.int32
    assert (ids[:, 0] == text.BOS).all()
    np.testing.assert_array_equal(ids[1], tok.null_tokens)
    assert tok.decode(ids) == ["three left of eight", "", "one left of two"]
    assert (ids[0, 5:] == text.PAD).all() and (ids[0, 1:5] >= 2).all()


@pytest.mark.parametrize("prompt, allow_empty, message", [
    ("three above eight", True, "unknown word(s) 'above'; the model knows 7 words: eight, left, of"),
    ("", False, "the prompt is empty"),
    ("three left of eight of two", True, "has 6 words; the text encoder takes at most 5"),
])
def test_tokenizer_errors(prompt, allow_empty, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        text.Tokenizer(VOCAB, max_length=6).encode([prompt], allow_empty=allow_empty)


def test_text_encoder_shapes_and_padding_mask():
    tok = text.Tokenizer(VOCAB, max_length=6)
    enc = text.TextEncoder(vocab_size=tok.vocab_size, max_length=6, width=16, depth=1, num_heads=2)
    ids = tok.encode(["three left of eight", "one left of two", ""])
    params = enc.init(jax.random.PRNGKey(0), ids)
    emb, mask = enc.apply(params, ids)
    assert emb.shape == (3, 6, 16) and mask.shape == (3, 6) and mask.dtype == bool
    np.testing.assert_array_equal(mask, ids != text.PAD)
    # Real tokens never attend to padding: what sits in the padded positions does not change them.
    other = ids.copy()
    other[:, 5] = 3  # a word in the last (padded) position, its mask then True: compare only rows' real tokens
    params2 = jax.tree_util.tree_map(lambda x: x, params)
    params2["params"]["token_emb"]["embedding"] = params["params"]["token_emb"]["embedding"].at[text.PAD].add(5.0)
    emb2, _ = enc.apply(params2, ids)
    np.testing.assert_allclose(np.where(mask[..., None], emb2, 0), np.where(mask[..., None], emb, 0), atol=1e-5)
    with pytest.raises(ValueError, match=r"tokens must be \[B, 6\]"):
        enc.apply(params, ids[:, :4])


def test_cross_attention_ignores_masked_tokens_and_starts_at_identity():
    block = unet.CrossAttnBlock(num_heads=2, norm_groups=8)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 16))
    ctx = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 12))
    mask = jnp.array([[True, True, False, False, False], [True, False, False, False, False]])
    params = block.init(jax.random.PRNGKey(2), x, ctx, mask)
    np.testing.assert_array_equal(block.apply(params, x, ctx, mask), x)  # zero-initialized output projection
    params = jax.tree_util.tree_map(lambda p: p + 0.1, params)
    out = block.apply(params, x, ctx, mask)
    changed = ctx.at[:, 2:].set(100.0).at[1, 1].set(-7.0)  # only masked positions change
    np.testing.assert_allclose(block.apply(params, x, changed, mask), out, atol=1e-5)
    assert not np.allclose(block.apply(params, x, ctx.at[0, 0].set(3.0), mask), out)


def test_cross_attention_positions_tell_identical_pixels_apart():
    # Every pixel the same: without positions every query is the same, so every pixel reads the same words; with
    # them each pixel's query differs and so does what it reads.
    x = jnp.ones((1, 2, 4, 16)) * jnp.arange(16.0)
    ctx = jax.random.normal(jax.random.PRNGKey(1), (1, 5, 12))
    mask = jnp.ones((1, 5), bool)
    for positions in (False, True):
        block = unet.CrossAttnBlock(num_heads=2, norm_groups=8, positions=positions)
        params = block.init(jax.random.PRNGKey(2), x, ctx, mask)
        names = set(params["params"])
        assert ("pos_emb" in names) == positions
        if positions:
            assert params["params"]["pos_emb"].shape == (2, 4, 16)
        params["params"]["proj_out"]["kernel"] = jnp.eye(16)  # off the zero init: out = x + attention
        out = np.asarray(block.apply(params, x, ctx, mask)).reshape(8, 16)
        assert np.allclose(out, out[:1], atol=1e-5) != positions


def _text_unet(max_length=6):
    tok = text.Tokenizer(VOCAB, max_length)
    net = unet.tiny(num_heads=2, cross_attention=True, dropout=0.0, norm_groups=8)
    return tok, text.TextUNet(unet=net, encoder=text.TextEncoder(vocab_size=tok.vocab_size, max_length=max_length,
                                                                  width=16, depth=1, num_heads=2))


def test_text_unet_shapes_params_and_null_condition():
    tok, model = _text_unet()
    x, t = jnp.ones((3, 8, 8, 3)), jnp.array([1, 5, 9])
    ids = tok.encode(["three left of eight", "", "one left of two"])
    params = model.init(jax.random.PRNGKey(0), x, t, ids)
    names = set(params["params"]["unet"])
    assert {"down_1_attn_0_cross", "mid_attn_1_cross", "up_1_attn_1_cross"} <= names
    assert set(params["params"]) == {"unet", "encoder"}
    params = jax.tree_util.tree_map(lambda p: p + 0.01, params)  # off the zero init
    out = model.apply(params, x, t, ids)
    assert out.shape == (3, 8, 8, 3)
    assert model.null_label == tok.null_tokens
    np.testing.assert_allclose(model.apply(params, x, t), model.apply(params, x, t, tok.encode(["", "", ""])))
    with pytest.raises(ValueError, match="needs context"):
        unet.tiny(cross_attention=True).init(jax.random.PRNGKey(0), x, t)
    # Without cross_attention the U-Net's parameters are the ones it always had.
    plain = jax.eval_shape(unet.tiny().init, jax.random.PRNGKey(0), x, t)
    assert not any(n.endswith("_cross") for n in plain["params"])


def test_guidance_formula_with_the_empty_prompt():
    tok = text.Tokenizer(VOCAB, 6)
    ids = jnp.asarray(tok.encode(["three left of eight", "one left of two"]))
    null = tok.null_tokens

    def model_fn(x, t, y):  # a "model" whose output depends on the prompt: the token sum per example
        return x + y.sum(-1).astype(jnp.float32)[:, None, None, None]

    x, t = jnp.zeros((2, 2, 2, 1)), jnp.zeros((2,), jnp.int32)
    w = 3.0
    guided = sampling.classifier_free_guidance(model_fn, ids, w, null)(x, t)
    eps_text, eps_empty = model_fn(x, t, ids), model_fn(x, t, jnp.broadcast_to(jnp.asarray(null), ids.shape))
    np.testing.assert_allclose(guided, eps_empty + w * (eps_text - eps_empty), rtol=1e-6)


def test_autoencoder_shapes_kl_and_scale():
    ae = autoencoder.Autoencoder(ch=16, ch_mult=(1, 2), latent_channels=3, norm_groups=4)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 16, 1), minval=-1, maxval=1)
    noise = jnp.zeros((2, 4, 8, 3))
    params = ae.init(jax.random.PRNGKey(1), x, noise)
    rec, mean, logvar = ae.apply(params, x, noise)
    assert rec.shape == x.shape and mean.shape == logvar.shape == (2, 4, 8, 3)
    assert ae.latent_shape((8, 16, 1)) == (4, 8, 3)
    np.testing.assert_allclose(autoencoder.kl_divergence(jnp.zeros((2, 3)), jnp.zeros((2, 3))), 0.0)
    np.testing.assert_allclose(autoencoder.kl_divergence(jnp.ones((1, 4)), jnp.zeros((1, 4))), 2.0)  # 4 * 1/2
    loss, aux = autoencoder.autoencoder_loss(ae, params, x, noise, kl_weight=0.5)
    np.testing.assert_allclose(loss, jnp.mean(jnp.sum(jnp.square(rec - x), (1, 2, 3)) + 0.5 * aux["kl"]), rtol=1e-5)
    with pytest.raises(ValueError, match="not divisible by the autoencoder's factor 2"):
        ae.latent_shape((7, 16, 1))
    z = np.random.default_rng(0).normal(0, 4.0, (1000, 4))
    assert abs(latent.scale_factor(z) - 0.25) < 0.01


def test_digit_pairs_hold_out_pairs_and_caption_both_templates():
    train_set = data.load_arrays("pairs:digits", "train")
    test_set = data.load_arrays("pairs:digits", "test")
    assert train_set.images.shape == (text_pairs.TRAIN_SIZE, 8, 16, 1) and train_set.max_value == 16
    assert test_set.images.shape == (text_pairs.TEST_SIZE, 8, 16, 1)
    assert not text_pairs.held_out(train_set.labels[:, 0], train_set.labels[:, 1]).any()
    assert text_pairs.held_out(test_set.labels[:, 0], test_set.labels[:, 1]).any()
    assert text_pairs.caption(3, 8, 0) == "three left of eight" and text_pairs.caption(3, 8, 1) == "eight right of three"
    assert {c.split()[1] for c in train_set.captions} == {"left", "right"}
    for c, (a, b) in zip(train_set.captions[:50], train_set.labels[:50]):
        first, side, _, second = c.split()
        left, right = (first, second) if side == "left" else (second, first)
        assert (text_pairs.NUMBER_WORDS[a], text_pairs.NUMBER_WORDS[b]) == (left, right)
    assert data.image_shape("pairs:digits") == (8, 16, 1)
    tok = text.Tokenizer(text.build_vocabulary(train_set.captions), 6)
    pipe = data.make_iterator(train_set._replace(labels=tok.encode(train_set.captions)), global_batch_size=16,
                              seed=0, num_devices=8, prefetch=0)
    batch = next(pipe)
    assert batch["image"].shape == (8, 2, 8, 16, 1) and batch["label"].shape == (8, 2, 6)


def test_label_dropout_gives_the_null_condition():
    tok = text.Tokenizer(VOCAB, 6)
    ids = np.broadcast_to(tok.encode(["three left of eight"]), (64, 6))
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(0), jnp.arange(64))
    y = np.asarray(train.drop_condition(jnp.asarray(ids), tok.null_tokens, 0.3, keys))
    dropped, kept = (y == np.asarray(tok.null_tokens)).all(-1), (y == ids[0]).all(-1)
    assert (dropped ^ kept).all() and 5 < dropped.sum() < 35
    labels = jnp.arange(64) % 10  # class labels: the same function, the null label an int
    np.testing.assert_array_equal(np.asarray(train.drop_condition(labels, 10, 0.3, keys)) == 10, dropped)


TINY = [
    "--config.model.ch=32", "--config.model.ch_mult=(1,)", "--config.model.attn_resolutions=(4,)",
    "--config.model.text.width=16", "--config.model.text.depth=1", "--config.model.text.num_heads=2",
    "--config.model.num_heads=2", "--config.diffusion.num_timesteps=40",
    "--config.autoencoder.ch=8", "--config.autoencoder.norm_groups=4", "--config.autoencoder.latent_channels=2",
    "--config.autoencoder.train.num_steps=3", "--config.autoencoder.train.batch_size=16",
    "--config.autoencoder.train.log_every=1", "--config.autoencoder.train.warmup_steps=1",
    "--config.train.num_steps=3", "--config.train.batch_size=16", "--config.train.warmup_steps=1",
    "--config.train.log_every=1", "--config.train.sample_every=3", "--config.sample.num_steps=4",
    "--config.sample.num_images=8",
]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("text_run"))
    config = configs.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments",
                                              "text_digit_pairs.py"), TINY)
    first = train.train_and_evaluate(config, workdir, progress=False, stop_after=2)  # stage 1, interrupted
    assert first["step"] == 2 and latent.read_report(workdir) is None
    config = configs.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments",
                                              "text_digit_pairs.py"), TINY)
    result = train.train_and_evaluate(config, workdir, progress=False)  # resumes stage 1, then stage 2
    assert result["step"] == 3 and os.path.exists(os.path.join(workdir, "samples", "step_0000003.png"))
    return workdir


def test_tiny_run_trains_both_stages_and_samples_with_guidance(text_run):
    report = latent.read_report(text_run)
    assert report["latent_shape"] == [4, 8, 2] and report["scale_factor"] > 0
    run = runs.load_run(text_run)
    assert run.codec is not None and run.model_shape() == (4, 8, 2) and run.image_shape() == (8, 16, 1)
    assert configs.tokenizer(run.config).vocabulary == text.build_vocabulary(text_pairs.NUMBER_WORDS +
                                                                            ("left", "right", "of"))
    prompts = ["three left of eight", "eight right of three"]
    images = text_to_image.sample(run, prompts, jax.random.PRNGKey(0), guidance_scale=3.0, sampler="ddim",
                                  num_steps=4)
    assert images.shape == (2, 8, 16, 1) and np.abs(images).max() <= 1.0
    again = text_to_image.sample(run, prompts, jax.random.PRNGKey(0), guidance_scale=3.0, sampler="ddim",
                                 num_steps=4)
    np.testing.assert_array_equal(images, again)
    edited = text_to_image.img2img(run, images, ["one left of two"] * 2, jax.random.PRNGKey(1), strength=0.5,
                                   guidance_scale=2.0)
    assert edited.shape == images.shape
    with pytest.raises(ValueError, match="unknown word"):
        text_to_image.sample(run, ["three above eight"], jax.random.PRNGKey(0))


def test_cli_sample_and_img2img_with_prompt(text_run, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert cli.main(["sample", "--workdir", text_run, "--prompt", "three left of eight", "--num", "4",
                     "--guidance", "3.0", "--steps", "3", "--out", out]) == 0
    with np.load(str(tmp_path / "x.npz")) as f:
        assert f["images"].shape == (4, 8, 16, 1) and str(f["prompt"]) == "three left of eight"
        assert f["images"].min() >= -1 and f["images"].max() <= 1
    edit = str(tmp_path / "edit.png")
    assert cli.main(["img2img", "--workdir", text_run, "--input", str(tmp_path / "x.npz"), "--prompt",
                     "one left of two", "--strength", "0.6", "--guidance", "2", "--steps", "3", "--out", edit]) == 0
    capsys.readouterr()
    for argv, message in [
        (["--prompt", "three above eight"], "unknown word(s) 'above'"),
        (["--prompt", ""], "the prompt is empty"),
        (["--prompt", "three left of eight " * 3], "the text encoder takes at most 7"),
        ([], "is text-conditional: give --prompt"),
    ]:
        assert cli.main(["sample", "--workdir", text_run, "--num", "2", "--out", out] + argv) == 2
        assert message in capsys.readouterr().err


def test_mnist_pairs_config_builds_for_28x56_canvases():
    config = configs.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", "text_mnist_pairs.py"))
    config.model.text.vocabulary = text.build_vocabulary(text_pairs.NUMBER_WORDS + ("left", "right", "of"))
    ae, model = configs.create_autoencoder(config), configs.create_model(config)
    assert ae.latent_shape((28, 56, 1)) == (14, 28, 4)
    tokens = jnp.zeros((1, 8), jnp.int32).at[:, 0].set(text.BOS)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 14, 28, 4)), jnp.zeros((1,), jnp.int32),
                            tokens)
    assert "up_1_attn_0_cross" in shapes["params"]["unet"]


def test_a_dit_denoiser_runs_the_whole_pipeline(tmp_path):
    """The DiT (cross-attention to the prompt in every block) as the second stage: both stages train, and the
    prompt pipeline samples from it with guidance."""
    workdir = str(tmp_path / "run")
    config = configs.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments",
                                              "text_digit_pairs.py"), TINY)
    config.model = ml_collections.ConfigDict(dict(arch="dit", hidden_size=16, depth=1, num_heads=2, patch_size=2,
                                                  text=config.model.text.to_dict()))
    result = train.train_and_evaluate(config, workdir, progress=False)
    assert result["step"] == 3 and np.isfinite(float(result["metrics"]["loss"]))
    run = runs.load_run(workdir)
    assert isinstance(run.model.unet, dit.DiT) and run.model.unet.cross_attention
    images = text_to_image.sample(run, ["three left of eight"], jax.random.PRNGKey(0), guidance_scale=3.0,
                                  sampler="ddim", num_steps=4)
    assert images.shape == (1, 8, 16, 1) and np.all(np.isfinite(images))
