"""Post-hoc EMA in training, on a tiny digits run: the power-function EMAs of the train state against their closed
form over the run's params, unchanged params, snapshots, exact resume, the sharded layout, the `ema` command and
sampling from a reconstruction, and the config errors."""

import os

import jax
import numpy as np
import pytest
from scipy import integrate

from ddpm_jax import checkpoint, config_schema, configs, evaluate, posthoc_ema, runs, train
from ddpm_jax.__main__ import main

TINY = [
    "--config.model.ch=32", "--config.model.ch_mult=(1,)", "--config.model.num_res_blocks=1",
    "--config.model.attn_resolutions=()", "--config.diffusion.num_timesteps=40",
    "--config.train.batch_size=16", "--config.train.warmup_steps=2", "--config.train.sample_every=0",
    "--config.train.log_every=1", "--config.sample.num_steps=5", "--config.train.num_steps=4",
    "--config.train.checkpoint_every=1", "--config.train.keep_checkpoints=4", "--config.train.checkpoint_if_busy=wait",
    "--config.model.num_classes=None", "--config.train.label_dropout=0.0",
]
POSTHOC = "--config.train.posthoc_ema={'sigma_rels': (0.05, 0.1), 'snapshot_every': 2}"


def tiny_config(*overrides):
    return configs.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", "digits.py"),
                               TINY + list(overrides))


def _equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def posthoc_run(tmp_path_factory):
    """4 steps on 8 devices (pmap) with post-hoc EMAs of sigma_rel 0.05 and 0.10, snapshots every 2 steps and a
    checkpoint at every step (so each step's raw params can be read back)."""
    config = tiny_config(POSTHOC)
    workdir = str(tmp_path_factory.mktemp("posthoc"))
    return config, train.train_and_evaluate(config, workdir, progress=False), workdir


def test_the_state_emas_are_the_profile_weighted_sums_of_the_params(posthoc_run):
    _, result, workdir = posthoc_run
    state = result["state"]
    thetas = [checkpoint.restore_params(workdir, ema=False, step=s)[0] for s in (1, 2, 3, 4)]
    assert _equal(thetas[-1], state.params)
    for ema, sigma_rel in zip(state.posthoc_ema, (0.05, 0.10)):
        gamma = float(posthoc_ema.std_to_exp(sigma_rel))
        weights = [integrate.quad(lambda tau: (gamma + 1) * tau ** gamma / 4 ** (gamma + 1), i - 1, i)[0]
                   for i in (1, 2, 3, 4)]
        expected = jax.tree_util.tree_map(lambda *xs: sum(w * np.float64(x) for w, x in zip(weights, xs)), *thetas)
        for got, want in zip(jax.tree_util.tree_leaves(ema), jax.tree_util.tree_leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The snapshots hold the state's EMAs of their step, and survive the checkpoints' rotation.
    assert [s.step for s in posthoc_ema.snapshots(workdir)] == [2, 4]
    tree, meta = posthoc_ema._read_tree(posthoc_ema.snapshot_path(workdir, 4))
    np.testing.assert_allclose(meta["sigma_rels"], [0.05, 0.10])
    assert _equal([tree["0"], tree["1"]], state.posthoc_ema)


def test_off_it_changes_nothing_and_on_it_changes_no_params(posthoc_run, tmp_path):
    config, result, _ = posthoc_run
    off = train.train_and_evaluate(tiny_config(), str(tmp_path), progress=False)
    assert off["state"].posthoc_ema is None
    for field in ("params", "ema_params", "opt_state", "step", "rng"):
        assert _equal(getattr(off["state"], field), getattr(result["state"], field)), field
    # Switching it on (or off) in an existing run is refused: its EMAs would start mid-run.
    with pytest.raises(ValueError, match=r"train.posthoc_ema.sigma_rels: saved None, now \(0.05, 0.1\)"):
        train.train_and_evaluate(config, str(tmp_path), progress=False)


def test_exact_resume_and_the_sharded_layout(posthoc_run, tmp_path):
    config, ref, _ = posthoc_run
    first = train.train_and_evaluate(config, str(tmp_path / "resumed"), stop_after=3, progress=False)
    assert first["step"] == 3
    resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"), progress=False)
    assert resumed["steps_run"] == 1 and _equal(resumed["state"].posthoc_ema, ref["state"].posthoc_ema)
    assert [s.step for s in posthoc_ema.snapshots(str(tmp_path / "resumed"))] == [2, 4]

    sharded = train.train_and_evaluate(
        tiny_config(POSTHOC, "--config.train.parallelism=sharded", "--config.train.mesh.data=2",
                    "--config.train.mesh.fsdp=4"), str(tmp_path / "sharded"), progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(sharded["state"].posthoc_ema),
                    jax.tree_util.tree_leaves(ref["state"].posthoc_ema)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-5)


def test_ema_command_then_sample_and_load_run(posthoc_run, tmp_path, capsys):
    _, _, workdir = posthoc_run
    assert main(["ema", "--workdir", workdir, "--sigma-rel", "0.07"]) == 0
    out = capsys.readouterr().out
    assert "sigma_rel 0.07 at step 4 from 4 snapshot EMAs" in out and "--sigma-rel 0.07" in out
    run = runs.load_run(workdir, sigma_rel=0.07)
    expected, info = posthoc_ema.reconstruct(workdir, 0.07)
    assert run.step == 4 and _equal(run.params, expected) and info["profile_error"] < 0.1
    grid = str(tmp_path / "grid.png")
    assert main(["sample", "--workdir", workdir, "--sigma-rel", "0.07", "--num", "8", "--steps", "2",
                 "--out", grid]) == 0
    assert os.path.exists(grid)
    report = evaluate.evaluate(workdir, sigma_rel=0.07, num_samples=0, bpd_examples=8, progress=False)
    assert report["params"] == "posthoc_ema sigma_rel=0.07" and report["step"] == 4
    assert report["path"] == os.path.join(workdir, "eval_4_sigma_rel_0.07.json") and np.isfinite(report["metrics"]["bpd"])
    # Errors: a sigma_rel two snapshots cannot give, one not made yet, two kinds of params at once.
    assert main(["ema", "--workdir", workdir, "--sigma-rel", "0.25"]) == 2
    assert "they give sigma_rel in [" in capsys.readouterr().err
    assert main(["sample", "--workdir", workdir, "--sigma-rel", "0.09", "--out", grid]) == 2
    assert "ema --workdir" in capsys.readouterr().err
    assert main(["sample", "--workdir", workdir, "--sigma-rel", "0.07", "--raw-params", "--out", grid]) == 2
    assert "choose one of the params" in capsys.readouterr().err


@pytest.mark.parametrize("section, message", [
    ("{'sigma_rels': (0.05, 0.05), 'snapshot_every': 2}", "distinct numbers"),
    ("{'sigma_rels': (0.05, 0.3), 'snapshot_every': 2}", r"sigma_rels must be a number in \(0.0, 0.289\)"),
    ("{'sigma_rels': (0.05, 0.1)}", "must be None"),
    ("{'sigma_rels': (0.05, 0.1), 'snapshot_every': 0}", "snapshot_every must be an integer >= 1"),
])
def test_bad_posthoc_configs(section, message):
    with pytest.raises(ValueError, match=message):
        config_schema.validate_config(tiny_config(f"--config.train.posthoc_ema={section}"))
