"""The evaluate command: sample metrics and bits/dim of a trained run, in one report.

    python -m ddpm_jax evaluate --workdir runs/digits --num-samples 10000 --sampler ddim --steps 100 \
        --feature-net classifier:runs/classifier_digits [--bpd-examples 1000] [--split test]

    from ddpm_jax import evaluate
    report = evaluate.evaluate("runs/digits", num_samples=10000, num_steps=100,
                               feature_net="classifier:runs/classifier_digits")   # also WORKDIR/eval_<step>.json

The jobs live in their own modules: the likelihood of a split (`likelihood.bits_per_dim_dataset`), the sample
metrics and feature networks (`sample_quality`), the reference statistics and their caches (`reference_stats`).
This module loads the run (`runs.load_run`), calls them, and writes the report.

Choices made here:

* Samples come from the EMA params (unless ema=False), across all devices (`runs.sample`); sample i uses
  fold_in(fold_in(PRNGKey(seed), 0), i). Before the feature network sees them they are quantized to the
  dataset's pixel grid (256 levels, 17 for "digits"); the real images are on that grid already.
* Reference set: split `ref_split` (default: `split`) of the run's data source, cached in `stats_dir` (default
  WORKDIR/../fid_stats; see `reference_stats`).
* Bits/dim: the full VLB (prior + all T terms) of the first `bpd_examples` images (None: all) of split `split`.
  Example i of the split uses rng fold_in(fold_in(PRNGKey(seed), 1), i) for all its noise, whatever the devices
  and batch size. For a class-conditional model the likelihood is conditioned on the true labels, log p(x | y).
"""

from __future__ import annotations

import os
import json
import time
from typing import Any, Sequence

import jax
import numpy as np

from ddpm_jax import configs, data, metrics, parallel, runs, sampling
from ddpm_jax.files import check_writable, write_text
from ddpm_jax.reference_stats import default_stats_dir, reference_features
from ddpm_jax.sample_quality import (check_classifier_dataset, resolve_feature_network, sample_features,
                                     sample_metrics)
from ddpm_jax.validation import check_evaluation_counts, check_guidance, check_labels

__all__ = ["evaluate", "format_table"]


def evaluate(
    workdir: str,
    *,
    num_samples: int = 10000,
    sampler: str | None = None,
    num_steps: int | None = None,
    spacing: str | None = None,
    eta: float | None = None,
    feature_net: str | metrics.FeatureNetwork | None = None,
    bpd_examples: int | None = None,
    split: str = "test",
    ref_split: str | None = None,
    stats_dir: str | None = None,
    seed: int = 0,
    ema: bool = True,
    bpd_per_device_batch: int = 64,
    config_overrides: Sequence[str] = (),
    progress: bool = True,
    write: bool = True,
    step: int | None = None,
    sigma_rel: float | None = None,
    best: bool = False,
    guidance_scale: float = 1.0,
) -> dict:
    """Evaluate a checkpoint of a run; write WORKDIR/eval_<step>.json and return the report.

    Args:
      workdir: a training run's directory (config.json and checkpoints/), or a progressive-distillation chain's
        (its round distilled for num_steps, `runs.resolve_workdir`).
      num_samples: samples for the sample metrics (ignored without a feature network; 0 skips them; 0 together
        with bpd_examples=0 is refused: nothing would be measured).
      sampler, num_steps, spacing, eta: any of `sampling.SAMPLERS` with its settings (see `runs.sampler_options`);
        None: the run's config.sample values.
      feature_net: "classifier:DIR", "inception:WEIGHTS.npz", "inception:packaged", a metrics.FeatureNetwork, or None
        for bits/dim only.
      bpd_examples: images of `split` for bits/dim (the first ones); None: all; 0: skip bits/dim (refused with
        feature_net None: nothing would be measured).
      split: the split for bits/dim (and the reference set unless `ref_split`).
      ref_split: the reference split for FID/KID/precision-recall (default: `split`).
      stats_dir: reference-statistics cache (default: `default_stats_dir(workdir)` = WORKDIR/../fid_stats).
      seed: sampling key fold_in(PRNGKey(seed), 0); bits/dim key fold_in(PRNGKey(seed), 1).
      ema: sample and evaluate the EMA params (default) or the raw ones.
      bpd_per_device_batch: images per device per compiled bits/dim call.
      config_overrides: "--config.sample.per_device_batch=256"-style overrides of the run's saved config.
      progress: tqdm progress bars.
      write: write WORKDIR/eval_<step>.json (atomically; the workdir must be writable).
      step: the checkpoint's step; None: the newest that restores (`checkpoint.restore_params`).
      sigma_rel: evaluate the post-hoc EMA of this sigma_rel (written by `python -m ddpm_jax ema`; `step` is then
        its snapshot's step) instead of the checkpoint's EMA; the report is WORKDIR/eval_<step>_sigma_rel_<S>.json.
      best: evaluate the best checkpoint by FID during training (WORKDIR/best, config.train.keep_best).
      guidance_scale: classifier-free guidance w of a class-conditional run's samples (Ho & Salimans 2022,
        eps_null + w (eps_cond - eps_null): two model calls a step); 1: unguided, one call. Another scale with no
        samples drawn (num_samples 0 or no feature network) is refused.

    Returns the report (what the json holds): step, workdir, params ("ema" | "raw" | "ema (best checkpoint)" |
    "posthoc_ema sigma_rel=S"), feature_network (name or
    None), sampler {name, num_steps, spacing, eta (ddim), clip_denoised, labels, guidance_scale}, num_samples, seed, dataset {source, split, ref_split,
    ...caches}, metrics {fid, is, is_std, kid, kid_std, precision, recall, bpd, bpd_stderr, bpd_prior,
    bpd_decoder} (those computed), metric_settings, wall_seconds {sampling, features, reference, metrics, bpd,
    total}, path.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    check_evaluation_counts(num_samples, bpd_examples, feature_net=feature_net)
    network = resolve_feature_network(feature_net)
    if guidance_scale != 1.0 and (network is None or num_samples == 0):
        raise ValueError(f"guidance_scale {guidance_scale} guides the samples, and this evaluation draws no samples "
                         "(num_samples 0 or no feature network): leave it at 1, or give num_samples >= 1 with a "
                         "feature network.")
    workdir = runs.resolve_workdir(workdir, num_steps)  # a distillation chain: the round of num_steps
    if write:
        check_writable(workdir, "the report eval_<step>.json goes there (or pass write=False)")
    run = runs.load_run(workdir, ema=ema, step=step, overrides=config_overrides, sigma_rel=sigma_rel, best=best)
    run.check_images("evaluate")
    check_guidance(guidance_scale, run.model.num_classes is not None, True)  # a conditional run's balanced labels
    if run.codec is not None or run.config.model.get("text", None) is not None:
        raise ValueError(f"the run in {workdir!r} is a text-to-image (latent) run: evaluate measures pixel-space "
                         "models; measure it with benchmarks/prompt_accuracy.py.")
    config, model, sched, params, step = run.config, run.model, run.sched, run.params, run.step
    source, data_dir = config.data.source, config.data.get("data_dir", None)
    image_size = config.data.get("image_size", None)
    ref_split = ref_split or split
    rng = jax.random.PRNGKey(seed)
    options = runs.sampler_options(config, sampler, num_steps, spacing, eta)
    sampler = options["sampler"]
    sampler_info = dict(name=sampler, clip_denoised=bool(options["clip_denoised"]))
    continuous = configs.objective(config) in configs.CONTINUOUS_OBJECTIVES
    objective = configs.create_objective(config)
    layout = configs.create_layout(config)  # a "sharded" run samples and computes bits/dim on its mesh
    if bpd_examples != 0:
        objective.check_bits_per_dim()
    if "timesteps" in options:  # a distilled student: its own sampler and levels (`runs.distilled_sampler_options`)
        sampler_info.update(num_steps=options["num_steps"])
        if sampler == "ddim":
            sampler_info["eta"] = 0.0
    elif sampler != "ancestral":
        steps, spacing = sampling.step_defaults(sampler, options["num_steps"], options["spacing"])
        sampler_info.update(num_steps=int(steps), spacing=None if continuous else spacing)
        if sampler == "ddim":
            sampler_info["eta"] = float(options["eta"])
    report: dict[str, Any] = dict(
        step=step, workdir=os.path.abspath(workdir),
        params=(f"posthoc_ema sigma_rel={sigma_rel:g}" if sigma_rel is not None else "ema (best checkpoint)" if best
                else "ema" if ema else "raw"),
        feature_network=network.name if network else None, sampler=sampler_info,
        num_samples=num_samples if network else 0, seed=seed,
        dataset=dict(source=source, split=split, ref_split=ref_split),
        metrics={}, metric_settings={}, wall_seconds={},
    )
    walls = report["wall_seconds"]
    cache: dict[str, data.Arrays] = {}

    def arrays(which: str) -> data.Arrays:
        if which not in cache:
            cache[which] = data.load_arrays(source, which, data_dir=data_dir, image_size=image_size)
        return cache[which]

    # Bits/dim first: it fails fast (non-finite terms) before the sampling.
    if bpd_examples != 0:
        a = arrays(split)
        n = a.images.shape[0] if bpd_examples is None else min(bpd_examples, a.images.shape[0])
        conditional = model.num_classes is not None
        if conditional and a.labels is None:
            raise ValueError(f"the model is class-conditional but {source!r} split {split!r} has no labels.")
        if conditional:
            check_labels(a.labels[:n], model.num_classes, f"{source!r} split {split!r}")
        bar = tqdm(total=n, unit="img", desc=f"bits/dim ({split})", disable=not progress)
        t0 = time.perf_counter()
        common = dict(max_value=a.max_value, labels=a.labels[:n] if conditional else None,
                      per_device_batch=bpd_per_device_batch, layout=layout,
                      progress=lambda done, total: bar.update(done - bar.n))
        out = objective.bits_per_dim_dataset(model, params, a.images[:n], jax.random.fold_in(rng, 1), **common)
        bar.close()
        walls["bpd"] = time.perf_counter() - t0
        bad = int(np.sum(~np.isfinite(out["bpd"])))
        if bad:
            last = float(sched.alphas_cumprod[-1])
            why = (f"alpha_bar at t = T - 1 is 0: such a schedule (zero_terminal_snr) leaves the "
                   f"{config.diffusion.prediction!r}-"
                   "parametrized VLB term at t = T - 1 undefined; train with another schedule, or evaluate "
                   "without bits/dim (bpd_examples=0, --bpd-examples 0)." if last == 0.0 else
                   "the model output is likely non-finite (a diverged checkpoint?).")
            raise ValueError(f"bits/dim is not finite for {bad} of {n} images: {why}")
        report["metrics"].update(bpd=out["mean"], bpd_stderr=out["stderr"], bpd_prior=out["prior_mean"],
                                 bpd_decoder=out["decoder_mean"])
        report["metric_settings"].update(bpd_examples=n, bpd_split=split, bpd_conditional=conditional,
                                         bpd_timesteps=int(sched.num_timesteps))
    if network is not None and num_samples > 0:
        check_classifier_dataset(feature_net, source)
        image_shape = run.image_shape()
        labels = None
        if model.num_classes is not None:  # class-conditional: balanced labels
            labels = runs.balanced_labels(num_samples, model.num_classes)
            sampler_info.update(labels="balanced (i mod num_classes)", guidance_scale=float(guidance_scale))
        bar = tqdm(total=num_samples, unit="img", desc=f"sampling (step {step})", disable=not progress)
        t0 = time.perf_counter()
        samples = runs.sample(
            config, params, jax.random.fold_in(rng, 0), num_samples, image_shape, sampler=sampler,
            num_steps=sampler_info.get("num_steps"), spacing=sampler_info.get("spacing"),
            eta=sampler_info.get("eta"), labels=labels, guidance_scale=guidance_scale, layout=layout,
            progress=lambda done, total: bar.update(done - bar.n),
        )
        bar.close()
        walls["sampling"] = time.perf_counter() - t0
        max_value = arrays(ref_split).max_value
        t0 = time.perf_counter()
        fake = sample_features(network, samples, max_value)
        walls["features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        stats, real_features, ref_info = reference_features(
            network, source, ref_split, num_samples, stats_dir or default_stats_dir(workdir), data_dir=data_dir,
            image_size=image_size, arrays=cache.get(ref_split))
        walls["reference"] = time.perf_counter() - t0
        report["dataset"].update(ref_info)
        t0 = time.perf_counter()
        values, settings = sample_metrics(stats, real_features, fake)
        walls["metrics"] = time.perf_counter() - t0
        report["metrics"].update(values)
        report["metric_settings"].update(settings, sample_quantization=f"{max_value + 1} levels")

    walls["total"] = time.perf_counter() - start
    report["devices"] = parallel.describe_devices()
    if write:
        path = os.path.join(workdir, f"eval_{step}.json" if sigma_rel is None else
                            f"eval_{step}_sigma_rel_{sigma_rel:g}.json")
        write_text(path, json.dumps(report, indent=2))
        report["path"] = path
    return report


def format_table(report: dict) -> str:
    """The report's metrics as a small text table."""
    m = report["metrics"]
    rows = []

    def row(name, value, spread=None, spread_name="std"):
        text = f"{value:.4f}" if spread is None else f"{value:.4f} +- {spread:.4f} ({spread_name})"
        rows.append(f"  {name:<12} {text}")

    if "fid" in m:
        row("FID", m["fid"])
        if "is" in m:  # not from a features-only network
            row("IS", m["is"], m["is_std"])
        row("KID", m["kid"], m["kid_std"])
        row("precision", m["precision"])
        row("recall", m["recall"])
    if "bpd" in m:
        row("bits/dim", m["bpd"], m["bpd_stderr"], "s.e.")
    s = report["sampler"]
    steps = f", {s['num_steps']} steps ({s['spacing']})" if "num_steps" in s else ""
    steps += f", eta {s['eta']}" if "eta" in s else ""
    steps += f", guidance {s['guidance_scale']}" if s.get("guidance_scale", 1.0) != 1.0 else ""
    head = [f"step {report['step']} ({report['params']} params)"]
    if report["feature_network"]:
        head.append(f"{report['num_samples']} samples, {s['name']}{steps}; feature network "
                    f"{report['feature_network']}")
    if "bpd" in m:
        st = report["metric_settings"]
        head.append(f"bits/dim over {st['bpd_examples']} images of split {st['bpd_split']!r}")
    w = report["wall_seconds"]
    tail = "  wall: " + ", ".join(f"{k} {v:.1f}s" for k, v in w.items())
    return "\n".join(head + rows + [tail])
