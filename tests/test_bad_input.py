"""Bad input, second round (issue 28): the surfaces added since the first census, tried as a new user would.

Each case and where it is tested (this file unless named):
   1. `sample --prompt` on a run without a text encoder .......... test_prompt_on_a_run_without_a_text_encoder
   2. `img2img --prompt` on a run without a text encoder ......... test_prompt_on_a_run_without_a_text_encoder
      (and the library's text_to_image.tokens on such a run)
   3. an empty prompt ............... test_text_to_image.py::test_cli_sample_and_img2img_with_prompt (CLI),
                                      test_text_to_image.py::test_tokenizer_errors (tokenizer)
   4. an unknown word in a prompt ... the same two tests
   5. a prompt that is too long ..... the same two tests
   6. an image folder that is missing ......... test_data.py::test_image_folder_errors
   7. an image folder that is empty ........... test_data.py::test_image_folder_errors
   8. an image folder holding a corrupt file .. test_image_folder_with_a_corrupt_file
      (a truncated PNG: named too) ............ test_image_folder_with_a_truncated_png
   9. img2img --input that is not an image .... test_edit_inputs_that_are_not_images_or_of_the_wrong_size
  10. inpaint --input / --mask not an image .... test_edit_inputs_that_are_not_images_or_of_the_wrong_size
  11. img2img --input of the wrong size ........ test_edit_inputs_that_are_not_images_or_of_the_wrong_size
  12. inpaint --input of the wrong size ........ test_edit_inputs_that_are_not_images_or_of_the_wrong_size
  13. --strength 0 or below .................... test_strength_outside_0_1_is_refused_before_loading,
                                                 test_sample_entry.py::test_img2img (editing.img2img)
  14. --strength above 1 ....................... the same two tests
  15. a mask of the wrong size (the message for 1 and for 3 channels) .. test_mask_of_the_wrong_size
  16. `forecast` on an image run ............... test_forecast_on_an_image_run_or_with_zero_samples,
                                                 test_forecasting.py::test_forecast_refuses_an_image_run_and_bad_arguments
  17. `forecast --num-samples 0` ............... test_forecast_on_an_image_run_or_with_zero_samples
  18. float pixels in an npz (data source; img2img input) .. test_data.py::test_bad_inputs,
                                                 test_float_or_nan_pixels_in_an_npz
  19. NaN pixels in an npz (data source; img2img input; the message says NaN and the range found)
                                                 .... test_float_or_nan_pixels_in_an_npz
  20. labels outside the classes: `sample --labels 12` on a 10-class run, refused before the checkpoint loads
      or anything compiles ..................... test_labels_outside_the_classes_are_refused_before_loading;
      the library (runs.sample), training data: test_faults.py::test_guidance_needs_a_class_conditional_model,
      test_faults.py::test_labels_outside_the_models_classes_are_refused_when_the_data_loads
  21. a U-Net asked to halve 8x8 five times ..... test_unet_asked_to_halve_8x8_five_times,
                                                 test_unet.py::test_bad_image_size (the module)
  22. a missing config file .................... test_missing_config_file
  23. a read-only output directory ............. test_read_only_output_directory
  24. SIGKILL during `sample` .................. test_sigkill_while_sample_writes_leaves_no_truncated_file
  25. `sample` while `train` writes checkpoints to the same workdir .. test_sample_while_train_writes_a_checkpoint
  26. `evaluate --num-samples 0 --bpd-examples 0` .. test_evaluate_with_nothing_to_measure_is_refused
  27. `evaluate --bpd-examples 0` without --feature-net .. test_evaluate_bpd_examples_0_without_a_feature_network_is_refused
"""

import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from ddpm_jax import checkpoint, configs, data, evaluate, runs, text_to_image, train, viz
from ddpm_jax.__main__ import main
from conftest import read_only_directory
from test_train import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "experiments", "digits.py")
TEXT = os.path.join(ROOT, "experiments", "text_digit_pairs.py")
# A bound only a hung child reaches (a child that imports the package takes a few seconds).
SUBPROCESS_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """2 steps of the tiny unconditional digits config (8x8x1), a checkpoint at step 2: its workdir."""
    workdir = str(tmp_path_factory.mktemp("run"))
    train.train_and_evaluate(tiny_config("--config.train.num_steps=2"), workdir, progress=False)
    return workdir


@pytest.fixture(scope="module")
def saved_configs(tmp_path_factory):
    """Workdirs holding only a config.json (no checkpoint): what the checks made before loading need."""
    dirs = {}
    for name, config in [("unconditional", tiny_config()),
                         ("classes", tiny_config("--config.model.num_classes=10")),
                         ("text", configs.load_config(TEXT))]:
        dirs[name] = str(tmp_path_factory.mktemp(name))
        runs.save_or_check_config(dirs[name], config)
    return dirs


@pytest.fixture
def nothing_loads(monkeypatch):
    """Loading a run, sampling or evaluating fails the test: the error must come before."""
    monkeypatch.setattr(runs, "load_run", lambda *a, **k: pytest.fail("loaded the run"))
    monkeypatch.setattr(runs, "sample", lambda *a, **k: pytest.fail("sampled"))
    monkeypatch.setattr(evaluate, "resolve_feature_network", lambda *a, **k: pytest.fail("loaded a feature net"))


def _png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def _err(capsys) -> str:
    return capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ text prompts


def test_prompt_on_a_run_without_a_text_encoder(saved_configs, nothing_loads, tmp_path, capsys):
    for name in ("unconditional", "classes"):
        workdir = saved_configs[name]
        assert main(["sample", "--workdir", workdir, "--prompt", "three left of eight", "--num", "2"]) == 2
        err = _err(capsys)
        assert f"--prompt needs a text-conditional run (a config with model.text); the run in {workdir!r} has no " \
               "text encoder: leave out --prompt" in err
        assert ("it takes --labels, class labels in [0, 10)" in err) == (name == "classes")
        assert main(["img2img", "--workdir", workdir, "--input", str(tmp_path / "in.npz"), "--prompt", "one",
                     "--out", str(tmp_path / "x.png")]) == 2
        assert "--prompt needs a text-conditional run" in _err(capsys)
    # A text-conditional run needs its prompt; inpaint takes none.
    assert main(["inpaint", "--workdir", saved_configs["text"], "--input", "in.npz", "--mask", "m.npz",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "is text-conditional, and inpaint takes no prompt: edit its images with img2img --prompt" in _err(capsys)
    assert main(["img2img", "--workdir", saved_configs["text"], "--input", "in.npz",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "is text-conditional: give --prompt" in _err(capsys)
    assert not list(tmp_path.iterdir())
    # The library: a Run whose config has no model.text takes no prompt.
    fake = runs.Run(saved_configs["unconditional"], tiny_config(), None, None, None, 0)
    with pytest.raises(ValueError, match="is not text-conditional .*it takes no prompt"):
        text_to_image.tokens(fake, ["three left of eight"])


# ------------------------------------------------------------------------------------------------ image folders


def test_image_folder_with_a_corrupt_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DDPM_JAX_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "pets"
    folder.mkdir()
    _png(folder / "a.png", np.zeros((8, 8, 3), np.uint8))
    (folder / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(OSError, match=r"cannot identify image file .*b\.png"):
        data.load_arrays(f"folder:{folder}", image_size=8)
    # Through the CLI: one error line naming the file, exit status 2, before anything compiles.
    workdir = tmp_path / "run"
    assert main(["train", "--config", DIGITS, "--workdir", str(workdir), "--config.model.num_classes=None",
                 f"--config.data.source=folder:{folder}", "--config.data.image_size=8"]) == 2
    err = _err(capsys)
    assert "error: cannot identify image file" in err and str(folder / "b.png") in err
    assert not (workdir / "checkpoints").exists() or not os.listdir(workdir / "checkpoints")


def test_image_folder_with_a_truncated_png(tmp_path, monkeypatch, capsys):
    """A PNG cut off partway opens (its header is whole) but does not decode: PIL says only "image file is
    truncated"; the error must name the file."""
    monkeypatch.setenv("DDPM_JAX_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "pets"
    folder.mkdir()
    _png(folder / "a.png", np.zeros((8, 8, 3), np.uint8))
    whole = _png(tmp_path / "whole.png", np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8))
    cut = open(whole, "rb").read()
    (folder / "b.png").write_bytes(cut[:len(cut) // 2])
    truncated = str(folder / "b.png")
    with pytest.raises(OSError) as info:
        data.load_arrays(f"folder:{folder}", image_size=8)
    assert str(info.value).startswith(f"cannot decode image file {truncated!r}: image file is truncated")
    workdir = tmp_path / "run"
    assert main(["train", "--config", DIGITS, "--workdir", str(workdir), "--config.model.num_classes=None",
                 f"--config.data.source=folder:{folder}", "--config.data.image_size=8"]) == 2
    err = _err(capsys)
    assert f"error: cannot decode image file {truncated!r}: image file is truncated" in err
    assert not (workdir / "checkpoints").exists() or not os.listdir(workdir / "checkpoints")
    assert not list((tmp_path / "cache").rglob("*.npz"))  # nothing cached


# ------------------------------------------------------------------------------------------------ img2img, inpaint


def test_edit_inputs_that_are_not_images_or_of_the_wrong_size(run, tmp_path, capsys):
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    big = _png(tmp_path / "big.png", np.zeros((16, 16), np.uint8))
    good = _png(tmp_path / "good.png", np.zeros((8, 8), np.uint8))
    out = str(tmp_path / "out" / "x.png")
    for argv, message in [
        (["img2img", "--input", str(notes)], f"cannot identify image file {str(notes)!r}"),
        (["inpaint", "--input", str(notes), "--mask", good], f"cannot identify image file {str(notes)!r}"),
        (["inpaint", "--input", good, "--mask", str(notes)], f"cannot identify image file {str(notes)!r}"),
        (["img2img", "--input", big], f"{big} holds images of shape (16, 16, 1); the model takes (8, 8, 1) (H, W, C)"),
        (["inpaint", "--input", big, "--mask", good], f"{big} holds images of shape (16, 16, 1); the model takes"),
        (["img2img", "--input", str(tmp_path / "missing.png")], "No such file or directory"),
    ]:
        assert main(argv + ["--workdir", run, "--out", out]) == 2, argv
        assert message in _err(capsys), argv
    assert not os.path.exists(os.path.dirname(out))  # no grid, no .npz


@pytest.mark.parametrize("strength", ["0", "-0.5", "1.5", "nan"])
def test_strength_outside_0_1_is_refused_before_loading(saved_configs, nothing_loads, tmp_path, capsys, strength):
    assert main(["img2img", "--workdir", saved_configs["unconditional"], "--input", "in.png", "--strength", strength,
                 "--out", str(tmp_path / "x.png")]) == 2
    assert f"error: --strength must be a number in (0.0, 1.0], got {float(strength)}." in _err(capsys)


def test_mask_of_the_wrong_size(run, tmp_path, capsys):
    np.savez(tmp_path / "wide.npz", mask=np.ones((8, 6, 1), np.float32))
    np.savez(tmp_path / "two.npz", mask=np.ones((8, 8, 2), np.float32))
    for shape, expected in [((8, 8, 1), "expected (8, 8) with 1 channel (the images are (8, 8, 1))."),
                            ((8, 8, 3), "expected (8, 8) with 1 or 3 channels (the images are (8, 8, 3)).")]:
        for name in ("wide.npz", "two.npz"):
            with pytest.raises(ValueError) as e:
                viz.read_mask(tmp_path / name, shape)
            assert str(e.value).endswith(expected) and "1 or 1" not in str(e.value)
    small = _png(tmp_path / "small.png", np.zeros((4, 4), np.uint8))
    good = _png(tmp_path / "good.png", np.zeros((8, 8), np.uint8))
    assert main(["inpaint", "--workdir", run, "--input", good, "--mask", small, "--out", str(tmp_path / "x.png")]) == 2
    assert f"{small}: the mask has shape (4, 4, 1); expected (8, 8) with 1 channel" in _err(capsys)
    assert not (tmp_path / "x.png").exists()


def test_float_or_nan_pixels_in_an_npz(run, tmp_path, capsys):
    # As a data source: pixels must be uint8 (a float array, NaN or not, is refused naming its dtype).
    for name, pixels in [("float", np.full((4, 8, 8), 0.5, np.float32)), ("nan", np.full((4, 8, 8), np.nan))]:
        np.savez(tmp_path / f"{name}.npz", x_train=pixels)
        with pytest.raises(ValueError, match=f"uint8.*{pixels.dtype}"):
            data.load_arrays(f"npz:{tmp_path / name}.npz")
    # As img2img's input: float images must be in [-1, 1], which NaN is not.
    # The message says NaN (how many) and the range of the rest; out-of-range values are named by min and max.
    images = np.zeros((2, 8, 8, 1), np.float32)
    images[1, 3, 3] = np.nan
    images[0, 0, 0] = 0.5
    np.savez(tmp_path / "in.npz", images=images)
    with pytest.raises(ValueError, match=r"float images must be in \[-1, 1\]; it holds NaN \(1 of 128 values\); "
                                         r"the finite values: min 0, max 0\.5\.$"):
        viz.read_images(tmp_path / "in.npz", (8, 8, 1))
    assert main(["img2img", "--workdir", run, "--input", str(tmp_path / "in.npz"),
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "in.npz: float images must be in [-1, 1]; it holds NaN (1 of 128 values)" in _err(capsys)
    assert not (tmp_path / "x.png").exists()
    np.savez(tmp_path / "bytes.npz", images=np.full((1, 8, 8, 1), 255.0, np.float32))
    with pytest.raises(ValueError, match=r"found min 255, max 255 \(pixels in 0\.\.255 go as uint8\)"):
        viz.read_images(tmp_path / "bytes.npz", (8, 8, 1))


# ------------------------------------------------------------------------------------------------ forecast


def test_forecast_on_an_image_run_or_with_zero_samples(run, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "f.npz")
    assert main(["forecast", "--workdir", run, "--out", out, "--num-samples", "2"]) == 2
    assert "forecast needs a run trained on a series" in _err(capsys)
    monkeypatch.setattr(runs, "load_run", lambda *a, **k: pytest.fail("loaded the run"))
    assert main(["forecast", "--workdir", run, "--out", out, "--num-samples", "0"]) == 2
    assert "error: --num-samples must be an integer >= 1, got 0." in _err(capsys)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------ labels


def test_labels_outside_the_classes_are_refused_before_loading(saved_configs, nothing_loads, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    classes = saved_configs["classes"]
    for argv, message in [
        ([classes, "--labels", "12"], "error: --labels: labels must be in [0, 10) for a model with "
                                      "config.model.num_classes = 10; 1 of 1 are outside it (min 12, max 12)."),
        ([classes, "--labels", "3,-1,9"], "--labels: labels must be in [0, 10)"),
        ([classes, "--labels", "3,x"], "--labels takes comma-separated integer class labels (e.g. --labels 3,7,1), "
                                       "got 'x' in '3,x'."),
        ([saved_configs["unconditional"], "--labels", "1"], "--labels needs a class-conditional run; this one is "
                                                            "unconditional"),
        ([saved_configs["text"], "--labels", "1"], "a text-conditional run takes --prompt, not --labels."),
    ]:
        assert main(["sample", "--workdir", argv[0], "--num", "4", "--out", out] + argv[1:]) == 2, argv
        err = _err(capsys)
        assert message in err, argv
        assert "sampling (step" not in err  # no progress bar started
    # Checked against the saved config with the command line's overrides.
    assert main(["sample", "--workdir", classes, "--labels", "12", "--config.model.num_classes=12", "--out", out]) == 2
    assert "labels must be in [0, 12)" in _err(capsys)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------ configs, outputs


def test_unet_asked_to_halve_8x8_five_times(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"image size 8x8 cannot be halved 5 times by ch_mult=\(1, 1, 1, 1, 1, 1\): "
                                         r"H and W must be multiples of 32"):
        train.train_and_evaluate(tiny_config("--config.model.ch_mult=(1, 1, 1, 1, 1, 1)"), str(tmp_path / "a"),
                                 progress=False)
    assert main(["train", "--config", DIGITS, "--workdir", str(tmp_path / "b"),
                 "--config.model.ch_mult=(1, 1, 1, 1, 1, 1)"]) == 2
    assert "error: image size 8x8 cannot be halved 5 times" in _err(capsys)
    for workdir in ("a", "b"):
        assert not os.path.exists(tmp_path / workdir / "checkpoints") or not os.listdir(
            tmp_path / workdir / "checkpoints")


def test_missing_config_file(tmp_path, capsys):
    missing = tmp_path / "no_such_experiment.py"
    assert main(["train", "--config", str(missing), "--workdir", str(tmp_path / "run")]) == 2
    err = _err(capsys)
    assert err.startswith("error: ") and str(missing) in err and "No such file or directory" in err
    assert not (tmp_path / "run").exists()


def test_read_only_output_directory(run, tmp_path, monkeypatch, capsys):
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    monkeypatch.setattr(runs, "load_run", lambda *a, **k: pytest.fail("loaded the run"))
    with read_only_directory(readonly, monkeypatch):
        for argv, purpose in [
            (["sample", "--out", str(readonly / "grid.png")], "the sample grid and its .npz go there"),
            (["img2img", "--input", "in.png", "--out", str(readonly / "sub" / "x.png")], "the grid and its .npz go"),
            (["inpaint", "--input", "in.png", "--mask", "m.png", "--out", str(readonly / "x.png")], "the grid and"),
            (["forecast", "--out", str(readonly / "f.npz")], "the forecasts, fan charts and scores go there"),
        ]:
            assert main(argv[:1] + ["--workdir", run] + argv[1:]) == 2, argv
            err = _err(capsys)
            assert f"is not writable ({str(readonly)!r} is on a read-only filesystem or lacks write permission): " \
                   f"{purpose}" in err, argv
    assert not list(readonly.iterdir())


# ------------------------------------------------------------------------------------------------ kills, concurrency


SIGKILL_MID_NPZ = """
import os, signal, sys
import numpy as np
from ddpm_jax.__main__ import _write_grid_and_npz

def killed(file, **arrays):  # the sample command's .npz: half written, then the process is killed
    file.write(b"PK\\x03\\x04 half")
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

np.savez = killed
images = np.zeros((4, 8, 8, 1), np.float32)
_write_grid_and_npz(sys.argv[1], images, images=images)
"""


def test_sigkill_while_sample_writes_leaves_no_truncated_file(tmp_path):
    """The sample command writes its grid, then its .npz (`_write_grid_and_npz`); a SIGKILL in the middle of the
    .npz leaves the complete grid and no .npz under its final name (a SIGKILL while sampling writes nothing)."""
    out = tmp_path / "grid.png"
    done = subprocess.run([sys.executable, "-c", SIGKILL_MID_NPZ, str(out)], capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert done.returncode == -signal.SIGKILL, done.stderr
    names = sorted(os.listdir(tmp_path))
    assert "grid.npz" not in names and "grid.png" in names
    assert all(n == "grid.png" or (n.startswith(".tmp-") and n.endswith(".npz")) for n in names), names
    with Image.open(out) as image:
        image.verify()


def test_sample_while_train_writes_a_checkpoint(run, tmp_path, monkeypatch, capsys):
    """`sample` on a workdir whose `train` is writing the checkpoint of step 4: it samples from step 2, the newest
    complete one; the write in flight is neither read nor disturbed, and train then finishes it."""
    workdir = str(tmp_path / "run")
    shutil.copytree(run, workdir)
    real = ocp.handlers.JsonCheckpointHandler._save_fn
    seen = {}

    async def save_fn(self, x, directory):
        # Inside the background write of step 4: sample from the same workdir, from another thread, as a
        # second process would.
        if os.path.basename(os.path.dirname(str(directory))).startswith("4.") and "rc" not in seen:
            out = str(tmp_path / "grid.png")
            thread = threading.Thread(target=lambda: seen.update(
                tmp=[n for n in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in n],
                rc=main(["sample", "--workdir", workdir, "--num", "2", "--steps", "2", "--out", out])))
            thread.start()
            thread.join()
        await real(self, x, directory)

    monkeypatch.setattr(ocp.handlers.JsonCheckpointHandler, "_save_fn", save_fn)
    result = train.train_and_evaluate(tiny_config(), workdir, progress=False)
    assert result["steps_run"] == 2
    assert seen["tmp"] and seen["rc"] == 0  # sampled while step 4 was a temporary directory
    assert "2 samples in" in capsys.readouterr().out
    assert np.load(tmp_path / "grid.npz")["images"].shape == (2, 8, 8, 1)
    assert checkpoint.restore_params(workdir)[1] == 4  # and the write in flight completed


# ------------------------------------------------------------------------------------------------ evaluate


def test_evaluate_with_nothing_to_measure_is_refused(tmp_path, nothing_loads, capsys):
    assert main(["evaluate", "--workdir", str(tmp_path), "--num-samples", "0", "--bpd-examples", "0"]) == 2
    err = _err(capsys)
    assert ("error: --num-samples 0 and --bpd-examples 0 leave nothing to evaluate: give --num-samples >= 1 (with a "
            "feature network) for FID/IS/KID/precision-recall, or --bpd-examples >= 1 (or leave it out: all images "
            "of the split) for bits/dim.") in err
    assert "computing bits/dim only" not in err
    for argv, message in [(["--num-samples", "-1"], "--num-samples must be an integer >= 0, got -1."),
                          (["--bpd-examples", "-2"], "--bpd-examples must be an integer >= 0, got -2.")]:
        assert main(["evaluate", "--workdir", str(tmp_path)] + argv) == 2
        assert message in _err(capsys)
    with pytest.raises(ValueError, match="num_samples 0 and bpd_examples 0 leave nothing to evaluate"):
        evaluate.evaluate(str(tmp_path), num_samples=0, bpd_examples=0, feature_net="classifier:x")
    assert not list(tmp_path.iterdir())  # no report


def test_evaluate_bpd_examples_0_without_a_feature_network_is_refused(tmp_path, nothing_loads, capsys):
    """--bpd-examples 0 skips bits/dim and without --feature-net there are no sample metrics: nothing would be
    measured (an empty report, exit 0 before); refused like --num-samples 0 --bpd-examples 0, before anything loads."""
    for argv in ([], ["--num-samples", "5"]):
        assert main(["evaluate", "--workdir", str(tmp_path), "--bpd-examples", "0"] + argv) == 2
        err = _err(capsys)
        assert ("error: --bpd-examples 0 without --feature-net leaves nothing to evaluate: the sample metrics need a "
                "feature network and --bpd-examples 0 skips bits/dim. Give --feature-net classifier:DIR, "
                "inception:WEIGHTS.npz or inception:packaged (with --num-samples >= 1) for "
                "FID/IS/KID/precision-recall, or --bpd-examples >= 1 (or leave it out: all images of the split) for "
                "bits/dim.") in err
        assert "computing bits/dim only" not in err
    with pytest.raises(ValueError, match="bpd_examples 0 without feature_net leaves nothing to evaluate"):
        evaluate.evaluate(str(tmp_path), num_samples=100, bpd_examples=0)
    assert not list(tmp_path.iterdir())  # no report
