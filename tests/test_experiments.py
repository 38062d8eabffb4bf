"""Every experiment config loads, builds its U-Net (or text U-Net on latents) and schedule, and the paper configs
have the paper's size."""

import glob
import os

import jax
import jax.numpy as jnp
import pytest

from ddpm_jax import configs, processes, text_pairs
from ddpm_jax.models import text, unet

EXPERIMENTS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "experiments", "*.py")))
IMAGE_SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3),
                "celeb_a": (64, 64, 3)}
EXPECTED_PARAMS = {"cifar10.py": 35_746_307, "celeba64.py": 78_700_803,  # Ho et al.: 35.7M; DDIM's CelebA model
                   # the MNIST U-Net (1,191,233) with VDM's 4 Fourier-feature input channels into conv_in (3x3, 32)
                   "mnist_vdm.py": 1_191_233 + 4 * 9 * 32,
                   "forecast_co2.py": 639_041, "forecast_elnino.py": 639_041}  # the 1-D U-Net's 'series' preset


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_experiment_builds(path):
    config = configs.load_config(path)
    assert configs.load_config(path, ["--config.train.num_steps=7"]).train.num_steps == 7
    if config.model.get("text", None) is not None:  # training fills the vocabulary in from the captions
        config.model.text.vocabulary = text.build_vocabulary(text_pairs.NUMBER_WORDS + ("left", "right", "of"))
    model = configs.create_model(config)
    source = config.data.source
    if source.startswith("pairs:"):  # two digits side by side
        shape = IMAGE_SHAPES[source.removeprefix("pairs:")]
        shape = (shape[0], 2 * shape[1], shape[2])
    else:
        shape = IMAGE_SHAPES.get(source) or configs.data_shape(config)  # series: (context + horizon, C)
    if configs.create_autoencoder(config) is not None:  # latent diffusion: the U-Net sees latents
        shape = configs.create_autoencoder(config).latent_shape(shape)
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape),
                                               jnp.zeros((1,), jnp.int32)))
    sched = configs.create_schedule(config)
    if configs.objective(config) in ("flow", "edm"):  # a continuous process, the U-Net inside its wrapper
        assert isinstance(sched, (processes.RectifiedFlow, processes.EDM))
        assert model.scale == config.diffusion.num_timesteps
        model = model.net
    else:
        assert sched.num_timesteps == config.diffusion.num_timesteps
    assert model.learn_sigma == (config.diffusion.variance == "learned_range")
    expected = EXPECTED_PARAMS.get(os.path.basename(path))
    if expected:
        assert unet.count_params(params) == expected
