"""Evaluation end to end on a tiny run: the dataset classifier and its feature network, bits/dim over a split
(against diffusion.bits_per_dim, on one and eight devices), evaluate() and the CLI's eval_<step>.json."""

import json
import os

import jax
import numpy as np
import pytest

from ddpm_jax import classifier, configs, data, diffusion, evaluate, functional, likelihood, runs, train
from ddpm_jax.__main__ import main

TINY = [
    "--config.model.ch=32", "--config.model.ch_mult=(1,)", "--config.model.num_res_blocks=1",
    "--config.model.attn_resolutions=()", "--config.diffusion.num_timesteps=20",
    "--config.diffusion.schedule=cosine",
    "--config.train.batch_size=16", "--config.train.num_steps=2", "--config.train.warmup_steps=1",
    "--config.train.sample_every=0", "--config.train.checkpoint_every=2", "--config.train.log_every=1",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step tiny run on digits: (config, workdir, params)."""
    config = configs.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", "digits.py"), TINY)
    workdir = str(tmp_path_factory.mktemp("runs") / "tiny")
    result = train.train_and_evaluate(config, workdir, progress=False)
    return config, workdir, result["state"].ema_params


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("classifier"))
    info = classifier.train_classifier("digits", workdir, num_steps=30, batch_size=64)
    return workdir, info


def test_classifier_feature_network(classifier_dir):
    workdir, info = classifier_dir
    assert info["num_classes"] == 10 and info["image_shape"] == [8, 8, 1] and info["feature_dim"] == 128
    assert info["test_examples"] == data.DIGITS_NUM_TEST and 0.3 < info["test_accuracy"] <= 1.0
    saved = json.load(open(os.path.join(workdir, classifier.INFO_FILE)))
    assert saved == info
    net = classifier.feature_network(workdir)
    assert net.name == info["name"] == f"classifier:digits:{info['params_hash']}"
    test = data.load_arrays("digits", "test")
    out = net(data.to_float(test.images[:5], test.max_value))
    assert out["features"].shape == (5, 128) and out["logits"].shape == (5, 10)
    assert np.all(out["features"] >= 0)  # after the ReLU
    # Batches of any size go through one compiled function (padding); the results do not depend on the batch.
    many = net(data.to_float(test.images[:300], test.max_value))
    np.testing.assert_allclose(many["logits"][:5], out["logits"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        net(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match="already holds a classifier"):
        classifier.train_classifier("digits", workdir, num_steps=1)
    assert classifier.dataset_tag("npz:/data/mnist.npz") == "npz-mnist"


def test_bits_per_dim_dataset_matches_direct_on_one_and_eight_devices(run):
    config, _, params = run
    model, sched = configs.create_model(config), configs.create_schedule(config)
    model_fn = functional.bind(model.apply, params)
    test = data.load_arrays("digits", "test")
    images = test.images[:11]  # 11 images: padded rounds on both layouts
    rng = jax.random.PRNGKey(3)
    options = dict(max_value=test.max_value, prediction=config.diffusion.prediction,
                   variance=config.diffusion.variance)
    # Through the objective's interface (as `evaluate` calls it) on 8 devices; directly on one.
    eight = configs.create_objective(config).bits_per_dim_dataset(model, params, images, rng, per_device_batch=1,
                                                                  max_value=test.max_value)
    one = likelihood.bits_per_dim_dataset(model_fn, sched, images, rng, per_device_batch=4,
                                          devices=jax.local_devices()[:1], **options)
    x = data.to_float(images, test.max_value)
    direct = np.array([
        float(diffusion.bits_per_dim(model_fn, sched, x[i:i + 1], jax.random.fold_in(rng, i),
                                     prediction=config.diffusion.prediction, variance=config.diffusion.variance)[0])
        for i in range(len(images))
    ])
    assert eight["bpd"].shape == (11,) and eight["num_examples"] == 11
    np.testing.assert_allclose(eight["bpd"], direct, rtol=1e-5)
    np.testing.assert_allclose(one["bpd"], eight["bpd"], rtol=1e-5)
    assert np.all(direct > 0) and np.all(eight["prior_bpd"] >= 0)
    assert eight["stderr"] == pytest.approx(np.std(eight["bpd"], ddof=1) / np.sqrt(11))
    assert eight["mean"] == pytest.approx(direct.mean(), rel=1e-5)


def _check_report(report, workdir, num_samples, bpd_examples):
    assert report["step"] == 2 and report["num_samples"] == num_samples and report["params"] == "ema"
    assert report["sampler"] == dict(name="ddim", num_steps=4, spacing="leading", eta=0.0, clip_denoised=True,
                                     labels="balanced (i mod num_classes)", guidance_scale=1.0)  # conditional
    m = report["metrics"]
    for key in ("fid", "is", "is_std", "kid", "kid_std", "precision", "recall", "bpd", "bpd_stderr"):
        assert np.isfinite(m[key]), key
    assert m["fid"] >= 0 and 1.0 <= m["is"] <= report["metric_settings"]["num_classes"] == 10
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert m["bpd"] > 0 and m["bpd_stderr"] > 0
    assert report["metric_settings"]["bpd_examples"] == bpd_examples
    assert report["metric_settings"]["kid_subset_size"] == min(1000, num_samples)
    assert report["wall_seconds"]["total"] > 0 and "sampling" in report["wall_seconds"]
    with open(os.path.join(workdir, "eval_2.json")) as f:
        assert json.load(f) == json.loads(json.dumps({k: v for k, v in report.items() if k != "path"}))


def test_evaluate_and_cli(run, classifier_dir, tmp_path, capsys):
    _, workdir, _ = run
    cdir, info = classifier_dir
    report = evaluate.evaluate(workdir, num_samples=32, sampler="ddim", num_steps=4, eta=0.0,
                               feature_net=f"classifier:{cdir}", bpd_examples=16, progress=False)
    assert report["feature_network"] == info["name"]
    _check_report(report, workdir, 32, 16)
    stats_dir = evaluate.default_stats_dir(workdir)
    assert report["dataset"]["stats_cache"].startswith(stats_dir) and os.path.exists(report["dataset"]["stats_cache"])
    assert report["dataset"]["reference_examples"] == data.DIGITS_NUM_TEST
    assert report["dataset"]["reference_features"] == 32
    mtime = os.path.getmtime(report["dataset"]["stats_cache"])

    # The CLI: same seed, same samples, the cached reference statistics; --bpd-examples 0 skips bits/dim.
    rc = main(["evaluate", "--workdir", workdir, "--num-samples", "32", "--sampler", "ddim", "--steps", "4",
               "--eta", "0", "--feature-net", f"classifier:{cdir}", "--bpd-examples", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "FID" in printed and "bits/dim" not in printed and info["name"] in printed
    again = json.load(open(os.path.join(workdir, "eval_2.json")))
    assert again["metrics"]["fid"] == pytest.approx(report["metrics"]["fid"], rel=1e-6)
    assert again["metrics"]["is"] == pytest.approx(report["metrics"]["is"], rel=1e-6)
    assert "bpd" not in again["metrics"] and again["num_samples"] == 32
    assert os.path.getmtime(report["dataset"]["stats_cache"]) == mtime  # the cache was reused

    # No feature network: bits/dim only, with a message; a schedule with alpha_bar_T = 0 (zero terminal SNR,
    # through a --config override) gives a clear error rather than a NaN.
    rc = main(["evaluate", "--workdir", workdir, "--bpd-examples", "8", "--config.diffusion.zero_terminal_snr=True"])
    captured = capsys.readouterr()
    assert rc == 2 and "bits/dim only" in captured.err and "not finite" in captured.err


def test_evaluate_with_classifier_free_guidance(run, classifier_dir, capsys, monkeypatch):
    """guidance_scale reaches the sampler (runs.sample, whose guidance tests/test_sampling checks) and the report,
    and is printed; a non-number is refused before anything is sampled. (The 2-step run's label embedding has not
    moved yet, so its guided samples cannot differ.)"""
    _, workdir, _ = run
    kwargs = dict(num_samples=32, sampler="ddim", num_steps=4, eta=0.0, feature_net=f"classifier:{classifier_dir[0]}",
                  bpd_examples=0, progress=False, write=False)
    plain = evaluate.evaluate(workdir, **kwargs)
    scales, sample = [], runs.sample
    monkeypatch.setattr(runs, "sample", lambda *a, **k: scales.append(k["guidance_scale"]) or sample(*a, **k))
    guided = evaluate.evaluate(workdir, guidance_scale=3.0, **kwargs)
    assert scales == [3.0] and np.isfinite(guided["metrics"]["fid"])
    assert plain["sampler"]["guidance_scale"] == 1.0 and guided["sampler"]["guidance_scale"] == 3.0
    assert "guidance 3.0" in evaluate.format_table(guided) and "guidance" not in evaluate.format_table(plain)
    assert main(["evaluate", "--workdir", workdir, "--num-samples", "8", "--feature-net",
                 f"classifier:{classifier_dir[0]}", "--bpd-examples", "0", "--guidance", "nan"]) == 2
    assert "guidance scale" in capsys.readouterr().err and scales == [3.0]
    with pytest.raises(ValueError, match="this evaluation draws no samples"):  # nothing for the scale to guide
        evaluate.evaluate(workdir, guidance_scale=2.0, num_samples=0, bpd_examples=4, progress=False, write=False)


def test_evaluate_a_sharded_run_on_its_mesh(run, classifier_dir):
    """A run whose config says parallelism "sharded" (here by override) samples and computes bits/dim on its mesh
    (data=2 x fsdp=4, the params split along fsdp): the report's metrics are pmap's, float reduction order apart
    (tests/test_sharded_eval.py measures the samples and bits/dim themselves)."""
    _, workdir, _ = run
    kwargs = dict(num_samples=16, sampler="ddim", num_steps=3, eta=0.0, feature_net=f"classifier:{classifier_dir[0]}",
                  bpd_examples=9, progress=False, write=False)
    pmap = evaluate.evaluate(workdir, **kwargs)
    mesh = evaluate.evaluate(workdir, config_overrides=["--config.train.parallelism=sharded",
                                                        "--config.train.mesh.fsdp=4"], **kwargs)
    for key in ("bpd", "bpd_prior", "bpd_decoder"):
        np.testing.assert_allclose(mesh["metrics"][key], pmap["metrics"][key], rtol=1e-5)
    for key in ("fid", "kid", "precision", "recall"):  # quantized samples: equal unless a pixel crosses a level
        np.testing.assert_allclose(mesh["metrics"][key], pmap["metrics"][key], rtol=1e-2, atol=1e-3)


def test_bad_feature_network(run):
    _, workdir, _ = run
    with pytest.raises(ValueError, match="unknown feature network"):
        evaluate.evaluate(workdir, feature_net="vgg16", num_samples=8, progress=False)
    assert main(["evaluate", "--workdir", workdir, "--feature-net", "classifier:/nonexistent"]) == 2


def test_cli_samplers_img2img_and_inpaint(run, tmp_path):
    """The sample command with a solver and a spacing; img2img and inpaint read .npz/PNG and write grid + npz."""
    _, workdir, _ = run
    out = str(tmp_path / "s.png")
    assert main(["sample", "--workdir", workdir, "--num", "4", "--sampler", "dpm++2m", "--steps", "3",
                 "--spacing", "karras", "--out", out]) == 0
    assert np.load(str(tmp_path / "s.npz"))["images"].shape == (4, 8, 8, 1)
    assert main(["sample", "--workdir", workdir, "--num", "2", "--sampler", "dpm++9m", "--out", out]) == 2
    images = data.to_float(data.load_arrays("digits", "test").images[:2], 16)
    np.savez(tmp_path / "in.npz", images=images)
    mask = np.zeros((8, 8, 1), np.float32)
    mask[:, 4:] = 1
    np.savez(tmp_path / "mask.npz", mask=mask)
    assert main(["img2img", "--workdir", workdir, "--input", str(tmp_path / "in.npz"), "--strength", "0.5",
                 "--num", "3", "--sampler", "ddim", "--steps", "4", "--out", str(tmp_path / "i.png")]) == 0
    edited = np.load(str(tmp_path / "i.npz"))
    assert edited["images"].shape == (6, 8, 8, 1) and edited["inputs"].shape == (6, 8, 8, 1)
    assert main(["inpaint", "--workdir", workdir, "--input", str(tmp_path / "in.npz"), "--mask",
                 str(tmp_path / "mask.npz"), "--sampler", "unipc", "--steps", "4", "--out", str(tmp_path / "p.png")]) == 0
    filled = np.load(str(tmp_path / "p.npz"))["images"]
    np.testing.assert_array_equal(filled[:, :, :4], images[:, :, :4])  # the kept half is the input's
    assert main(["img2img", "--workdir", workdir, "--input", str(tmp_path / "in.npz"), "--strength", "0",
                 "--out", str(tmp_path / "x.png")]) == 2
