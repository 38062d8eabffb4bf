"""Feature networks: a name plus a function from images to features and logits.

FID, KID and precision/recall are only comparable between numbers computed with the same network, so every
statistic and report carries the network's `name`. A `FeatureNetwork` can wrap the FID Inception
(`inception.inception_feature_network`) or any project-trained classifier:

    net = FeatureNetwork("digits_classifier_v1", lambda images: {"features": ..., "logits": ...})
    out = net(images)                 # images [B, H, W, C] float in [-1, 1]
    out["features"]                   # [B, D]: used by FID / KID / precision-recall
    out["logits"]                     # [B, K]: used by the Inception Score

`extract_features` runs a network over an iterator of batches on this process; `extract_features_sharded` runs it
over an array of images on all devices of all processes (`parallel.map_sharded`), each device a share of the
images, and gives every process all the features; `dataset_statistics` computes (or loads from a cache file
chosen by the caller) the FID statistics of a dataset split.

A network made with `FeatureNetwork.from_apply(name, apply, params)` (a pure, traceable `apply(params, images)`)
is pmapped by `extract_features_sharded`, its params replicated once per call; any other network (a host
function) runs on each process over that process's share of the images, so the work still splits across
processes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from ddpm_jax import parallel
from ddpm_jax.metrics.frechet import RunningStats

__all__ = ["FeatureNetwork", "extract_features", "extract_features_sharded", "dataset_statistics",
           "load_cached_statistics", "statistics_of_features", "iterate_images"]


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
    """A named feature extractor.

    name: identifies the network (and its weights) in statistics files and reports, e.g.
      "pytorch_fid_inception_v3_2015-12-05" or "digits_classifier_<run-id>".
    fn: images [B, H, W, C] float in [-1, 1] -> {"features": [B, D], "logits": [B, K]} (more keys allowed).
    has_logits: False for a network with features only (no classifier layer): no Inception Score from it.
    apply, params: optional pure form, fn(images) == apply(params, images) with `apply` traceable (jit/pmap-able,
      params a pytree of arrays passed as an argument, not closed over); with it `extract_features_sharded`
      pmaps `apply` over all devices. Made by `from_apply`.
    """

    name: str
    fn: Callable[[Any], Mapping[str, Any]]
    has_logits: bool = True
    apply: Callable[[Any, Any], Mapping[str, Any]] | None = dataclasses.field(default=None, compare=False)
    params: Any = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def from_apply(cls, name: str, apply: Callable[[Any, Any], Mapping[str, Any]], params: Any, *,
                   has_logits: bool = True) -> "FeatureNetwork":
        """The network of a pure `apply(params, images) -> {"features", "logits"}`: `fn` is jit(apply) with
        `params` placed on the default device once, and `extract_features_sharded` pmaps `apply`."""
        params = jax.device_put(params)
        return cls(name, functools.partial(jax.jit(apply), params), has_logits, apply=apply, params=params)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"FeatureNetwork needs a non-empty name, got {self.name!r}.")
        if not callable(self.fn):
            raise ValueError(f"FeatureNetwork.fn must be callable, got {type(self.fn).__name__}.")
        if self.apply is not None and not callable(self.apply):
            raise ValueError(f"FeatureNetwork.apply must be callable or None, got {type(self.apply).__name__}.")

    def output_keys(self) -> tuple[str, ...]:
        """("features", "logits"), or ("features",) for a network without logits."""
        return ("features", "logits") if self.has_logits else ("features",)

    def __call__(self, images: Any) -> dict[str, Any]:
        if getattr(images, "ndim", None) != 4:
            raise ValueError(f"{self.name}: images must be [B, H, W, C], got shape {np.shape(images)}.")
        out = dict(self.fn(images))
        b = images.shape[0]
        for key in ("features", "logits") if self.has_logits else ("features",):
            if key not in out:
                raise ValueError(f"Feature network {self.name!r} returned keys {sorted(out)}; "
                                 "'features' and 'logits' are required (or has_logits=False).")
            shape = np.shape(out[key])
            if len(shape) != 2 or shape[0] != b:
                raise ValueError(f"Feature network {self.name!r}: {key} must have shape [{b}, D], got {shape}.")
        return out


def iterate_images(batches: Iterable[Any], num_examples: int | None = None) -> Iterable[np.ndarray]:
    """Yields image batches [B, H, W, C] from arrays or dicts with an "image" entry, stopping after
    `num_examples` images when given (the last batch is cut). Leading dims beyond one (e.g. the
    [devices, per_device_batch, H, W, C] batches of `ddpm_jax.data`) are flattened into the batch."""
    seen = 0
    for batch in batches:
        images = batch["image"] if isinstance(batch, Mapping) else batch
        if getattr(images, "ndim", 0) < 4:
            raise ValueError(f"Image batches must be [..., H, W, C] with a batch dimension, got shape "
                             f"{np.shape(images)}.")
        if images.ndim > 4:
            images = images.reshape((-1,) + tuple(images.shape[-3:]))
        if num_examples is not None:
            images = images[: num_examples - seen]
        if images.shape[0] == 0:
            continue
        seen += images.shape[0]
        yield images
        if num_examples is not None and seen >= num_examples:
            return


def _check_num_examples(num_examples: int | None) -> None:
    if num_examples is not None and (not isinstance(num_examples, (int, np.integer)) or num_examples < 1):
        raise ValueError(f"num_examples must be a positive integer or None, got {num_examples!r}.")


def extract_features(network: FeatureNetwork, batches: Iterable[Any], num_examples: int | None = None,
                     keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Runs `network` over image batches; returns {key: float32 numpy [N, ...]} for `keys` (default: "features",
    and "logits" when the network has them).

    With `num_examples`, stops after that many images and raises ValueError if the batches hold fewer.
    """
    _check_num_examples(num_examples)
    keys = keys or network.output_keys()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    total = 0
    for images in iterate_images(batches, num_examples):
        out = network(images)
        for k in keys:
            if k not in out:
                raise ValueError(f"Feature network {network.name!r} returned no {k!r} (keys: {sorted(out)}).")
            parts[k].append(np.asarray(out[k], dtype=np.float32))
        total += images.shape[0]
    if total == 0:
        raise ValueError("extract_features got no images.")
    if num_examples is not None and total < num_examples:
        raise ValueError(f"Asked for {num_examples} examples but the batches held only {total}.")
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


def extract_features_sharded(network: FeatureNetwork, images: np.ndarray, *,
                             transform: Callable[[np.ndarray], np.ndarray] | None = None,
                             keys: tuple[str, ...] | None = None, batch_size: int = 1000,
                             devices: Sequence | None = None,
                             progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """{key: float32 numpy [N, ...]} of `network` over host `images` [N, H, W, C], computed on all devices of all
    processes (`devices`: named ones, single process only), every process receiving all N rows in order.

    Image i goes to one device (`parallel.map_sharded`): each process reads, `transform`s (on the host, e.g.
    uint8 -> float, or quantization) and feeds only its devices' share; with several processes every process
    must pass the same `images`. Rounds of `batch_size` images over all devices (rounded up to a multiple of the
    device count; the last round padded, its padding dropped) bound memory. A network with a pure form
    (`FeatureNetwork.from_apply`) is pmapped, compiled once per per-device batch shape; any other runs its `fn`
    on each process's share of each round. `keys` default: "features", and "logits" when the network has them.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"{network.name}: images must be [N, H, W, C] with N >= 1, got shape {np.shape(images)}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    keys = tuple(keys or network.output_keys())
    n = images.shape[0]
    per_device = max(1, batch_size // parallel.global_device_count(devices))
    if network.apply is not None:
        pmapped = _pmapped_features(network.apply, network.name, keys, parallel.pmap_devices(devices))
        params = parallel.replicate(network.params, devices)

    def round_fn(index):  # [local devices, per_device] global image indices (>= n: padding)
        rows = images[index.reshape(-1) % n]
        rows = np.asarray(transform(rows) if transform is not None else rows)
        if network.apply is not None:
            return pmapped(params, rows.reshape(index.shape + rows.shape[1:]))
        out = _check_keys(network.name, network(rows), keys)
        return {k: np.asarray(out[k], np.float32).reshape(index.shape + np.shape(out[k])[1:]) for k in keys}

    out = parallel.map_sharded(round_fn, n, per_device_batch=per_device, devices=devices, progress=progress)
    for k, v in out.items():
        if v.ndim != 2:
            raise ValueError(f"Feature network {network.name!r}: {k} must have shape [B, D], got {v.shape[1:]} "
                             "per image.")
    return out


@functools.lru_cache(maxsize=16)
def _pmapped_features(apply: Callable, name: str, keys: tuple[str, ...], devices: tuple | None) -> Callable:
    """pmap of params, images [per_device, H, W, C] -> {key: float32 [per_device, ...]}, params replicated."""

    def features(params, images):
        out = _check_keys(name, apply(params, images), keys)
        return {k: out[k].astype(np.float32) for k in keys}

    return parallel.pmap(features, devices=devices)


def _check_keys(name: str, out: Mapping[str, Any], keys: tuple[str, ...]) -> Mapping[str, Any]:
    """`out` of feature network `name` if it holds every one of `keys`, else ValueError naming those missing."""
    missing = [k for k in keys if k not in out]
    if missing:
        raise ValueError(f"Feature network {name!r} returned no {missing} (keys: {sorted(out)}).")
    return out


def load_cached_statistics(network: FeatureNetwork, cache_path: str | os.PathLike | None, *,
                           num_examples: int | None = None, overwrite: bool = False) -> RunningStats | None:
    """The statistics cached in `cache_path` when it exists and holds `network`'s with `num_examples` examples
    (any count when None); None when there is no cache, or (with `overwrite`) when it disagrees. A disagreeing
    cache without `overwrite` is a ValueError, never silently replaced or reused. This is this process's view:
    a caller that then computes collectively (`extract_features_sharded`) decides with
    `parallel.any_process(stats is None)`, so that all processes compute when any lacks the cache."""
    _check_num_examples(num_examples)
    if cache_path is None or not os.path.exists(cache_path):
        return None
    cached = RunningStats.load(cache_path)
    problems = []
    if cached.feature_network != network.name:
        problems.append(f"feature network {cached.feature_network!r} (wanted {network.name!r})")
    if num_examples is not None and cached.count != num_examples:
        problems.append(f"{cached.count} examples (wanted {num_examples})")
    if not problems:
        return cached
    if not overwrite:
        raise ValueError(f"The statistics cache {os.fspath(cache_path)} holds " + " and ".join(problems)
                         + "; choose another cache path (e.g. one naming the network) or pass "
                           "overwrite=True to recompute it.")
    return None


def statistics_of_features(network: FeatureNetwork, features: np.ndarray,
                           cache_path: str | os.PathLike | None = None) -> RunningStats:
    """RunningStats of features [N, D] (N >= 2) of `network`, saved to `cache_path` when given."""
    stats = RunningStats(network.name).update(features)
    if stats.count < 2:
        raise ValueError(f"dataset statistics need at least 2 images, got {stats.count}.")
    if cache_path is not None:
        stats.save(cache_path)
    return stats


def dataset_statistics(network: FeatureNetwork, batches: Iterable[Any] | Callable[[], Iterable[Any]],
                       cache_path: str | os.PathLike | None = None, *, num_examples: int | None = None,
                       overwrite: bool = False) -> RunningStats:
    """FID statistics (feature mean and covariance) of a dataset split, cached in an .npz.

    Args:
      network: the FeatureNetwork; its name is stored in (and checked against) the cache.
      batches: an iterable of image batches (arrays [B, H, W, C] in [-1, 1], or dicts with "image"), or a
        zero-argument callable returning one (then nothing is read when the cache is used).
      cache_path: .npz chosen by the caller (e.g. "<workdir>/stats/cifar10_train_<network>.npz"), or None to
        compute without caching.
      num_examples: use the first this-many images (ValueError if the batches hold fewer); None: all.
      overwrite: recompute and replace a cache made with another network or sample count. Without it such a
        cache is an error, never silently replaced or reused.

    Returns:
      RunningStats: `.mean()`, `.cov()`, `.count`, `.feature_network`.
    """
    cached = load_cached_statistics(network, cache_path, num_examples=num_examples, overwrite=overwrite)
    if cached is not None:
        return cached
    if callable(batches) and not isinstance(batches, Iterable):
        batches = batches()
    stats = RunningStats(network.name)
    for images in iterate_images(batches, num_examples):
        stats.update(network(images)["features"])
    if stats.count < 2:
        raise ValueError(f"dataset_statistics needs at least 2 images, got {stats.count}.")
    if num_examples is not None and stats.count < num_examples:
        raise ValueError(f"Asked for {num_examples} examples but the batches held only {stats.count}.")
    if cache_path is not None:
        stats.save(cache_path)
    return stats
