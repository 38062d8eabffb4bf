"""Reference statistics of a dataset split for the sample metrics, and their caches.

The FID statistics of a whole split (`metrics.dataset_statistics`) and the features of a fixed subset of
min(N_ref, n) images (np.random.default_rng(0).permutation(N_ref)[:n], for KID and precision/recall, which want
equal counts) are cached in `stats_dir`, by default the directory "fid_stats" beside the workdir
(WORKDIR/../fid_stats, so runs in one parent directory share it), as "<dataset>_<split>_<network>.npz" and
"<dataset>_<split>_<network>_features<n>.npz". A cache made with other weights has another network name and so
another file; a file that disagrees in count is an error.

Features are computed on all devices of all processes (`extract_features_sharded`; each process converts and feeds
only its devices' share of the images). With several processes every process takes part: whether to load a cache
or compute is decided together (`parallel.any_process`: all compute when any process lacks the cache, e.g. a
`stats_dir` that is not shared, so no process waits alone in the collective computation); each decision reads the
caches as they were before any process writes them (every write follows the collective decision), and all
processes write the same files (atomically, so a shared `stats_dir` is safe).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from typing import Sequence

import numpy as np

from ddpm_jax import data, metrics, parallel
from ddpm_jax.files import atomic_write
from ddpm_jax.metrics.feature_network import (extract_features_sharded, load_cached_statistics,
                                              statistics_of_features)


def default_stats_dir(workdir: str) -> str:
    """WORKDIR/../fid_stats: the reference-statistics cache shared by the runs in one parent directory."""
    return os.path.join(os.path.dirname(os.path.abspath(workdir)), "fid_stats")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def reference_features(
    network: metrics.FeatureNetwork,
    source: str,
    split: str,
    num_features: int,
    stats_dir: str,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    arrays: data.Arrays | None = None,
    batch_size: int = 1000,
    devices: Sequence | None = None,
) -> tuple[metrics.RunningStats, np.ndarray, dict]:
    """(FID statistics of the whole split, features [n, D] of a fixed subset of n = min(N, num_features) images,
    info) for a dataset split, cached in `stats_dir` (see the module docstring). `arrays` (the loaded split) are
    used when given; otherwise the split is loaded only if a cache is missing. Features are computed in rounds of
    `batch_size` images over all devices of all processes (`devices`: named ones, single process only)."""
    tag = _dataset_tag(source) + (f"-{image_size}px" if image_size is not None else "")
    base = os.path.join(stats_dir, f"{_slug(tag)}_{_slug(split)}_{_slug(network.name)}")
    stats_path = base + ".npz"
    loaded = {}

    def split_arrays() -> data.Arrays:
        if "arrays" not in loaded:
            loaded["arrays"] = arrays if arrays is not None else data.load_arrays(
                source, split, data_dir=data_dir, image_size=image_size)
        return loaded["arrays"]

    def features_of(images: np.ndarray) -> np.ndarray:  # uint8 images, converted share by share
        return extract_features_sharded(
            network, images, transform=functools.partial(data.to_float, max_value=split_arrays().max_value),
            keys=("features",), batch_size=batch_size, devices=devices)["features"]

    if arrays is None and os.path.exists(stats_path):  # the split is not read when the caches are complete
        count = metrics.load_stats(stats_path, network.name).count
    else:  # a cache of another size (the dataset changed) is an error in load_cached_statistics
        count = split_arrays().images.shape[0]
    stats = load_cached_statistics(network, stats_path, num_examples=count)
    all_features = None
    if parallel.any_process(stats is None):  # computed by all processes when any lacks the cache
        all_features = features_of(split_arrays().images)
        stats = statistics_of_features(network, all_features, stats_path)
    n = min(count, num_features)
    features_path = f"{base}_features{n}.npz"
    subset = np.sort(np.random.default_rng(0).permutation(count)[:n])
    if not parallel.any_process(not os.path.exists(features_path)):  # as the statistics: all or none compute
        with np.load(features_path, allow_pickle=False) as f:
            name, features = str(f["feature_network"]), np.asarray(f["features"])
        if name != network.name or features.shape[0] != n:
            raise ValueError(f"the features cache {features_path} holds {features.shape[0]} features of "
                             f"{name!r}, expected {n} of {network.name!r}; delete it to recompute.")
    else:
        if all_features is not None:
            features = all_features[subset]
        else:
            features = features_of(split_arrays().images[subset])
        with atomic_write(features_path, "wb") as f:
            np.savez(f, features=features.astype(np.float32), indices=subset, feature_network=np.array(network.name))
    return stats, features, dict(stats_cache=stats_path, features_cache=features_path, reference_examples=count,
                                 reference_features=n)


def _dataset_tag(source: str) -> str:
    """classifier.dataset_tag(source), plus a hash of the absolute path for a local file (two mnist.npz in
    different places are different datasets)."""
    from ddpm_jax import classifier

    tag = classifier.dataset_tag(source)
    kind, location = data.parse_source(source)
    if kind in ("npz", "npy", "folder"):
        return tag + "-" + hashlib.sha256(os.path.abspath(location).encode()).hexdigest()[:8]
    return tag
