"""Reference statistics of a dataset split for the sample metrics, and their caches.

The FID statistics of a whole split (`metrics.dataset_statistics`) and the features of a fixed subset of
min(N_ref, n) images (np.random.default_rng(0).permutation(N_ref)[:n], for KID and precision/recall, which want
equal counts) are cached in `stats_dir`, by default the directory "fid_stats" beside the workdir
(WORKDIR/../fid_stats, so runs in one parent directory share it), as "<dataset>_<split>_<network>.npz" and
"<dataset>_<split>_<network>_features<n>.npz". A cache made with other weights has another network name and so
another file; a file that disagrees in count is an error.
"""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np

from ddpm_jax import data, metrics
from ddpm_jax.files import atomic_write


def default_stats_dir(workdir: str) -> str:
    """WORKDIR/../fid_stats: the reference-statistics cache shared by the runs in one parent directory."""
    return os.path.join(os.path.dirname(os.path.abspath(workdir)), "fid_stats")


def _slug(text: str) -> str:
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
    image_size: int | None = None,
    arrays: data.Arrays | None = None,
) -> tuple[metrics.RunningStats, np.ndarray, dict]:
    """(FID statistics of the whole split, features [n, D] of a fixed subset of n = min(N, num_features) images,
    info) for a dataset split, cached in `stats_dir` (see the module docstring). `arrays` (the loaded split) are
    used when given; otherwise the split is loaded only if a cache is missing."""
    tag = _dataset_tag(source) + (f"-{image_size}px" if image_size is not None else "")
    base = os.path.join(stats_dir, f"{_slug(tag)}_{_slug(split)}_{_slug(network.name)}")
    stats_path = base + ".npz"
    loaded = {}

    def split_arrays() -> data.Arrays:
        if "arrays" not in loaded:
            loaded["arrays"] = arrays if arrays is not None else data.load_arrays(
                source, split, data_dir=data_dir, image_size=image_size)
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
    from ddpm_jax import classifier

    tag = classifier.dataset_tag(source)
    kind, location = data.parse_source(source)
    if kind in ("npz", "npy", "folder"):
        return tag + "-" + hashlib.sha256(os.path.abspath(location).encode()).hexdigest()[:8]
    return tag
