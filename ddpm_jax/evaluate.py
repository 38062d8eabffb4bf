"""Evaluation of a trained run: sample-quality metrics (FID, IS, KID, precision/recall) and bits/dim.

    python -m ddpm_jax evaluate --workdir runs/digits --num-samples 10000 --sampler ddim --steps 100 \
        --feature-net classifier:runs/classifier_digits [--bpd-examples 1000] [--split test]

    from ddpm_jax import evaluate
    report = evaluate.evaluate("runs/digits", num_samples=10000, num_steps=100,
                               feature_net="classifier:runs/classifier_digits")   # also WORKDIR/eval_<step>.json
    out = evaluate.bits_per_dim_dataset(model_fn, sched, images_uint8, rng, max_value=255)  # bpd, stderr, ...

Feature networks (`feature_net`): "classifier:DIR" (a classifier trained with `python -m ddpm_jax
train-classifier`, named "classifier:<dataset>:<params hash>", see `ddpm_jax.classifier`),
"inception:WEIGHTS.npz" (the FID Inception, `metrics.load_fid_inception_params`), a `metrics.FeatureNetwork`, or
None: then no sample metrics are computed, only bits/dim. Every report names the network; FIDs from different
networks do not compare.

Choices made here:

* Samples come from the EMA params (unless ema=False), across all local devices (`configs.sample`); sample i uses
  fold_in(fold_in(PRNGKey(seed), 0), i). Before the feature network sees them they are quantized to the
  dataset's pixel grid (round((x + 1) / 2 * max_value): 256 levels, 17 for "digits"), as images saved in the
  dataset's format would be; the real images are on that grid already.
* Reference set: split `ref_split` (default: `split`) of the run's data source. Its FID statistics
  (`metrics.dataset_statistics`) and the features of a fixed subset of min(N_ref, num_samples) images
  (np.random.default_rng(0).permutation(N_ref)[:n], for KID and precision/recall, which want equal counts)
  are cached in `stats_dir`, by default the directory "fid_stats" beside the workdir (WORKDIR/../fid_stats, so
  runs in one parent directory share it), as
  "<dataset>_<split>_<network>.npz" and "<dataset>_<split>_<network>_features<n>.npz". A cache made with other
  weights has another network name and so another file; a file that disagrees in count is an error.
* Metrics: FID (no std), IS (mean and std over min(10, n) splits), KID (mean and std over 100 subsets of
  min(1000, n_fake, n_real)), precision and recall (k = 3), bits/dim (mean and standard error).
* Bits/dim: the full VLB (prior + all T terms, `diffusion.bits_per_dim_terms`) of the first `bpd_examples`
  images (None: all) of split `split`, uint8 mapped to [-1, 1] by `data.to_float`. Example i of the split uses
  rng fold_in(bpd_rng, i) for all its noise, whatever the devices and batch size (see `bits_per_dim_dataset`).
  For a class-conditional model the likelihood is conditioned on the true labels, log p(x | y).
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.tree_util import Partial

from ddpm_jax import checkpoint, configs, data, diffusion, functional, metrics, parallel, sampling
from ddpm_jax.files import atomic_write

__all__ = [
    "evaluate", "bits_per_dim_dataset", "resolve_feature_network", "reference_features", "quantize_to_grid",
    "format_table", "default_stats_dir",
]

KID_SUBSET_SIZE = 1000
KID_NUM_SUBSETS = 100
IS_SPLITS = 10
PR_K = 3


# ------------------------------------------------------------------------------------------------ bits/dim


@functools.lru_cache(maxsize=16)
def _pmapped_bpd(prediction: str, variance: str, clip_denoised: bool, devices: tuple, has_labels: bool):
    """One device's batch -> (total, prior, decoder) bpd [b]; example i's noise from fold_in(rng, index_i)."""

    def one(model_fn, sched, rng, x, index, y):
        if y is not None:
            model_fn = Partial(sampling.with_labels, model_fn, y[None])
        terms = diffusion.bits_per_dim_terms(
            model_fn, sched, x[None], jax.random.fold_in(rng, index),
            prediction=prediction, variance=variance, clip_denoised=clip_denoised,
        )
        return terms["total_bpd"][0], terms["prior_bpd"][0], terms["vb_bpd"][0, 0]

    def per_device(model_fn, sched, rng, x, index, y):
        return jax.vmap(one, in_axes=(None, None, None, 0, 0, 0 if has_labels else None))(
            model_fn, sched, rng, x, index, y)

    return parallel.pmap(per_device, in_axes=(0, None, None, 0, 0, 0 if has_labels else None), devices=devices)


def bits_per_dim_dataset(
    model_fn: Callable,
    sched,
    images: np.ndarray,
    rng,
    *,
    max_value: int = 255,
    labels: np.ndarray | None = None,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip_denoised: bool = True,
    per_device_batch: int = 64,
    devices: Sequence | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """The full VLB in bits/dim of every image of a dataset split, batched, compiled once and sharded over devices.

    Args:
      model_fn: model_fn(x_t, t) (or model_fn(x_t, t, y) with `labels`), best a `functional.bind(model.apply,
        params)` Partial: its params are replicated once and the pmapped function compiles once.
      images: uint8 [N, H, W, C] in 0..max_value, mapped to [-1, 1] by `data.to_float`.
      rng: base key. Example i (its index in `images`) draws all its noise from fold_in(rng, i), exactly as
        `diffusion.bits_per_dim(model_fn, sched, images_float[i:i+1], fold_in(rng, i))`: the result does not
        depend on the number of devices or the batch size.
      labels: int [N] class labels for a conditional model_fn(x_t, t, y), or None.
      per_device_batch: at most this many images per device per call (fewer when N is small); rounds of
        per-device batch * devices images, the last padded (by repeating images) and the padding dropped.
      progress: progress(done, total) after each round.

    Returns:
      dict(bpd [N] float64, prior_bpd [N], decoder_bpd [N] (the L_0 term), mean, stderr (std(ddof=1) /
      sqrt(N); nan for N = 1), prior_mean, decoder_mean, num_examples).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty uint8 [N, H, W, C] array, got shape {images.shape}.")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 in 0..max_value (mapped by data.to_float), got {images.dtype}.")
    if per_device_batch < 1:
        raise ValueError(f"per_device_batch must be a positive integer, got {per_device_batch}.")
    diffusion.check_choice("prediction", prediction, diffusion.PREDICTIONS)
    diffusion.check_choice("variance", variance, diffusion.VARIANCES)
    n = images.shape[0]
    if labels is not None:
        labels = np.asarray(labels, np.int32)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},) (one per image), got {labels.shape}.")
    devices = tuple(devices or jax.local_devices())
    n_dev = len(devices)
    per_device = min(per_device_batch, math.ceil(n / n_dev))
    per_round = per_device * n_dev
    rounds = math.ceil(n / per_round)
    fn = _pmapped_bpd(prediction, variance, bool(clip_denoised), devices, labels is not None)
    replicated = parallel.replicate(functional.as_pytree(model_fn), devices)
    total, prior, decoder = [], [], []
    for r in range(rounds):
        index = np.arange(r * per_round, (r + 1) * per_round)
        take = index % n  # the padding repeats images; its results are dropped
        x = parallel.shard(data.to_float(images[take], max_value), n_dev)
        y = None if labels is None else parallel.shard(labels[take], n_dev)
        out = fn(replicated, sched, rng, x, parallel.shard(index.astype(np.int32), n_dev), y)
        keep = min(per_round, n - r * per_round)
        for acc, value in zip((total, prior, decoder), out):
            acc.append(np.asarray(value, np.float64).reshape(-1)[:keep])
        if progress:
            progress(r * per_round + keep, n)
    bpd = np.concatenate(total)
    prior, decoder = np.concatenate(prior), np.concatenate(decoder)
    stderr = float(np.std(bpd, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return dict(bpd=bpd, prior_bpd=prior, decoder_bpd=decoder, mean=float(bpd.mean()), stderr=stderr,
                prior_mean=float(prior.mean()), decoder_mean=float(decoder.mean()), num_examples=n)


# ------------------------------------------------------------------------------------------------ features


def resolve_feature_network(spec: str | metrics.FeatureNetwork | None) -> metrics.FeatureNetwork | None:
    """"classifier:DIR" | "inception:WEIGHTS.npz" | a FeatureNetwork | None -> FeatureNetwork or None."""
    if spec is None or isinstance(spec, metrics.FeatureNetwork):
        return spec
    kind, sep, arg = str(spec).partition(":")
    if sep and arg and kind == "classifier":
        from ddpm_jax import classifier

        return classifier.feature_network(arg)
    if sep and arg and kind == "inception":
        if not os.path.exists(arg):
            raise FileNotFoundError(f"FID Inception weights {arg!r} not found (see ddpm_jax/metrics/inception.py "
                                    "for how to make the .npz).")
        return metrics.inception_feature_network(metrics.load_fid_inception_params(arg))
    raise ValueError(f"unknown feature network {spec!r}; accepted: 'classifier:DIR' (a directory made by "
                     "python -m ddpm_jax train-classifier) or 'inception:WEIGHTS.npz' (FID Inception weights).")


def quantize_to_grid(images: np.ndarray, max_value: int) -> np.ndarray:
    """Float images in [-1, 1] -> the nearest of the dataset's max_value + 1 levels, back in [-1, 1]."""
    levels = np.clip(np.round((np.asarray(images, np.float32) + 1.0) * (max_value / 2.0)), 0, max_value)
    return data.to_float(levels.astype(np.uint8), max_value)


def default_stats_dir(workdir: str) -> str:
    """WORKDIR/../fid_stats: the reference-statistics cache shared by the runs in one parent directory."""
    return os.path.join(os.path.dirname(os.path.abspath(workdir)), "fid_stats")


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _chunks(images: np.ndarray, batch_size: int = 1000):
    for start in range(0, images.shape[0], batch_size):
        yield images[start:start + batch_size]


def _batches(images: np.ndarray, max_value: int, batch_size: int = 1000):
    """uint8 images in float [-1, 1] batches."""
    return (data.to_float(chunk, max_value) for chunk in _chunks(images, batch_size))


def reference_features(
    network: metrics.FeatureNetwork,
    source: str,
    split: str,
    num_features: int,
    stats_dir: str,
    *,
    data_dir: str | None = None,
    arrays: data.Arrays | None = None,
) -> tuple[metrics.RunningStats, np.ndarray, dict]:
    """(FID statistics of the whole split, features [n, D] of a fixed subset of n = min(N, num_features) images,
    info) for a dataset split, cached in `stats_dir` (see the module docstring). `arrays` (the loaded split) are
    used when given; otherwise the split is loaded only if a cache is missing."""
    base = os.path.join(stats_dir, f"{_slug(_dataset_tag(source))}_{_slug(split)}_{_slug(network.name)}")
    stats_path = base + ".npz"
    loaded = {}

    def split_arrays() -> data.Arrays:
        if "arrays" not in loaded:
            loaded["arrays"] = arrays if arrays is not None else data.load_arrays(source, split, data_dir=data_dir)
        return loaded["arrays"]

    collected = []

    def collect(images):
        out = network(images)
        collected.append(np.asarray(out["features"], np.float32))
        return out

    if arrays is None and os.path.exists(stats_path):  # the split is not read when the caches are complete
        count = metrics.load_stats(stats_path, network.name).count
    else:  # a cache of another size (the dataset changed) is an error in dataset_statistics
        count = split_arrays().images.shape[0]
    stats = metrics.dataset_statistics(
        metrics.FeatureNetwork(network.name, collect),
        lambda: _batches(split_arrays().images, split_arrays().max_value), stats_path, num_examples=count,
    )
    n = min(count, num_features)
    features_path = f"{base}_features{n}.npz"
    subset = np.sort(np.random.default_rng(0).permutation(count)[:n])
    if os.path.exists(features_path):
        with np.load(features_path, allow_pickle=False) as f:
            name, features = str(f["feature_network"]), np.asarray(f["features"])
        if name != network.name or features.shape[0] != n:
            raise ValueError(f"the features cache {features_path} holds {features.shape[0]} features of "
                             f"{name!r}, expected {n} of {network.name!r}; delete it to recompute.")
    else:
        if collected:
            features = np.concatenate(collected)[subset]
        else:
            a = split_arrays()
            features = metrics.extract_features(network, _batches(a.images[subset], a.max_value))["features"]
        with atomic_write(features_path, "wb") as f:
            np.savez(f, features=features.astype(np.float32), indices=subset, feature_network=np.array(network.name))
    return stats, features, dict(stats_cache=stats_path, features_cache=features_path, reference_examples=count,
                                 reference_features=n)


def _dataset_tag(source: str) -> str:
    """classifier.dataset_tag(source), plus a hash of the absolute path for a local file (two mnist.npz in
    different places are different datasets)."""
    import hashlib

    from ddpm_jax import classifier

    tag = classifier.dataset_tag(source)
    kind, sep, path = source.partition(":")
    if sep and kind in ("npz", "npy"):
        return tag + "-" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:8]
    if source.endswith((".npz", ".npy")):
        return tag + "-" + hashlib.sha256(os.path.abspath(source).encode()).hexdigest()[:8]
    return tag


def sample_metrics(real_stats: metrics.RunningStats, real_features: np.ndarray, fake: dict) -> tuple[dict, dict]:
    """(metrics, settings): FID, IS (+ std), KID (+ std), precision, recall of fake {"features" [n, D], "logits"
    [n, K]} against the reference statistics and features."""
    f = fake["features"]
    n = f.shape[0]
    fake_stats = metrics.RunningStats(real_stats.feature_network)
    fake_stats.update(f)
    out = dict(fid=metrics.frechet_distance(real_stats.mean(), real_stats.cov(), fake_stats.mean(), fake_stats.cov()))
    splits = min(IS_SPLITS, n)
    out["is"], out["is_std"] = metrics.inception_score(fake["logits"], splits=splits)
    subset = min(KID_SUBSET_SIZE, n, real_features.shape[0])
    out["kid"], out["kid_std"] = metrics.kid(real_features, f, num_subsets=KID_NUM_SUBSETS, subset_size=subset)
    out["precision"], out["recall"] = metrics.precision_recall(real_features, f, k=PR_K)
    settings = dict(is_splits=splits, kid_subset_size=subset, kid_num_subsets=KID_NUM_SUBSETS, pr_k=PR_K,
                    num_classes=int(fake["logits"].shape[1]))
    return out, settings


# ------------------------------------------------------------------------------------------------ evaluate


def evaluate(
    workdir: str,
    *,
    num_samples: int = 10000,
    sampler: str | None = "ddim",
    num_steps: int | None = 100,
    eta: float | None = 0.0,
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
) -> dict:
    """Evaluate the latest checkpoint of a run; write WORKDIR/eval_<step>.json and return the report.

    Args:
      workdir: a training run's directory (config.json and checkpoints/).
      num_samples: samples for the sample metrics (ignored without a feature network; 0 skips them).
      sampler, num_steps, eta: "ddim" (num_steps, eta) or "ancestral"; None: the run's config.sample values.
      feature_net: "classifier:DIR", "inception:WEIGHTS.npz", a metrics.FeatureNetwork, or None for bits/dim only.
      bpd_examples: images of `split` for bits/dim (the first ones); None: all; 0: skip bits/dim.
      split: the split for bits/dim (and the reference set unless `ref_split`).
      ref_split: the reference split for FID/KID/precision-recall (default: `split`).
      stats_dir: reference-statistics cache (default: `default_stats_dir(workdir)` = WORKDIR/../fid_stats).
      seed: sampling key fold_in(PRNGKey(seed), 0); bits/dim key fold_in(PRNGKey(seed), 1).
      ema: sample and evaluate the EMA params (default) or the raw ones.
      bpd_per_device_batch: images per device per compiled bits/dim call.
      config_overrides: "--config.sample.per_device_batch=256"-style overrides of the run's saved config.
      progress: tqdm progress bars.
      write: write WORKDIR/eval_<step>.json.

    Returns the report (what the json holds): step, workdir, params ("ema" | "raw"), feature_network (name or
    None), sampler {name, num_steps, eta, clip_denoised}, num_samples, seed, dataset {source, split, ref_split,
    ...caches}, metrics {fid, is, is_std, kid, kid_std, precision, recall, bpd, bpd_stderr, bpd_prior,
    bpd_decoder} (those computed), metric_settings, wall_seconds {sampling, features, reference, metrics, bpd,
    total}, path.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    config = configs.apply_overrides(checkpoint.load_saved_config(workdir), config_overrides)
    network = resolve_feature_network(feature_net)
    if num_samples < 0 or (bpd_examples is not None and bpd_examples < 0):
        raise ValueError(f"num_samples and bpd_examples must be >= 0, got {num_samples} and {bpd_examples}.")
    params, step = checkpoint.restore_params(workdir, ema=ema)
    model = configs.create_model(config)
    sched = configs.create_schedule(config)
    source, data_dir = config.data.source, config.data.get("data_dir", None)
    ref_split = ref_split or split
    rng = jax.random.PRNGKey(seed)
    sampler = sampler or config.sample.sampler
    sampler_info = dict(name=sampler, clip_denoised=bool(config.sample.clip_denoised))
    if sampler == "ddim":
        sampler_info.update(num_steps=int(num_steps or config.sample.num_steps),
                            eta=float(config.sample.eta if eta is None else eta))
    report: dict[str, Any] = dict(
        step=step, workdir=os.path.abspath(workdir), params="ema" if ema else "raw",
        feature_network=network.name if network else None, sampler=sampler_info,
        num_samples=num_samples if network else 0, seed=seed,
        dataset=dict(source=source, split=split, ref_split=ref_split),
        metrics={}, metric_settings={}, wall_seconds={},
    )
    walls = report["wall_seconds"]
    cache: dict[str, data.Arrays] = {}

    def arrays(which: str) -> data.Arrays:
        if which not in cache:
            cache[which] = data.load_arrays(source, which, data_dir=data_dir)
        return cache[which]

    # Bits/dim first: it fails fast (non-finite terms) before the sampling.
    if bpd_examples != 0:
        a = arrays(split)
        n = a.images.shape[0] if bpd_examples is None else min(bpd_examples, a.images.shape[0])
        conditional = model.num_classes is not None
        if conditional and a.labels is None:
            raise ValueError(f"the model is class-conditional but {source!r} split {split!r} has no labels.")
        model_fn = functional.bind(model.apply, params)  # model_fn(x_t, t[, y])
        bar = tqdm(total=n, unit="img", desc=f"bits/dim ({split})", disable=not progress)
        t0 = time.perf_counter()
        out = bits_per_dim_dataset(
            model_fn, sched, a.images[:n], jax.random.fold_in(rng, 1), max_value=a.max_value,
            labels=a.labels[:n] if conditional else None, prediction=config.diffusion.prediction,
            variance=config.diffusion.variance, clip_denoised=True, per_device_batch=bpd_per_device_batch,
            progress=lambda done, total: bar.update(done - bar.n),
        )
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
        _check_classifier_dataset(feature_net, source)
        image_shape = data.image_shape(source, data_dir=data_dir)
        labels = None
        if model.num_classes is not None:  # class-conditional: balanced labels, no guidance
            labels = np.arange(num_samples, dtype=np.int32) % model.num_classes
            sampler_info["labels"] = "balanced (i mod num_classes)"
        bar = tqdm(total=num_samples, unit="img", desc=f"sampling (step {step})", disable=not progress)
        t0 = time.perf_counter()
        samples = configs.sample(
            config, params, jax.random.fold_in(rng, 0), num_samples, image_shape, sampler=sampler,
            num_steps=sampler_info.get("num_steps"), eta=sampler_info.get("eta"), labels=labels,
            progress=lambda done, total: bar.update(done - bar.n),
        )
        bar.close()
        walls["sampling"] = time.perf_counter() - t0
        max_value = arrays(ref_split).max_value
        t0 = time.perf_counter()
        fake = metrics.extract_features(network, _chunks(quantize_to_grid(samples, max_value)))
        walls["features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        stats, real_features, ref_info = reference_features(
            network, source, ref_split, num_samples, stats_dir or default_stats_dir(workdir), data_dir=data_dir,
            arrays=cache.get(ref_split))
        walls["reference"] = time.perf_counter() - t0
        report["dataset"].update(ref_info)
        t0 = time.perf_counter()
        values, settings = sample_metrics(stats, real_features, fake)
        walls["metrics"] = time.perf_counter() - t0
        report["metrics"].update(values)
        report["metric_settings"].update(settings, sample_quantization=f"{max_value + 1} levels")

    walls["total"] = time.perf_counter() - start
    report["devices"] = f"{jax.local_device_count()} x {jax.devices()[0].platform}"
    if write:
        path = os.path.join(workdir, f"eval_{step}.json")
        checkpoint.write_atomic(path, json.dumps(report, indent=2))
        report["path"] = path
    return report


def _check_classifier_dataset(spec, source: str) -> None:
    """Warn when a classifier was trained on another data source than the run's (the shapes are checked by the
    network itself)."""
    if isinstance(spec, str) and spec.startswith("classifier:"):
        with open(os.path.join(spec.partition(":")[2], "classifier.json")) as f:
            trained_on = json.load(f)["dataset"]
        if trained_on != source:
            print(f"warning: the classifier was trained on {trained_on!r}, the run's data is {source!r}.",
                  file=sys.stderr)


def format_table(report: dict) -> str:
    """The report's metrics as a small text table."""
    m = report["metrics"]
    rows = []

    def row(name, value, spread=None, spread_name="std"):
        text = f"{value:.4f}" if spread is None else f"{value:.4f} +- {spread:.4f} ({spread_name})"
        rows.append(f"  {name:<12} {text}")

    if "fid" in m:
        row("FID", m["fid"])
        row("IS", m["is"], m["is_std"])
        row("KID", m["kid"], m["kid_std"])
        row("precision", m["precision"])
        row("recall", m["recall"])
    if "bpd" in m:
        row("bits/dim", m["bpd"], m["bpd_stderr"], "s.e.")
    s = report["sampler"]
    steps = f", {s['num_steps']} steps, eta {s['eta']}" if s["name"] == "ddim" else ""
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
