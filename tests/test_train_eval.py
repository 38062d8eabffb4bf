"""Evaluation during training on a tiny digits run: FID/IS in metrics.jsonl equal to `evaluate`'s, the best
checkpoint (kept by FID, across a resume, refused for another protocol), and the config errors."""

import json
import os

import jax
import numpy as np
import pytest

from ddpm_jax import (checkpoint, classifier, config_schema, configs, evaluate, runs, sample_quality, train,
                      train_eval)

TINY = [
    "--config.model.ch=32", "--config.model.ch_mult=(1,)", "--config.model.num_res_blocks=1",
    "--config.model.attn_resolutions=()", "--config.diffusion.num_timesteps=40",
    "--config.train.batch_size=16", "--config.train.warmup_steps=1", "--config.train.sample_every=0",
    "--config.train.log_every=1", "--config.train.checkpoint_every=2", "--config.sample.num_steps=3",
    "--config.train.checkpoint_if_busy=wait",  # every due checkpoint written, whatever the load: known resume steps
    "--config.train.eval_every=2", "--config.train.eval_samples=16",
]


def tiny_config(*overrides, experiment="digits.py"):
    return configs.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", experiment),
                               TINY + list(overrides))


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("classifier"))
    classifier.train_classifier("digits", workdir, num_steps=30, batch_size=64)
    return workdir


def _evals(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [line for line in map(json.loads, f) if "fid" in line]


def _best_info(workdir):
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, train_eval.BEST_DIR), async_save=False)
    try:
        return ckpt.latest_step(), ckpt.info()
    finally:
        ckpt.close()


def test_fid_and_is_are_logged_as_evaluate_measures_them(classifier_dir, tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config("--config.train.num_steps=4", f"--config.train.eval_feature_net=classifier:{classifier_dir}",
                         "--config.train.keep_best=True")
    train.train_and_evaluate(config, workdir, progress=False)
    evals = _evals(workdir)
    assert [e["step"] for e in evals] == [2, 4]
    for e in evals:
        assert e["fid"] >= 0 and 1 <= e["is"] <= 10 and e["eval_seconds"] > 0
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    # The numbers are evaluate's for the same step, samples and seed.
    report = evaluate.evaluate(workdir, step=4, num_samples=16, seed=config.seed, bpd_examples=0,
                               feature_net=f"classifier:{classifier_dir}", progress=False, write=False)
    assert report["metrics"]["fid"] == pytest.approx(evals[-1]["fid"], rel=1e-5)
    assert report["metrics"]["is"] == pytest.approx(evals[-1]["is"], rel=1e-5)
    # The best checkpoint: the step of the lowest FID, its FID and protocol inside it.
    best = min(evals, key=lambda e: e["fid"])
    step, info = _best_info(workdir)
    assert step == info["step"] == best["step"] and info["fid"] == pytest.approx(best["fid"])
    assert info["protocol"]["num_samples"] == 16 and info["protocol"]["feature_network"].startswith("classifier:")
    run = runs.load_run(workdir, best=True)
    assert run.step == best["step"]
    regular, _ = checkpoint.restore_params(workdir, step=best["step"])
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(run.params),
                                                    jax.tree_util.tree_leaves(regular)))


def test_keep_best_keeps_the_lowest_fid_across_a_resume(classifier_dir, tmp_path, monkeypatch):
    fids = iter([5.0, 3.0, 4.0])
    monkeypatch.setattr(sample_quality, "fid_and_inception_score", lambda stats, fake: (dict(fid=next(fids)), {}))
    workdir = str(tmp_path / "run")
    config = tiny_config("--config.train.num_steps=6", f"--config.train.eval_feature_net=classifier:{classifier_dir}",
                         "--config.train.keep_best=True")
    train.train_and_evaluate(config, workdir, stop_after=4, progress=False)  # evals at 2 (5.0) and 4 (3.0)
    train.train_and_evaluate(config, workdir, progress=False)  # resumed at 4: eval at 6 (4.0)
    assert [(e["step"], e["fid"]) for e in _evals(workdir)] == [(2, 5.0), (4, 3.0), (6, 4.0)]
    step, info = _best_info(workdir)
    assert step == 4 and info["step"] == 4 and info["fid"] == 3.0
    assert runs.load_run(workdir, best=True).step == 4
    # Measured another way, the kept FID does not compare: refused.
    with pytest.raises(ValueError, match="measured as .* FIDs measured differently do not compare"):
        train.train_and_evaluate(tiny_config("--config.train.num_steps=8", "--config.train.eval_samples=8",
                                             f"--config.train.eval_feature_net=classifier:{classifier_dir}",
                                             "--config.train.keep_best=True"), workdir, progress=False)


def test_no_best_checkpoint_is_a_clear_error(tmp_path):
    runs.save_or_check_config(str(tmp_path), tiny_config())  # a run (its config) that kept no best checkpoint
    with pytest.raises(FileNotFoundError, match="no best checkpoint .* config.train.keep_best"):
        runs.load_run(str(tmp_path), best=True)


def test_bad_eval_configs(classifier_dir, tmp_path):
    wrong = tmp_path / "mnist_classifier"
    wrong.mkdir()
    (wrong / classifier.INFO_FILE).write_text(json.dumps(dict(image_shape=[28, 28, 1], dataset="mnist")))
    cases = [
        ((), r"config.train.eval_feature_net \(for config.train.eval_every = 2 on 'digits'\) is not set"),
        (("--config.train.eval_feature_net=inception",), "names no feature network; accepted: 'classifier:DIR'"),
        ((f"--config.train.eval_feature_net=classifier:{tmp_path / 'none'}",), "holds no trained classifier"),
        ((f"--config.train.eval_feature_net=classifier:{wrong}",), r"takes images of shape \(28, 28, 1\) .* this "
                                                                   r"data's are \(8, 8, 1\)"),
        ((f"--config.train.eval_feature_net=inception:{tmp_path / 'w.npz'}",),
         "FID Inception weights .* not there"),
        ((f"--config.train.eval_feature_net=classifier:{classifier_dir}", "--config.train.eval_samples=1"),
         "eval_samples must be an integer >= 2"),
        (("--config.train.eval_every=0", "--config.train.keep_best=True"),
         "keep_best keeps .* set config.train.eval_every > 0"),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            config_schema.validate_config(tiny_config(*overrides))
    with pytest.raises(ValueError, match="series, latent or text-to-image run"):
        config_schema.validate_config(tiny_config(f"--config.train.eval_feature_net=classifier:{classifier_dir}",
                                                  "--config.model.ch_mult=(1, 2)", experiment="forecast_co2.py"))


def test_the_sharded_layout_logs_what_pmap_logs(classifier_dir, tmp_path):
    """Evaluation on a run's mesh (jit over data x fsdp) gives pmap's FID/IS: the same samples up to float
    reduction order, scored alike."""
    logged = {}
    for name, extra in [("pmap", []), ("fsdp", ["--config.train.parallelism=sharded", "--config.train.mesh.fsdp=2"])]:
        workdir = str(tmp_path / name)
        config = tiny_config("--config.train.num_steps=2", f"--config.train.eval_feature_net=classifier:{classifier_dir}",
                             *extra)
        train.train_and_evaluate(config, workdir, progress=False)
        logged[name] = _evals(workdir)
    assert [e["step"] for e in logged["fsdp"]] == [e["step"] for e in logged["pmap"]] == [2]
    np.testing.assert_allclose(logged["fsdp"][0]["fid"], logged["pmap"][0]["fid"], rtol=1e-3)
    np.testing.assert_allclose(logged["fsdp"][0]["is"], logged["pmap"][0]["is"], rtol=1e-3)
