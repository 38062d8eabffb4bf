"""Feature networks: a name plus a function from images to features and logits.

FID, KID and precision/recall are only comparable between numbers computed with the same network, so every
statistic and report carries the network's `name`. A `FeatureNetwork` can wrap the FID Inception
(`inception.inception_feature_network`) or any project-trained classifier:

    net = FeatureNetwork("digits_classifier_v1", lambda images: {"features": ..., "logits": ...})
    out = net(images)                 # images [B, H, W, C] float in [-1, 1]
    out["features"]                   # [B, D]: used by FID / KID / precision-recall
    out["logits"]                     # [B, K]: used by the Inception Score

`extract_features` runs a network over an iterator of batches; `dataset_statistics` computes (or loads from a
cache file chosen by the caller) the FID statistics of a dataset split.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ddpm_jax.metrics.frechet import RunningStats

__all__ = ["FeatureNetwork", "extract_features", "dataset_statistics", "iterate_images"]


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
    """A named feature extractor.

    name: identifies the network (and its weights) in statistics files and reports, e.g.
      "pytorch_fid_inception_v3_2015-12-05" or "digits_classifier_<run-id>".
    fn: images [B, H, W, C] float in [-1, 1] -> {"features": [B, D], "logits": [B, K]} (more keys allowed).
    has_logits: False for a network with features only (no classifier layer): no Inception Score from it.
    """

    name: str
    fn: Callable[[Any], Mapping[str, Any]]
    has_logits: bool = True

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"FeatureNetwork needs a non-empty name, got {self.name!r}.")
        if not callable(self.fn):
            raise ValueError(f"FeatureNetwork.fn must be callable, got {type(self.fn).__name__}.")

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
    keys = keys or (("features", "logits") if network.has_logits else ("features",))
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
    _check_num_examples(num_examples)
    if cache_path is not None and os.path.exists(cache_path):
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
