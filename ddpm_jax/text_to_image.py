"""Text-to-image with a trained run (issue 16): prompts -> tokens -> guided sampling of latents -> decoding.

    run = runs.load_run("runs/text_pairs")
    images = text_to_image.sample(run, ["three left of eight"] * 16, jax.random.PRNGKey(0), guidance_scale=3.0)
    edited = text_to_image.img2img(run, images, ["eight left of three"] * 16, rng, strength=0.6)

Classifier-free guidance with the empty prompt as the null condition: eps = eps_empty + w (eps_text - eps_empty)
(`sampling.classifier_free_guidance`). Every sampler of `sampling.sample` works (`sampler`, `num_steps`, ...;
default: the run's config.sample). A run without an autoencoder samples pixels directly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from jax.tree_util import Partial

from ddpm_jax import configs, editing, runs, sampling, validation


def tokens(run, prompts: Sequence[str]) -> np.ndarray:
    """The prompts' tokens [N, L] for a text-conditional run; ValueError for an empty prompt, an unknown word or
    a prompt that is too long (the message lists the known words)."""
    if run.config.model.get("text", None) is None:
        raise ValueError(f"the run in {run.workdir!r} is not text-conditional (its config has no model.text): "
                         "it takes no prompt.")
    return configs.tokenizer(run.config).encode(list(prompts), allow_empty=False)


def sample(run, prompts: Sequence[str], rng, *, guidance_scale: float = 1.0, sampler: str | None = None,
           num_steps: int | None = None, spacing: str | None = None, eta: float | None = None,
           progress=None) -> np.ndarray:
    """One image per prompt: [N, H, W, C] in [-1, 1]. Sample i draws its noise from fold_in(rng, i)."""
    labels = tokens(run, prompts)
    latents = runs.sample(run.config, run.params, rng, len(prompts), run.model_shape(), sampler=sampler,
                             num_steps=num_steps, spacing=spacing, eta=eta, labels=labels,
                             guidance_scale=guidance_scale, progress=progress)
    return latents if run.codec is None else run.codec.decode(latents)


def img2img(run, images, prompts: Sequence[str], rng, *, strength: float, guidance_scale: float = 1.0,
            sampler: str | None = None, num_steps: int | None = None, spacing: str | None = None,
            eta: float | None = None) -> np.ndarray:
    """SDEdit towards the prompts: images [N, H, W, C] in [-1, 1] are encoded (posterior means), noised to
    `strength` and denoised with the prompts' guided model (`editing.img2img`), then decoded."""
    images = np.asarray(images, np.float32)
    labels = tokens(run, prompts)
    if len(labels) != len(images):
        raise ValueError(f"img2img needs one prompt per image: {len(prompts)} prompts for {len(images)} images.")
    validation.check_guidance(guidance_scale, True, True)
    options = runs.sampler_options(run.config, sampler, num_steps, spacing, eta)
    if guidance_scale == 1:
        model_fn = Partial(sampling.with_labels, run.model_fn, labels)
    else:
        model_fn = sampling.classifier_free_guidance(run.model_fn, labels, guidance_scale, run.model.null_label)
    x = images if run.codec is None else run.codec.encode(images)
    edited = np.asarray(editing.img2img(model_fn, run.sched, rng, x, strength=strength, **options))
    return edited if run.codec is None else run.codec.decode(edited)
