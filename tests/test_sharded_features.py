"""Feature extraction for FID/IS on all devices (`extract_features_sharded`, `sample_quality.sample_features`,
`reference_stats.reference_features`): the same features, in the same order, as one device and as the network
applied on the host, whatever the device count, with sample counts that do not divide the devices.

Tolerance: rtol 1e-5, atol 1e-6 on float32 features. The devices run the same float32 program on different
per-device batch sizes (2 images on each of 8 devices vs 16 on one), and XLA:CPU may block a matmul
differently per batch size, so a feature may differ in its last bits (a few ulp, ~1e-7 relative); anything
larger (a wrong image, a wrong order, a padding row kept) is off by O(1). The metrics derived from the
features (FID, IS, KID, precision/recall) get rel 1e-4 for the same reason, amplified by the matrix square
root of FID.

`tiny_network` and `multihost_case` are also run by tests/multihost_worker.py (tests/test_multihost.py): two
processes must each compute only their share and end with these single-process features and metrics, and decide
together whether to load or compute the reference caches when only some processes hold them.
"""

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax import data, metrics, reference_stats, sample_quality
from ddpm_jax.metrics.feature_network import extract_features_sharded

RTOL, ATOL = 1e-5, 1e-6
SHAPE = (8, 8, 1)  # the "digits" images: reference statistics come from the embedded dataset
MAX_VALUE = 16  # digits' pixel grid


def tiny_network(calls: list | None = None, traces: list | None = None) -> metrics.FeatureNetwork:
    """A pure network on 8x8x1 images: features tanh(x W) [B, 6], logits features V [B, 3]. `traces` gets one
    entry per trace of `apply`; `calls` gets, per device and call, the number of images it computed (a
    jax.debug.callback, run on the process that owns the device)."""
    rng = np.random.default_rng(0)
    params = dict(w=rng.standard_normal((int(np.prod(SHAPE)), 6)).astype(np.float32) / 4,
                  v=rng.standard_normal((6, 3)).astype(np.float32))

    def apply(params, images):
        if traces is not None:
            traces.append(images.shape)
        if calls is not None:
            jax.debug.callback(lambda x: calls.append(int(x.shape[0])), images[:, 0, 0, 0])
        features = jnp.tanh(images.reshape(images.shape[0], -1) @ params["w"])
        return {"features": features, "logits": features @ params["v"]}

    return metrics.FeatureNetwork.from_apply("test:tiny", apply, params)


def numpy_features(images: np.ndarray) -> dict:
    """What tiny_network computes, in numpy float64, image by image independent of any batching."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((int(np.prod(SHAPE)), 6)).astype(np.float32) / 4
    v = rng.standard_normal((6, 3)).astype(np.float32)
    features = np.tanh(images.reshape(images.shape[0], -1).astype(np.float64) @ w)
    return {"features": features, "logits": features @ v}


def _samples(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n,) + SHAPE).astype(np.float32)


def multihost_case(devices=None) -> dict:
    """The multi-host check, also run in one process: features of 13 samples (quantized as evaluate does) and of
    11 reference images, in rounds of 8 images over the devices (13 and 11 divide neither 4 nor 8), their FID and
    IS, and how many images this process fed (`fed`, counted in the host transform) and its devices computed
    (`computed`, counted on the devices)."""
    calls, fed = [], []
    network = tiny_network(calls)
    fake = sample_quality.sample_features(network, _samples(13), MAX_VALUE, batch_size=8, devices=devices)

    def count(rows):
        fed.append(rows.shape[0])
        return data.to_float(rows, MAX_VALUE)

    reference = np.random.default_rng(2).integers(0, MAX_VALUE + 1, (11,) + SHAPE, dtype=np.uint8)
    real = extract_features_sharded(network, reference, transform=count, keys=("features",), batch_size=8,
                                    devices=devices)["features"]
    jax.effects_barrier()  # every callback has run
    stats = metrics.RunningStats(network.name).update(real)
    values, _ = sample_quality.sample_metrics(stats, real, fake)
    _check_caches_missing_on_one_process(devices)
    return dict(features=fake["features"], logits=fake["logits"], real=real, fed=sum(fed), computed=sum(calls),
                **{k: values[k] for k in ("fid", "is", "is_std", "kid", "precision", "recall")})


def _check_caches_missing_on_one_process(devices=None):
    """reference_features with a stats_dir of each process's own, computed once, then again with the last
    process's statistics cache deleted, then with its features cache deleted (the other processes keep theirs):
    all processes compute together (parallel.any_process) and get the first values. Deciding per process would
    leave the last one waiting alone in the collective computation (a hang, under test_multihost.py's timeout)."""
    network = tiny_network()
    with tempfile.TemporaryDirectory() as stats_dir:
        def reference():
            return reference_stats.reference_features(network, "digits", "test", 20, stats_dir, batch_size=64,
                                                      devices=devices)

        first = reference()
        for cache in ("stats_cache", "features_cache"):
            if jax.process_index() == jax.process_count() - 1:
                os.remove(first[2][cache])
            again = reference()
            np.testing.assert_allclose(again[0].mean(), first[0].mean(), rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(again[1], first[1], rtol=RTOL, atol=ATOL)
            assert all(os.path.exists(again[2][c]) for c in ("stats_cache", "features_cache"))


def test_multihost_case_on_one_process():
    """Single-process baseline of the multi-host check: 8 devices equal 1 device and the numpy features; every
    device computed its share of every round (padding included) and no more."""
    eight, one = multihost_case(), multihost_case(devices=jax.local_devices()[:1])
    for key in ("features", "logits", "real"):
        np.testing.assert_allclose(eight[key], one[key], rtol=RTOL, atol=ATOL)
    expected = numpy_features(sample_quality.quantize_to_grid(_samples(13), MAX_VALUE))
    np.testing.assert_allclose(eight["features"], expected["features"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(eight["logits"], expected["logits"], rtol=RTOL, atol=ATOL)
    for key in ("fid", "is", "is_std", "kid", "precision", "recall"):
        assert eight[key] == pytest.approx(one[key], rel=1e-4, abs=1e-7), key
    # 8 images a round, 1 per device on 8 devices: 13 -> 16 computed, 11 -> 16 fed; one device: 8 per round.
    assert eight["computed"] == 16 + 16 and eight["fed"] == 16
    assert one["computed"] == 16 + 16 and one["fed"] == 16


def test_sample_features_match_one_device_and_host_path():
    traces = []
    network = tiny_network(traces=traces)
    samples = _samples(37)  # 37 = 4 * 8 + 5: the last of 3 rounds of 16 is padded with 11 images
    eight = sample_quality.sample_features(network, samples, MAX_VALUE, batch_size=16)
    assert len(traces) == 1  # one compiled function for the 3 rounds
    again = sample_quality.sample_features(network, samples, MAX_VALUE, batch_size=16)
    assert len(traces) == 1  # and for the next call of the same shape (the pmap is cached)
    one = sample_quality.sample_features(network, samples, MAX_VALUE, batch_size=16,
                                         devices=jax.local_devices()[:1])
    host = metrics.extract_features(network, [sample_quality.quantize_to_grid(samples, MAX_VALUE)])
    expected = numpy_features(sample_quality.quantize_to_grid(samples, MAX_VALUE))
    for key in ("features", "logits"):
        assert eight[key].shape == (37, 6 if key == "features" else 3) and eight[key].dtype == np.float32
        np.testing.assert_array_equal(eight[key], again[key])
        np.testing.assert_allclose(eight[key], one[key], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(eight[key], host[key], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(eight[key], expected[key], rtol=RTOL, atol=ATOL)


def test_host_function_network_is_split_by_process():
    """A network without a pure form runs its fn on this process's share of each round: same features."""
    rows = []

    def fn(images):
        rows.append(images.shape[0])
        return numpy_features(np.asarray(images))

    network = metrics.FeatureNetwork("test:host", fn)
    samples = _samples(13)
    out = sample_quality.sample_features(network, samples, MAX_VALUE, batch_size=8)
    expected = numpy_features(sample_quality.quantize_to_grid(samples, MAX_VALUE))
    np.testing.assert_allclose(out["features"], expected["features"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out["logits"], expected["logits"], rtol=RTOL, atol=ATOL)
    assert rows == [8, 8]  # two rounds of one image per device, the 3 padding rows dropped
    bad = metrics.FeatureNetwork("test:bad", lambda x: {"features": np.zeros((x.shape[0], 2))})
    with pytest.raises(ValueError, match="'logits'"):
        sample_quality.sample_features(bad, samples, MAX_VALUE)


def test_pure_network_missing_key_is_a_clear_error():
    network = metrics.FeatureNetwork.from_apply("test:no-logits", lambda p, x: {"features": x[:, 0, 0] * p}, 1.0)
    with pytest.raises(ValueError, match="returned no \\['logits'\\]"):
        sample_quality.sample_features(network, _samples(4), MAX_VALUE)


def test_reference_features_and_metrics_match_one_device(tmp_path):
    network = tiny_network()
    eight = reference_stats.reference_features(network, "digits", "test", 20, str(tmp_path / "eight"),
                                               batch_size=64)
    one = reference_stats.reference_features(network, "digits", "test", 20, str(tmp_path / "one"), batch_size=64,
                                             devices=jax.local_devices()[:1])
    assert eight[0].count == one[0].count == data.DIGITS_NUM_TEST  # 297: divides neither 8 nor 64
    np.testing.assert_allclose(eight[0].mean(), one[0].mean(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(eight[0].cov(), one[0].cov(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(eight[1], one[1], rtol=RTOL, atol=ATOL)
    # ... and the statistics the host path (dataset_statistics over batches) gives.
    test = data.load_arrays("digits", "test")
    images = data.to_float(test.images, test.max_value)
    host = metrics.dataset_statistics(network, [images[:100], images[100:]])
    np.testing.assert_allclose(eight[0].mean(), host.mean(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(eight[0].cov(), host.cov(), rtol=1e-4, atol=1e-6)
    subset = np.sort(np.random.default_rng(0).permutation(test.images.shape[0])[:20])
    np.testing.assert_allclose(eight[1], numpy_features(images[subset])["features"], rtol=RTOL, atol=ATOL)
    # The caches are read back, nothing recomputed; the features subset alone is recomputed (sharded) when missing.
    cached = reference_stats.reference_features(network, "digits", "test", 20, str(tmp_path / "eight"))
    np.testing.assert_array_equal(cached[1], eight[1])
    (tmp_path / "eight" / eight[2]["features_cache"].rsplit("/", 1)[1]).unlink()
    recomputed = reference_stats.reference_features(network, "digits", "test", 20, str(tmp_path / "eight"),
                                                    batch_size=8)
    np.testing.assert_allclose(recomputed[1], eight[1], rtol=RTOL, atol=ATOL)
    # FID / IS of generated samples from 8 devices and from one.
    samples = _samples(21)
    fake8 = sample_quality.sample_features(network, samples, MAX_VALUE, batch_size=16)
    fake1 = sample_quality.sample_features(network, samples, MAX_VALUE, devices=jax.local_devices()[:1])
    m8, s8 = sample_quality.sample_metrics(eight[0], eight[1], fake8)
    m1, s1 = sample_quality.sample_metrics(one[0], one[1], fake1)
    assert s8 == s1
    for key in m8:
        assert m8[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-7), key


def test_classifier_network_is_pmapped_and_matches_the_classifier(tmp_path):
    """classifier.feature_network carries its pure form (pmapped over the devices), and gives the features of
    its fn (the classifier applied in chunks on the default device)."""
    from ddpm_jax import classifier

    workdir = str(tmp_path / "classifier")
    classifier.train_classifier("digits", workdir, num_steps=2, batch_size=16, widths=(4,), feature_dim=8)
    network = sample_quality.resolve_feature_network(f"classifier:{workdir}")
    assert network.name == classifier.load_classifier(workdir)[2]["name"] and network.apply is not None
    samples = _samples(13)
    sharded = sample_quality.sample_features(network, samples, MAX_VALUE)
    host = network(sample_quality.quantize_to_grid(samples, MAX_VALUE))
    np.testing.assert_allclose(sharded["features"], host["features"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(sharded["logits"], host["logits"], rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match="takes images of shape"):
        sample_quality.sample_features(network, np.zeros((2, 4, 4, 1), np.float32), MAX_VALUE)


def test_inception_network_has_its_pure_form():
    """inception_feature_network's networks are pmapped: they carry their apply and variables (checked by shape
    only; the 299x299 network is too slow to run here)."""
    shapes = jax.eval_shape(metrics.init_fid_inception, jax.random.key(0))
    variables = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    network = metrics.inception_feature_network(variables, name="test:zero")
    assert network.apply is not None and network.params is not None and network.has_logits
    out = jax.eval_shape(network.apply, network.params, jax.ShapeDtypeStruct((2, 75, 75, 3), jnp.float32))
    assert out["features"].shape == (2, 2048) and out["logits"].shape == (2, 1008)


def test_from_apply_network_called_directly():
    network = tiny_network()
    images = sample_quality.quantize_to_grid(_samples(5), MAX_VALUE)
    out = network(images)
    np.testing.assert_allclose(out["features"], numpy_features(images)["features"], rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match="must be callable"):
        metrics.FeatureNetwork("x", lambda x: x, apply=3)
