"""One input pipeline, whatever the source: tfds datasets, local arrays, image folders, the embedded default.

Every source is first loaded into host memory as uint8 arrays (`load_arrays`); one numpy pipeline
(`Pipeline`, built by `make_iterator`) then shuffles, repeats, flips, splits per host and shapes the batches
for the devices:

    batch = {"image": float32 [num_local_devices, per_device_batch, H, W, C] in [-1, 1],
             "label": int32   [num_local_devices, per_device_batch, ...]}   # only if the source has labels

Sources (the `source` string):

* ``"digits"`` (the default, embedded, offline): scikit-learn's bundled 8x8 handwritten digits
  (`sklearn.datasets.load_digits`, 1797 images, pixel values 0..16), labels 0..9, images [N, 8, 8, 1].
  They are kept as uint8 0..16 with ``max_value=16`` and mapped to [-1, 1] exactly as v / 16 * 2 - 1.
  Deterministic split: ``"train"`` = the first 1500 images, ``"test"`` = the last 297.
* a tensorflow-datasets name: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"celeb_a"``, or any tfds
  dataset with a fixed-shape uint8 ``image`` feature (labels from ``label`` when present). Loaded with
  ``tfds.builder(name, data_dir=data_dir)``; the data must already be prepared in ``data_dir`` (this module
  never downloads), else `DatasetNotFoundError` says where tfds looked and how to provide it. Prepared as
  array_record it is read through ``builder.as_data_source`` without TensorFlow; prepared as TFRecord (tfds'
  default) it needs TensorFlow (requirements-tf.txt), and without it the ImportError says how to convert. Any
  tfds split string works (``"train"``, ``"test"``, ``"train[:10%]"``, ...).
  ``celeb_a``: the 218x178 (HxW) aligned faces are center-cropped to 140x140 (rows 39..178, columns 19..158)
  and resized to 64x64 (bilinear with antialiasing, rounded back to uint8), as in the DDIM / score_sde code.
* local arrays: ``"npz:/path/file.npz"`` or ``"npy:/path/file.npy"`` (a bare path ending in .npz / .npy
  works too). An .npz holds ``x_train``/``y_train``/``x_test``/``y_test`` (split ``"train"`` reads
  ``x_train`` and, if present, ``y_train``), or a single set ``images`` (+ optional ``labels``) that is only
  available as split ``"train"``. An .npy holds images only, split ``"train"``. Images must be uint8
  [N, H, W] (grayscale, becomes [N, H, W, 1]) or [N, H, W, C]; labels integer [N].
  A local MNIST copy: ``np.savez("mnist.npz", x_train=..., y_train=..., x_test=..., y_test=...)``.
* an image folder: ``"folder:/path"`` with ``image_size`` (config.data.image_size): every PNG/JPEG under it,
  recursively, center-cropped and resized to image_size x image_size; labels from first-level class subfolders
  when no image lies directly in the folder; split ``"train"`` only; cached as an .npz (`folder_cache_dir`)
  keyed on the file list, sizes, mtimes and image_size. Details in docs/data.md.
* a time series: ``"series:co2"``, ``"series:elnino"`` (bundled with statsmodels) or ``"series:/path/file.npy"``,
  cut into windows of ``window = dict(context=L, horizon=H, test_size=S)`` (`ddpm_jax.series`): float32
  [N, L + H, C], each window scaled by its context; split ``"train"`` / ``"test"`` in time, without overlap.
  Batches then hold ``"image": float32 [num_devices, per_device_batch, L + H, C]`` (no labels, no flips).
* captioned digit pairs: ``"pairs:SOURCE"`` (``"pairs:digits"``, ``"pairs:mnist"``, ``"pairs:npz:/path.npz"``):
  canvases [N, H, 2W, C] of two digits of SOURCE's split side by side, labels [N, 2] (left, right digit) and a
  caption per canvas (`Arrays.captions`); see `ddpm_jax.text_pairs` (held-out pairs, templates, sizes).

Order, randomness and resuming. The whole dataset (all hosts together) is read as one endless stream:
epoch e is the permutation ``np.random.default_rng([seed, e]).permutation(N)``, epochs are concatenated,
and global batch k is stream elements [k * G, (k + 1) * G) for global batch size G (a batch may straddle an
epoch boundary, so nothing is dropped and every epoch visits every example exactly once). Host p of P takes
rows [p * G / P, (p + 1) * G / P) of each global batch, so hosts are disjoint and together cover the dataset;
the global batches do not depend on the number of hosts or devices. The horizontal flip of the element at
position i of epoch e is ``np.random.default_rng([seed, e, 1]).random(N)[i] < 0.5``. Hence every batch is a
pure function of (seed, position), and the position ``{"epoch": e, "index": i}`` (i = next stream element
within epoch e; the same on all hosts) is the whole state: a checkpoint stores `Pipeline.state()` and
``make_iterator(..., state=saved)`` continues with exactly the batch the original would have yielded next.

Memory: sources are held in host memory as uint8 (mnist 47 MB, cifar10 150 MB, celeb_a train after the
64x64 resize about 2 GB; every host holds the whole dataset). Datasets whose images have no fixed shape
(other than celeb_a) are rejected rather than silently resized.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

BUILTIN_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "celeb_a")
DIGITS_NUM_TEST = 297

_CELEBA_CROP = 140
_CELEBA_SIZE = 64


class DatasetNotFoundError(ValueError):
    """A tfds dataset is not prepared in `data_dir` and this module will not download it."""


class Arrays(NamedTuple):
    """A dataset split in host memory.

    images: uint8 [N, H, W, C], values 0..max_value; or float32 [N, L, C] already in the model's units (series
      windows, used as they are).
    labels: int32 [N] (or [N, ...]: the digit pairs' [N, 2], tokenized captions [N, L]), or None when the source
      has no labels.
    max_value: the pixel value that maps to +1 (255 for ordinary images, 16 for "digits"; unused for float32).
    captions: one string per image (the digit pairs), or None.
    """

    images: np.ndarray
    labels: np.ndarray | None
    max_value: int = 255
    captions: tuple[str, ...] | None = None


def to_float(images: np.ndarray, max_value: int = 255) -> np.ndarray:
    """uint8 [..., H, W, C] in 0..max_value -> float32 in [-1, 1]: v / (max_value / 2) - 1 (255: v/127.5-1)."""
    return (images.astype(np.float32) / np.float32(max_value / 2) - np.float32(1)).astype(np.float32)


def to_uint8(images, max_value: int = 255):
    """Float images in [-1, 1] -> uint8 levels 0..max_value, the inverse of `to_float` on its grid; any shape.

    round((clip(x, -1, 1) + 1) * max_value / 2), rounding half to even: -1 -> 0, 1 -> max_value, and for 255,
    0 -> 127.5 -> 128. The one float-to-pixel conversion of the package (grids, PNGs, metric inputs). numpy
    arrays are converted in float64 and must be finite (a diverged sample should be noticed, not drawn black);
    jax arrays (also traced, inside jit) with jax.numpy in their own dtype. uint8 input is returned unchanged;
    other integer or boolean dtypes are refused (their range is ambiguous).
    """
    if getattr(images, "dtype", None) == np.uint8:
        return images
    if "jax" in type(images).__module__:
        import jax.numpy as jnp

        return jnp.round((jnp.clip(images, -1.0, 1.0) + 1.0) * (max_value / 2.0)).astype(jnp.uint8)
    arr = np.asarray(images)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"to_uint8 expects float images in [-1, 1] (or uint8), got dtype {arr.dtype}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"to_uint8 got {int(np.sum(~np.isfinite(arr)))} non-finite values (NaN or inf).")
    return np.round((np.clip(arr.astype(np.float64), -1.0, 1.0) + 1.0) * (max_value / 2.0)).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ sources


def _accepted_sources() -> str:
    return (
        f"built-in names {', '.join(repr(n) for n in BUILTIN_DATASETS)}; any tensorflow-datasets name with an "
        "'image' feature (optionally written 'tfds:NAME'); a local file 'npz:/path/file.npz' / 'npy:/path/file.npy'; "
        "an image folder 'folder:/path' (with config.data.image_size); a time series 'series:NAME' (co2, elnino, "
        "or a path to an .npy); or captioned digit pairs 'pairs:SOURCE' (pairs:digits, pairs:mnist, ...)"
    )


class Source(NamedTuple):
    """A parsed source string: kind "digits" | "npz" | "npy" | "folder" | "tfds" | "series", and the path, tfds
    name or series name."""

    kind: str
    location: str


def parse_source(source: str) -> Source:
    """The one parser of source strings: "digits"; "npz:PATH" / "npy:PATH" or a bare path ending in .npz / .npy;
    "folder:DIR"; "tfds:NAME" or a bare tfds NAME; "series:NAME"; "pairs:SOURCE", captioned pairs of SOURCE's
    digits (`text_pairs`)."""
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty string, got {source!r}; accepted: {_accepted_sources()}")
    if source == "digits":
        return Source("digits", "digits")
    for kind in ("pairs", "npz", "npy", "folder", "tfds", "series"):
        if source.startswith(kind + ":"):
            return Source(kind, source[len(kind) + 1:])
    for kind in ("npz", "npy"):
        if source.endswith("." + kind):
            return Source(kind, source)
    return Source("tfds", source)


# Datasets whose images have a handedness that a horizontal flip breaks (benchmarks/mirror_asymmetry.py measures it).
ONE_SIDED = {"digits": "digits read one way", "mnist": "digits read one way",
             "fashion_mnist": "its shoes all point one way (99% of the sneakers, 100% of the ankle boots)"}


def one_sided(source: str) -> str | None:
    """Why mirrored images of `source` are images its data never hold, for a dataset of ONE_SIDED ("digits", its tfds
    name, or an .npz / .npy file named after it); None for any other source."""
    kind, location = parse_source(source)
    if kind in ("npz", "npy"):
        location = os.path.splitext(os.path.basename(location))[0]
    return ONE_SIDED.get(location) if kind in ("digits", "tfds", "npz", "npy") else None


def _check_arrays(images: np.ndarray, labels: np.ndarray | None, where: str) -> Arrays:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(
            f"{where}: images must be uint8 (values 0..255), got dtype {images.dtype}; convert with e.g. "
            "np.round(x * 255).astype(np.uint8) for floats in [0, 1]"
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(
            f"{where}: images must be [N, H, W] or [N, H, W, C], got shape {images.shape} (ndim {images.ndim})"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{where}: no images (shape {images.shape})")
    if labels is not None:
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (images.shape[0],):
            raise ValueError(
                f"{where}: labels must be integers of shape [N] = [{images.shape[0]}], "
                f"got dtype {labels.dtype} shape {labels.shape}"
            )
        labels = labels.astype(np.int32)
    return Arrays(images, labels, 255)


def _load_npz(path: str, split: str) -> Arrays:
    if not os.path.exists(path):
        raise FileNotFoundError(f"local dataset file {path!r} does not exist")
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if f"x_{split}" in keys:
            x, y = f"x_{split}", f"y_{split}"
        elif "images" in keys and split == "train":
            x, y = "images", "labels"
        else:
            raise ValueError(
                f"{path}: no images for split {split!r}; an .npz needs keys 'x_{split}' (and optionally "
                f"'y_{split}'), or 'images' (+ optional 'labels') which is split 'train'. Keys found: "
                f"{sorted(keys)}"
            )
        images = f[x]
        labels = f[y] if y in keys else None
    return _check_arrays(images, labels, f"{path}[{x!r}]")


def _load_npy(path: str, split: str) -> Arrays:
    if not os.path.exists(path):
        raise FileNotFoundError(f"local dataset file {path!r} does not exist")
    if split != "train":
        raise ValueError(f"{path}: an .npy file holds one set of images, available as split 'train', not {split!r}")
    return _check_arrays(np.load(path, allow_pickle=False), None, path)


def _load_digits(split: str) -> Arrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.uint8)[..., None]  # values 0..16
    labels = d.target.astype(np.int32)
    n_train = images.shape[0] - DIGITS_NUM_TEST
    if split == "train":
        sl = slice(0, n_train)
    elif split == "test":
        sl = slice(n_train, None)
    else:
        raise ValueError(f"digits: unknown split {split!r}; accepted: 'train' (first {n_train}), "
                         f"'test' (last {DIGITS_NUM_TEST})")
    return Arrays(np.ascontiguousarray(images[sl]), labels[sl], 16)


def _load_pairs(source: str, split: str, data_dir: str | None) -> Arrays:
    from ddpm_jax import text_pairs

    inner = load_arrays(source, split, data_dir=data_dir)
    if inner.labels is None:
        raise ValueError(f"pairs:{source}: the source has no labels; digit pairs need labelled digits.")
    canvases, digits, _, captions = text_pairs.make_pairs(inner.images, inner.labels, split)
    return Arrays(canvases, digits, inner.max_value, captions)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
FOLDER_CACHE_VERSION = 1  # bump when the decoding below changes, so old caches are not reused


def folder_cache_dir() -> str:
    """Where image folders are cached as arrays: $DDPM_JAX_CACHE, else $XDG_CACHE_HOME/ddpm_jax, else
    ~/.cache/ddpm_jax; then folders/."""
    base = os.environ.get("DDPM_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ddpm_jax")
    return os.path.join(base, "folders")


def _list_folder(root: str) -> tuple[list[str], list[str] | None]:
    """(image paths relative to root, sorted; class names or None). Hidden files and folders are skipped.
    Classes: when no image lies directly in root, each image's label is its first-level subfolder."""
    paths = []
    for directory, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(directory, root)
        paths += [os.path.normpath(os.path.join(rel, f)) for f in files
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    paths.sort()
    if not paths:
        raise ValueError(f"image folder {root!r} holds no images (searched recursively for "
                         f"{', '.join(IMAGE_EXTENSIONS)})")
    top = [p.split(os.sep)[0] if os.sep in p else None for p in paths]
    classes = None if None in top else sorted(set(top))
    return paths, classes


def _decode(path: str, size: int) -> np.ndarray:
    """One image -> uint8 [size, size, C]: EXIF orientation applied, grayscale kept as 1 channel, anything else as
    RGB (alpha dropped), the largest centred square of the image's aspect cropped and resized (PIL bicubic,
    antialiased when shrinking; `ImageOps.fit`). A file that opens but does not decode (cut off partway, damaged
    data) raises OSError naming it (PIL's own "image file is truncated" names no file)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:  # a file that is no image: PIL's "cannot identify image file PATH"
        try:
            image = ImageOps.exif_transpose(image)
            image = image.convert("L" if image.mode in ("1", "L", "I;16", "I") else "RGB")
            image = ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC)
            array = np.asarray(image, dtype=np.uint8)
        except (OSError, SyntaxError, EOFError) as e:  # PIL: OSError (truncated), SyntaxError (broken PNG chunks)
            raise OSError(f"cannot decode image file {path!r}: {e} (the file is cut off or damaged: replace or "
                          "remove it)") from e
    return array[..., None] if array.ndim == 2 else array


def _load_folder(root: str, split: str, image_size: int | None) -> Arrays:
    """An image folder, decoded once and cached as an .npz keyed on the file list, sizes, mtimes and image_size."""
    import concurrent.futures
    import hashlib
    import json

    from ddpm_jax import files

    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist or is not a directory")
    if split != "train":
        raise ValueError(f"{root}: an image folder is one set of images, available as split 'train', not {split!r}")
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image folder {root!r} needs config.data.image_size, a positive integer (images are "
                         f"center-cropped and resized to image_size x image_size), got {image_size!r}")
    root = os.path.abspath(root)
    paths, classes = _list_folder(root)
    stats = [os.stat(os.path.join(root, p)) for p in paths]
    key = json.dumps([FOLDER_CACHE_VERSION, root, int(image_size),
                      [(p, st.st_size, st.st_mtime_ns) for p, st in zip(paths, stats)]])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = os.path.join(folder_cache_dir(), f"{os.path.basename(root) or 'root'}-{image_size}px-{digest}.npz")
    if not os.path.exists(cache):
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            decoded = list(pool.map(lambda p: _decode(os.path.join(root, p), int(image_size)), paths))
        if len({a.shape[-1] for a in decoded}) > 1:  # a mix of grayscale and colour: all as RGB
            decoded = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in decoded]
        out = dict(images=np.stack(decoded))
        if classes is not None:
            index = {c: i for i, c in enumerate(classes)}
            out["labels"] = np.asarray([index[p.split(os.sep)[0]] for p in paths], np.int32)
        with files.atomic_write(cache, "wb") as f:
            np.savez(f, **out)
    return _load_npz(cache, "train")


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(f"tfds sources need tensorflow-datasets (in requirements.txt): {e}") from None
    return tfds


def _import_tf(name: str, data_dir: str):
    """TensorFlow, only for tfds datasets prepared as TFRecord files; kept off the accelerators JAX owns."""
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(
            f"tfds dataset {name!r} in {data_dir} is prepared as TFRecord files, and reading TFRecords needs "
            "TensorFlow, which is not installed. Either install it (`pip install -r requirements-tf.txt` or "
            "`pip install -e .[tf]`), or convert the dataset once to array_record, which is read without "
            f"TensorFlow: rebuild it with `tfds build NAME --data_dir=DIR --file_format=array_record`, or, where "
            f"tensorflow and apache-beam are installed, run `tfds convert_format --dataset_version_dir={data_dir} "
            "--out_file_format=array_record`."
        ) from None
    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):  # already initialized, or no such device type
        pass
    return tf


def _tfds_builder(name: str, data_dir: str | None):
    tfds = _import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"unknown dataset {name!r}; accepted: {_accepted_sources()}") from None
    features = builder.info.features
    if "image" not in features:
        raise ValueError(
            f"tfds dataset {name!r} has no 'image' feature (features: {sorted(features.keys())}); "
            f"accepted: {_accepted_sources()}"
        )
    img = features["image"]
    shape, dtype = tuple(img.shape), np.dtype(getattr(img, "np_dtype", None) or img.dtype)
    if dtype != np.uint8 or len(shape) != 3:
        raise ValueError(f"tfds dataset {name!r}: 'image' must be uint8 [H, W, C], got {dtype} {shape}")
    if builder.name != "celeb_a" and None in shape:
        raise ValueError(f"tfds dataset {name!r}: images have no fixed shape {shape}; only fixed-shape "
                         "images are supported (celeb_a is center-cropped and resized)")
    return builder


def _not_prepared_message(name: str, split: str, builder, data_dir: str | None, cause: str) -> str:
    base = data_dir if data_dir is not None else os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    return (
        f"tfds dataset {name!r} (split {split!r}) is not available offline: no prepared data in "
        f"{builder.data_dir} (data_dir={base!r}). This pipeline never downloads. To provide it: (1) on a "
        f"machine with internet run `tfds build {builder.name} --data_dir=DIR --file_format=array_record` (or "
        f"`tfds.builder({builder.name!r}, data_dir=DIR, file_format='array_record').download_and_prepare()`; "
        f"array_record is read without TensorFlow) and copy DIR/{builder.name} into {base}, then pass data_dir; "
        f"or (2) save uint8 arrays to an .npz (x_train, y_train, x_test, y_test) and use "
        f"source='npz:/path/file.npz'. (tfds said: {cause})"
    )


def _celeba_crop(image):
    """The central 140x140 of an aligned CelebA face [218, 178, 3] (numpy or a TensorFlow tensor)."""
    top, left = (image.shape[0] - _CELEBA_CROP) // 2, (image.shape[1] - _CELEBA_CROP) // 2
    return image[top:top + _CELEBA_CROP, left:left + _CELEBA_CROP]


def _celeba_resize(images: np.ndarray) -> np.ndarray:
    """uint8 [B, 140, 140, 3] -> [B, 64, 64, 3]: bilinear with antialiasing, rounded. jax.image.resize computes
    TensorFlow's `tf.image.resize(..., antialias=True)` (the same scale_and_translate kernel)."""
    import jax

    out = []
    for part in np.array_split(images, -(-len(images) // 512)):
        x = jax.image.resize(part.astype(np.float32), (len(part), _CELEBA_SIZE, _CELEBA_SIZE, part.shape[3]),
                             "bilinear", antialias=True)
        out.append(np.clip(np.round(np.asarray(x)), 0, 255).astype(np.uint8))
    return np.concatenate(out)


_CHUNK = 4096  # examples read at a time


def _array_record_chunks(builder, split: str, keys: tuple[str, ...], crop):
    """{key: stacked numpy} chunks of an array_record-prepared split, through `as_data_source` (no TensorFlow)."""
    source = builder.as_data_source(split=split)
    for start in range(0, len(source), _CHUNK):
        examples = [source[i] for i in range(start, min(start + _CHUNK, len(source)))]
        yield {k: np.stack([crop(ex[k]) if k == "image" else ex[k] for ex in examples]) for k in keys}


def _tfrecord_chunks(builder, split: str, keys: tuple[str, ...], crop, name: str):
    """{key: stacked numpy} chunks of a TFRecord-prepared split, through `as_dataset` (needs TensorFlow)."""
    tf = _import_tf(name, builder.data_dir)
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda ex: {k: crop(ex[k]) if k == "image" else ex[k] for k in keys},
                num_parallel_calls=tf.data.AUTOTUNE)
    yield from _import_tfds().as_numpy(ds.batch(_CHUNK))


def _load_tfds(name: str, split: str, data_dir: str | None) -> Arrays:
    """Array_record-prepared datasets are read without TensorFlow; TFRecord-prepared ones need it."""
    tfds = _import_tfds()
    builder = _tfds_builder(name, data_dir)
    keys = ("image", "label") if "label" in builder.info.features else ("image",)
    celeba = builder.name == "celeb_a"
    crop = _celeba_crop if celeba else (lambda image: image)
    images, labels = [], []
    try:
        if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
            chunks = _array_record_chunks(builder, split, keys, crop)
        else:
            chunks = _tfrecord_chunks(builder, split, keys, crop, name)
        for chunk in chunks:
            images.append(_celeba_resize(chunk["image"]) if celeba else chunk["image"])
            if "label" in keys:
                labels.append(chunk["label"])
    except Exception as e:  # noqa: BLE001 - unprepared data shows up as AssertionError / various
        if builder.is_prepared():
            raise
        raise DatasetNotFoundError(
            _not_prepared_message(name, split, builder, data_dir, f"{type(e).__name__}: {str(e)[:200]}")
        ) from None
    if not images:
        raise ValueError(f"tfds dataset {name!r} split {split!r} is empty")
    return _check_arrays(np.concatenate(images), np.concatenate(labels) if labels else None,
                         f"tfds {name!r} split {split!r}")


def load_arrays(source: str, split: str = "train", *, data_dir: str | None = None,
                image_size: int | None = None, window: Mapping[str, int] | None = None) -> Arrays:
    """Load one split of a source into host memory (see the module docstring for the sources).

    `image_size` (config.data.image_size): the side that images of a "folder:" source are cropped and resized
    to; required for those, an error for any other source (they keep their own size).
    Returns Arrays(images uint8 [N, H, W, C], labels int32 [N] or None, max_value); for a series source, the
    scaled windows float32 [N, context + horizon, C] of `window` = dict(context, horizon, test_size).
    Raises ValueError for an unknown source or malformed arrays, DatasetNotFoundError (a ValueError) for a
    tfds dataset that is not prepared in `data_dir`.
    """
    kind, location = parse_source(source)
    if kind == "series":
        from ddpm_jax import series

        return Arrays(series.load_windows(location, split, **_window(source, window)).scaled, None, 1)
    if window is not None:
        raise ValueError(f"a window (config.data.window) applies to series sources ('series:NAME'), not {source!r}")
    if kind == "folder":
        return _load_folder(location, split, image_size)
    if image_size is not None:
        raise ValueError(f"config.data.image_size={image_size!r} applies only to image folders ('folder:/path'); "
                         f"source {source!r} keeps its own image size: set image_size to None")
    if kind == "digits":
        return _load_digits(split)
    if kind == "pairs":
        return _load_pairs(location, split, data_dir)
    if kind == "npz":
        return _load_npz(location, split)
    if kind == "npy":
        return _load_npy(location, split)
    return _load_tfds(location, split, data_dir)


def _window(source: str, window: Mapping[str, int] | None) -> dict[str, int]:
    fields = ("context", "horizon", "test_size")
    if window is None or set(window) != set(fields):
        raise ValueError(f"series source {source!r} needs a window: dict(context=L, horizon=H, test_size=S) (steps; "
                         f"config.data.window), got {None if window is None else dict(window)}")
    return {k: int(window[k]) for k in fields}


def image_shape(source: str, *, data_dir: str | None = None, image_size: int | None = None,
                window: Mapping[str, int] | None = None) -> tuple[int, ...]:
    """(H, W, C) of the images a source yields, e.g. for building the model; (context + horizon, C) of a series'
    windows.

    For tfds names this reads only the dataset metadata (no data needed); local files, folders and series are read.
    """
    kind, location = parse_source(source)
    if kind == "series":
        from ddpm_jax import series

        w = _window(source, window)
        return (w["context"] + w["horizon"], series.load_series(location).shape[1])
    if kind == "folder" or image_size is not None:
        return tuple(int(s) for s in load_arrays(source, data_dir=data_dir, image_size=image_size).images.shape[1:])
    if kind == "digits":
        return (8, 8, 1)
    if kind == "pairs":
        h, w, c = image_shape(location, data_dir=data_dir)
        return (h, 2 * w, c)
    if kind == "tfds":
        builder = _tfds_builder(location, data_dir)
        if builder.name == "celeb_a":
            return (_CELEBA_SIZE, _CELEBA_SIZE, 3)
        return tuple(int(s) for s in builder.info.features["image"].shape)
    return tuple(int(s) for s in load_arrays(source, data_dir=data_dir).images.shape[1:])


# ------------------------------------------------------------------------------------------------ pipeline


def _as_state(state: Mapping[str, Any], num_examples: int) -> tuple[int, int]:
    try:
        epoch, index = int(np.asarray(state["epoch"])), int(np.asarray(state["index"]))
    except (KeyError, TypeError) as e:
        raise ValueError(f"pipeline state must be a mapping with integer 'epoch' and 'index', got {state!r}") from e
    if epoch < 0 or not 0 <= index < num_examples:
        raise ValueError(f"pipeline state {state!r} out of range: need epoch >= 0 and 0 <= index < {num_examples}")
    return epoch, index


class Pipeline:
    """Endless, seeded, resumable iterator of device-shaped numpy batches.

    next(pipeline) -> {"image": float32 [num_devices, per_device, H, W, C] in [-1, 1],
                       "label": int32 [num_devices, per_device]}   ("label" only if the source has labels)
    with per_device = global_batch_size // (process_count * num_devices).

    `state()` -> {"epoch": int, "index": int}: the position after the last batch returned (identical on every
    host); `set_state(state)` jumps there. `batch_at(state)` computes the batch at a position without moving.
    A background thread prepares up to `prefetch` batches ahead (0: none); `close()` stops it.
    """

    def __init__(
        self,
        source: str | Arrays,
        *,
        global_batch_size: int,
        seed: int,
        split: str = "train",
        random_flip: bool = False,
        data_dir: str | None = None,
        image_size: int | None = None,
        state: Mapping[str, Any] | None = None,
        num_devices: int | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        prefetch: int = 2,
    ):
        if num_devices is None or process_index is None or process_count is None:
            from ddpm_jax import parallel

            num_devices = parallel.local_device_count() if num_devices is None else num_devices
            process_index = parallel.process_index() if process_index is None else process_index
            process_count = parallel.process_count() if process_count is None else process_count
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} must be in [0, process_count={process_count})")
        total_devices = num_devices * process_count
        if global_batch_size <= 0 or global_batch_size % total_devices:
            raise ValueError(
                f"global batch size {global_batch_size} does not divide over {total_devices} devices "
                f"({process_count} process(es) x {num_devices} local devices); use a positive multiple of "
                f"{total_devices}"
            )
        self.arrays = source if isinstance(source, Arrays) else load_arrays(
            source, split, data_dir=data_dir, image_size=image_size)
        if random_flip and self.arrays.images.ndim != 4:
            raise ValueError(f"random_flip mirrors images [N, H, W, C]; these data have shape "
                             f"{self.arrays.images.shape}: set config.data.random_flip = False")
        self.num_examples = int(self.arrays.images.shape[0])
        self.global_batch_size = int(global_batch_size)
        self.seed = int(seed)
        self.random_flip = bool(random_flip)
        self.num_devices = int(num_devices)
        self.process_index = int(process_index)
        self.process_count = int(process_count)
        self.local_batch_size = self.global_batch_size // self.process_count
        self.per_device_batch_size = self.local_batch_size // self.num_devices
        self.prefetch = int(prefetch)
        self._perm_cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._offset = 0  # absolute stream position of the next global batch
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        if state is not None:
            self.set_state(state)

    # -- pure part: batch as a function of the position ---------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.arrays.images.shape[1:])

    @property
    def steps_per_epoch(self) -> float:
        """Global batches per epoch (N / global_batch_size; batches straddle epoch boundaries)."""
        return self.num_examples / self.global_batch_size

    def _epoch_tables(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        with self._lock:  # the prefetch thread and batch_at() may both get here
            return self._epoch_tables_locked(epoch)

    def _epoch_tables_locked(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        if epoch not in self._perm_cache:
            if len(self._perm_cache) >= 4:
                self._perm_cache.pop(min(self._perm_cache))
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            flips = (np.random.default_rng([self.seed, epoch, 1]).random(self.num_examples) < 0.5
                     if self.random_flip else None)
            self._perm_cache[epoch] = (perm, flips)
        return self._perm_cache[epoch]

    def _batch_at_offset(self, offset: int) -> dict[str, np.ndarray]:
        n = self.num_examples
        pos = offset + self.process_index * self.local_batch_size + np.arange(self.local_batch_size)
        epochs, within = pos // n, pos % n
        idx = np.empty(self.local_batch_size, np.int64)
        flip = np.zeros(self.local_batch_size, bool)
        for e in np.unique(epochs):
            m = epochs == e
            perm, flips = self._epoch_tables(int(e))
            idx[m] = perm[within[m]]
            if flips is not None:
                flip[m] = flips[within[m]]
        images = self.arrays.images[idx]
        if flip.any():
            images[flip] = images[flip, :, ::-1]
        shape = (self.num_devices, self.per_device_batch_size)
        if images.dtype != np.float32:
            images = to_float(images, self.arrays.max_value)
        batch = {"image": images.reshape(shape + images.shape[1:])}
        if self.arrays.labels is not None:
            labels = self.arrays.labels[idx]
            batch["label"] = labels.reshape(shape + labels.shape[1:])
        return batch

    def batch_at(self, state: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The batch this host gets at position `state` (does not move the pipeline)."""
        epoch, index = _as_state(state, self.num_examples)
        return self._batch_at_offset(epoch * self.num_examples + index)

    # -- state ---------------------------------------------------------------------------------------------
    def state(self) -> dict[str, int]:
        """{"epoch", "index"} after the last batch returned; store it in a checkpoint."""
        return {"epoch": self._offset // self.num_examples, "index": self._offset % self.num_examples}

    get_state = state

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from a position returned by `state()` (discards prefetched batches)."""
        epoch, index = _as_state(state, self.num_examples)
        self.close()
        self._offset = epoch * self.num_examples + index

    # -- iteration -----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.prefetch <= 0:
            batch = self._batch_at_offset(self._offset)
        else:
            if self._thread is None:
                self._start()
            item = self._queue.get()
            if isinstance(item, BaseException):
                self.close()
                raise item
            batch = item
        self._offset += self.global_batch_size
        return batch

    def _start(self) -> None:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        ref = weakref.ref(self)  # the worker must not keep the pipeline alive

        def put(item) -> None:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def work(offset: int, global_batch_size: int) -> None:
            try:
                while not stop.is_set():
                    pipeline = ref()
                    if pipeline is None:
                        return
                    item = pipeline._batch_at_offset(offset)
                    del pipeline
                    offset += global_batch_size
                    put(item)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                put(e)

        self._queue, self._stop = q, stop
        self._thread = threading.Thread(
            target=work, args=(self._offset, self.global_batch_size), daemon=True, name="ddpm-data-prefetch")
        self._thread.start()

    def close(self) -> None:
        """Stop the prefetch thread (iteration may continue afterwards; it restarts lazily)."""
        thread, stop = self._thread, self._stop
        self._thread = self._queue = self._stop = None
        if thread is not None:
            stop.set()
            if thread is not threading.current_thread():
                thread.join()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def make_iterator(source: str | Arrays, **kwargs: Any) -> Pipeline:
    """The input pipeline for `source` (a source string or loaded `Arrays`); keyword arguments as `Pipeline`:
    global_batch_size, seed, split, random_flip, data_dir, image_size, state (a position from `Pipeline.state()` to resume
    from), num_devices / process_index / process_count (default: this process's, from `parallel`), prefetch.
    """
    return Pipeline(source, **kwargs)
