"""A small CNN classifier of a dataset's own images, and the FID / IS analogue it gives.

For small grayscale datasets (digits, MNIST, Fashion-MNIST) the FID Inception sees 8x8 or 28x28 images blown up to
299x299 and its ImageNet classes mean nothing; a classifier trained on the dataset itself is the usual
substitute. Its penultimate activations are the features (FID, KID, precision/recall) and its logits the class
scores (Inception Score, at most the number of classes). These numbers compare only with numbers from the same
classifier weights, so the `FeatureNetwork` is named

    "classifier:<dataset>:<params hash>"      e.g. "classifier:digits:3f9a1c07d2"

where <params hash> is the first 10 hex digits of the SHA-256 of the weights: never an Inception FID.

    python -m ddpm_jax train-classifier --dataset digits --workdir runs/classifier_digits
    python -m ddpm_jax evaluate --workdir runs/digits --feature-net classifier:runs/classifier_digits

    from ddpm_jax import classifier
    result = classifier.train_classifier("digits", "runs/classifier_digits")   # test accuracy, name, ...
    net = classifier.feature_network("runs/classifier_digits")
    net(images)   # images [B, H, W, C] in [-1, 1] -> {"features": [B, 128], "logits": [B, num_classes]}

A classifier directory holds checkpoints/ (the params, with Orbax, via `checkpoint.Checkpointer`) and
classifier.json (dataset, image shape, number of classes, architecture, test accuracy, feature dimension, name),
written last: a directory without classifier.json holds no finished classifier. The classifier is for its
dataset's own image size; other sizes are an error (no resizing).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ddpm_jax import checkpoint, data
from ddpm_jax.files import write_text
from ddpm_jax.metrics import FeatureNetwork

INFO_FILE = "classifier.json"
CHECKPOINTS = "checkpoints"
DEFAULT_MIN_STEPS = 1000
DEFAULT_MIN_EPOCHS = 3


class Classifier(nn.Module):
    """Conv (3x3) + ReLU per width, 2x2 average pooling after each while the side is >= 8; flatten; Dense
    feature_dim + ReLU (the features); Dense num_classes (the logits).

    E.g. 8x8 digits: 8x8x32 -> 4x4x64 -> 128 -> 10; 28x28 MNIST: 14x14x32 -> 7x7x64 -> 128 -> 10.
    """

    num_classes: int
    widths: Sequence[int] = (32, 64)
    feature_dim: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """images [B, H, W, C] in [-1, 1] -> (features [B, feature_dim], logits [B, num_classes])."""
        x = x.astype(jnp.float32)
        for i, width in enumerate(self.widths):
            x = nn.relu(nn.Conv(width, (3, 3), name=f"conv{i}")(x))
            if min(x.shape[1], x.shape[2]) >= 8:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        features = nn.relu(nn.Dense(self.feature_dim, name="features")(x))
        logits = nn.Dense(self.num_classes, name="logits")(features)
        return features, logits


def params_hash(params: Any) -> str:
    """First 10 hex digits of the SHA-256 over the params' paths, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        leaf = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}:{leaf.shape}:{leaf.dtype};".encode())
        h.update(leaf.tobytes())
    return h.hexdigest()[:10]


def dataset_tag(source: str) -> str:
    """A short, filename-safe name of a data source: "digits", "mnist", "npz-mnist" (for npz:/x/mnist.npz),
    "folder-faces" (for folder:/x/faces)."""
    kind, location = data.parse_source(source)
    local = kind in ("npz", "npy", "folder")
    stem = f"{kind}-{os.path.splitext(os.path.basename(os.path.normpath(location)))[0]}" if local else location
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-") or "data"


def network_name(source: str, params: Any) -> str:
    return f"classifier:{dataset_tag(source)}:{params_hash(params)}"


# ------------------------------------------------------------------------------------------------ training


def _cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _make_train_step(model: Classifier, optimizer: optax.GradientTransformation) -> Callable:
    @jax.jit
    def step(params, opt_state, images, labels):
        def loss_fn(p):
            _, logits = model.apply(p, images)
            return _cross_entropy(logits, labels), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
        return optax.apply_updates(params, updates), opt_state, loss, accuracy

    return step


def _batched_apply(apply: Callable, batch_size: int) -> Callable:
    """params, images [N, H, W, C] float -> apply(params, images) (a pytree of arrays [N, ...]) as numpy, in
    fixed-size chunks (the last one padded), so one compiled function serves every N."""
    apply = jax.jit(apply)

    def run(params, images: np.ndarray) -> Any:
        n = images.shape[0]
        parts = []
        for start in range(0, n, batch_size):
            chunk = np.asarray(images[start:start + batch_size], np.float32)
            m = chunk.shape[0]
            if m < batch_size:
                chunk = np.concatenate([chunk, np.zeros((batch_size - m,) + chunk.shape[1:], np.float32)])
            parts.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:m], apply(params, chunk)))
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)

    return run


def accuracy(model: Classifier, params: Any, arrays: data.Arrays, batch_size: int = 256) -> float:
    """Top-1 accuracy on a labelled split."""
    _, logits = _batched_apply(model.apply, batch_size)(params, data.to_float(arrays.images, arrays.max_value))
    return float(np.mean(np.argmax(logits, -1) == arrays.labels))


def train_classifier(
    source: str,
    workdir: str,
    *,
    data_dir: str | None = None,
    epochs: int | None = None,
    num_steps: int | None = None,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    widths: Sequence[int] = (32, 64),
    feature_dim: int = 128,
    test_split: str = "test",
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Train a `Classifier` on the train split of `source` with Adam, save it in `workdir`, and report.

    Length: `num_steps` if given, else `epochs` epochs, else max(3 epochs, 1000 steps) (digits: ~84 epochs of
    its 1,500 images; MNIST: 3 epochs). Batches are drawn from a fresh permutation per epoch
    (np.random.default_rng([seed, epoch])), the last incomplete batch of an epoch is dropped. One device.

    Returns the contents of classifier.json: dataset, name, image_shape, num_classes, feature_dim, widths,
    max_value, test_accuracy, test_examples, train_accuracy (the last 10 steps' mean), num_steps, seconds.
    Raises ValueError when the source has no labels, or `workdir` already holds a classifier (unless
    `overwrite`).
    """
    info_path = os.path.join(workdir, INFO_FILE)
    if os.path.exists(info_path) and not overwrite:
        raise ValueError(f"{workdir!r} already holds a classifier ({info_path}); use another --workdir or "
                         "overwrite=True (--overwrite).")
    if os.path.exists(os.path.join(workdir, CHECKPOINTS)) and overwrite:
        import shutil

        shutil.rmtree(os.path.join(workdir, CHECKPOINTS))
    train = data.load_arrays(source, "train", data_dir=data_dir)
    test = data.load_arrays(source, test_split, data_dir=data_dir)
    for split, arrays in (("train", train), (test_split, test)):
        if arrays.labels is None:
            raise ValueError(f"dataset {source!r} split {split!r} has no labels; a classifier needs labelled data.")
    if test.images.shape[1:] != train.images.shape[1:]:
        raise ValueError(f"{source!r}: train images {train.images.shape[1:]} and {test_split} images "
                         f"{test.images.shape[1:]} differ in shape.")
    n = train.images.shape[0]
    if batch_size < 1 or batch_size > n:
        raise ValueError(f"batch_size must be in [1, {n}] (the train split's size), got {batch_size}.")
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    steps_per_epoch = n // batch_size
    if num_steps is None:
        num_steps = (epochs * steps_per_epoch if epochs is not None
                     else max(DEFAULT_MIN_EPOCHS * steps_per_epoch, DEFAULT_MIN_STEPS))
    if num_steps < 1:
        raise ValueError(f"the classifier needs at least one training step, got {num_steps}.")

    model = Classifier(num_classes=num_classes, widths=tuple(widths), feature_dim=feature_dim)
    image_shape = tuple(int(s) for s in train.images.shape[1:])
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1,) + image_shape, jnp.float32))
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    step_fn = _make_train_step(model, optimizer)

    from tqdm.auto import tqdm

    bar = tqdm(total=num_steps, disable=not progress, unit="step", desc=f"classifier {dataset_tag(source)}")
    start = time.perf_counter()
    recent = []
    step = 0
    while step < num_steps:
        epoch = step // steps_per_epoch
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        for b in range(step % steps_per_epoch, steps_per_epoch):
            idx = np.sort(perm[b * batch_size:(b + 1) * batch_size])
            images = data.to_float(train.images[idx], train.max_value)
            params, opt_state, loss, acc = step_fn(params, opt_state, images, train.labels[idx])
            step += 1
            recent = (recent + [acc])[-10:]
            bar.update(1)
            if step % 50 == 0 or step == num_steps:
                bar.set_postfix(loss=f"{float(loss):.4f}")
            if step == num_steps:
                break
    params = jax.device_get(params)
    bar.close()
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, params, test)

    ckpt = checkpoint.Checkpointer(os.path.join(workdir, CHECKPOINTS), max_to_keep=1, async_save=False)
    ckpt.save(num_steps, params, {})
    ckpt.close()
    info = dict(
        dataset=source, data_dir=data_dir, name=network_name(source, params), params_hash=params_hash(params),
        image_shape=list(image_shape), num_classes=num_classes, feature_dim=feature_dim, widths=list(widths),
        max_value=int(train.max_value), test_split=test_split, test_accuracy=test_accuracy,
        test_examples=int(test.images.shape[0]), train_accuracy=float(np.mean([float(a) for a in recent])),
        num_steps=int(num_steps), batch_size=batch_size, learning_rate=learning_rate, seed=seed,
        seconds=seconds,
    )
    write_text(info_path, json.dumps(info, indent=2))
    return info


# ------------------------------------------------------------------------------------------------ loading


def load_classifier(workdir: str) -> tuple[Classifier, Any, dict]:
    """(model, params, info) of a trained classifier directory; checks the params against the saved hash."""
    info_path = os.path.join(workdir, INFO_FILE)
    if not os.path.exists(info_path):
        raise FileNotFoundError(f"{info_path} not found: {workdir!r} holds no trained classifier (train one with "
                                "python -m ddpm_jax train-classifier --dataset NAME --workdir DIR).")
    with open(info_path) as f:
        info = json.load(f)
    model = Classifier(num_classes=info["num_classes"], widths=tuple(info["widths"]),
                       feature_dim=info["feature_dim"])
    like = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + tuple(info["image_shape"]), jnp.float32))
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, CHECKPOINTS), async_save=False)
    try:
        params, _ = ckpt.restore(like)
    finally:
        ckpt.close()
    params = jax.tree_util.tree_map(np.asarray, params)
    if params_hash(params) != info["params_hash"]:
        raise ValueError(f"the classifier params in {workdir!r} do not match the hash in {INFO_FILE} "
                         f"({info['params_hash']}): the checkpoint was changed after training. Retrain it.")
    return model, params, info


def feature_network(workdir: str, *, batch_size: int = 256) -> FeatureNetwork:
    """The FeatureNetwork of a trained classifier: images [B, H, W, C] in [-1, 1] (the classifier's own image
    shape) -> {"features": [B, feature_dim] (penultimate, after ReLU), "logits": [B, num_classes]}.

    It carries its pure form (`FeatureNetwork.apply`, `.params`), so `extract_features_sharded` pmaps it over
    all devices; called directly it runs in chunks of `batch_size` images (one compiled function for every B)."""
    model, params, info = load_classifier(workdir)
    params = jax.device_put(params)
    image_shape = tuple(info["image_shape"])

    def apply(params, images):
        if tuple(images.shape[1:]) != image_shape:
            raise ValueError(f"classifier {info['name']!r} takes images of shape {image_shape} (its dataset "
                             f"{info['dataset']!r}), got {tuple(images.shape[1:])}; no resizing is done.")
        features, logits = model.apply(params, images)
        return {"features": features, "logits": logits}

    run = _batched_apply(apply, batch_size)
    return FeatureNetwork(info["name"], lambda images: run(params, np.asarray(images, np.float32)), apply=apply,
                          params=params)
