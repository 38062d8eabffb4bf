"""Tests for ddpm_jax.data: sources, batch shapes, determinism, resume, sharding, flips, errors."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import mock_tfds_array_record
from ddpm_jax import data


def _indexed_arrays(n, h=3, w=4, c=1):
    """Images whose pixels are all distinct and whose label is their index (to track examples)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
    return data.Arrays(images, np.arange(n, dtype=np.int32), 255)


def _take(it, k):
    return [next(it) for _ in range(k)]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


# ------------------------------------------------------------------------------------------------ sources


def test_digits_shapes_range_labels():
    from sklearn.datasets import load_digits

    train, test = data.load_arrays("digits", "train"), data.load_arrays("digits", "test")
    assert train.images.shape == (1500, 8, 8, 1) and test.images.shape == (297, 8, 8, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    assert train.max_value == 16 and int(train.images.max()) == 16 and int(train.images.min()) == 0
    assert set(np.unique(train.labels)) == set(range(10))
    d = load_digits()
    np.testing.assert_array_equal(np.concatenate([train.labels, test.labels]), d.target)
    x = data.to_float(np.concatenate([train.images, test.images]), train.max_value)
    np.testing.assert_array_equal(x[..., 0], (d.images / 16 * 2 - 1).astype(np.float32))  # exact
    assert data.image_shape("digits") == (8, 8, 1)


def test_to_float_uint8():
    v = np.arange(256, dtype=np.uint8)
    np.testing.assert_allclose(data.to_float(v), v / 127.5 - 1, atol=1e-7)
    assert data.to_float(v).dtype == np.float32 and data.to_float(v)[0] == -1 and data.to_float(v)[-1] == 1


def test_batches_shaped_for_the_8_devices():
    assert jax.local_device_count() == 8
    with data.make_iterator("digits", global_batch_size=64, seed=0) as it:
        for batch in _take(it, 3):
            assert batch["image"].shape == (8, 8, 8, 8, 1) and batch["image"].dtype == np.float32
            assert batch["label"].shape == (8, 8) and batch["label"].dtype == np.int32
            assert batch["image"].min() >= -1 and batch["image"].max() <= 1
        assert it.per_device_batch_size == 8 and it.image_shape == (8, 8, 1)


def test_deterministic_given_seed():
    kw = dict(global_batch_size=32, num_devices=4, process_index=0, process_count=1)
    a = _take(data.make_iterator("digits", seed=3, **kw), 5)
    b = _take(data.make_iterator("digits", seed=3, prefetch=0, **kw), 5)
    c = _take(data.make_iterator("digits", seed=4, **kw), 5)
    _assert_same_batches(a, b)
    assert not np.array_equal(a[0]["label"], c[0]["label"])


def test_resume_across_epoch_boundary():
    kw = dict(global_batch_size=64, seed=7, random_flip=True, num_devices=8, process_index=0, process_count=1)
    it = data.make_iterator("digits", **kw)  # 1500 examples: epoch boundary inside batch 23
    _take(it, 20)
    state = it.state()
    assert state == {"epoch": 0, "index": 20 * 64}
    state = json.loads(json.dumps(state))  # a small serialisable dict
    expected = _take(it, 10)
    assert it.state() == {"epoch": 1, "index": 30 * 64 - 1500}
    resumed = data.make_iterator("digits", state=state, prefetch=0, **kw)
    _assert_same_batches(_take(resumed, 10), expected)
    # set_state on a running iterator (with prefetched batches) jumps back as well
    it.set_state({"epoch": np.int64(0), "index": np.asarray(20 * 64)})
    _assert_same_batches(_take(it, 10), expected)
    _assert_same_batches([it.batch_at(state)], expected[:1])
    it.close()


def test_each_epoch_visits_every_example_once():
    n = 10
    it = data.make_iterator(_indexed_arrays(n), global_batch_size=4, seed=0, num_devices=2,
                            process_index=0, process_count=1)
    stream = np.concatenate([b["label"].reshape(-1) for b in _take(it, 10)])  # 40 = 4 epochs
    epochs = stream.reshape(4, n)
    for e in epochs:
        assert sorted(e) == list(range(n))
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled per epoch
    assert it.state() == {"epoch": 4, "index": 0}
    it.close()


def test_hosts_disjoint_covering_and_independent_of_host_count():
    n, g, hosts = 24, 8, 4
    arrays = _indexed_arrays(n)
    single = data.make_iterator(arrays, global_batch_size=g, seed=1, num_devices=1, process_index=0,
                                process_count=1)
    per_host = [data.make_iterator(arrays, global_batch_size=g, seed=1, num_devices=2, process_index=p,
                                   process_count=hosts) for p in range(hosts)]
    seen = []
    for _ in range(n // g):  # one epoch
        glob = next(single)
        parts = [next(h) for h in per_host]
        assert all(p["image"].shape == (2, 1, 3, 4, 1) for p in parts)
        labels = np.concatenate([p["label"].reshape(-1) for p in parts])
        np.testing.assert_array_equal(labels, glob["label"].reshape(-1))
        np.testing.assert_array_equal(np.concatenate([p["image"].reshape(-1) for p in parts]),
                                      glob["image"].reshape(-1))
        seen.append(labels)
    assert sorted(np.concatenate(seen)) == list(range(n))  # disjoint and covering
    assert all(h.state() == single.state() for h in per_host)  # one state for all hosts
    for h in per_host + [single]:
        h.close()


def test_flips_horizontal_only_when_enabled():
    arrays = _indexed_arrays(64, h=3, w=5, c=2)
    originals = data.to_float(arrays.images)
    kw = dict(global_batch_size=64, seed=0, num_devices=1, process_index=0, process_count=1)
    for flip in (False, True):
        batch = next(data.make_iterator(arrays, random_flip=flip, **kw))
        images, labels = batch["image"][0], batch["label"][0]
        same = [np.array_equal(x, originals[i]) for x, i in zip(images, labels)]
        mirrored = [np.array_equal(x, originals[i][:, ::-1]) for x, i in zip(images, labels)]
        assert all(s or m for s, m in zip(same, mirrored))
        if flip:
            assert 10 < sum(mirrored) < 54
        else:
            assert all(same)


def test_npz_and_npy_files(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (20, 6, 6), dtype=np.uint8)
    x_test = rng.integers(0, 256, (4, 6, 6), dtype=np.uint8)
    y_train, y_test = rng.integers(0, 10, 20), rng.integers(0, 10, 4)
    np.savez(tmp_path / "split.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    a = data.load_arrays(f"npz:{tmp_path / 'split.npz'}")
    assert a.images.shape == (20, 6, 6, 1) and a.labels.dtype == np.int32 and a.max_value == 255
    np.testing.assert_array_equal(a.images[..., 0], x_train)
    np.testing.assert_array_equal(a.labels, y_train)
    t = data.load_arrays(str(tmp_path / "split.npz"), "test")  # bare path
    np.testing.assert_array_equal(t.images[..., 0], x_test)

    rgb = rng.integers(0, 256, (12, 5, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "single.npz", images=rgb)
    s = data.load_arrays(f"npz:{tmp_path / 'single.npz'}")
    assert s.images.shape == (12, 5, 5, 3) and s.labels is None
    with pytest.raises(ValueError, match="x_test"):
        data.load_arrays(f"npz:{tmp_path / 'single.npz'}", "test")

    np.save(tmp_path / "imgs.npy", rgb)
    n = data.load_arrays(f"npy:{tmp_path / 'imgs.npy'}")
    np.testing.assert_array_equal(n.images, rgb)
    assert data.image_shape(f"npy:{tmp_path / 'imgs.npy'}") == (5, 5, 3)

    with data.make_iterator(f"npy:{tmp_path / 'imgs.npy'}", global_batch_size=8, seed=0) as it:
        batch = next(it)
    assert batch.keys() == {"image"} and batch["image"].shape == (8, 1, 5, 5, 3)
    with data.make_iterator(f"npz:{tmp_path / 'split.npz'}", global_batch_size=8, seed=0, split="test") as it:
        batch = next(it)
    assert set(batch["label"].reshape(-1)) <= set(y_test)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'no_such_data'.*'digits'.*'celeb_a'.*npz:"):
        data.load_arrays("no_such_data")
    with pytest.raises(ValueError, match=r"global batch size 12 .* 8 devices"):
        data.make_iterator("digits", global_batch_size=12, seed=0)
    with pytest.raises(ValueError, match=r"global batch size 8 .* 16 devices"):
        data.make_iterator("digits", global_batch_size=8, seed=0, num_devices=4, process_index=0,
                           process_count=4)
    np.savez(tmp_path / "float.npz", x_train=np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="uint8.*float32"):
        data.load_arrays(f"npz:{tmp_path / 'float.npz'}")
    np.savez(tmp_path / "flat.npz", x_train=np.zeros((3, 16), np.uint8))
    with pytest.raises(ValueError, match=r"\[N, H, W\].*\(3, 16\)"):
        data.load_arrays(f"npz:{tmp_path / 'flat.npz'}")
    np.savez(tmp_path / "labels.npz", x_train=np.zeros((3, 4, 4), np.uint8), y_train=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="labels"):
        data.load_arrays(f"npz:{tmp_path / 'labels.npz'}")
    np.savez(tmp_path / "keys.npz", foo=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="x_train.*foo"):
        data.load_arrays(f"npz:{tmp_path / 'keys.npz'}")
    with pytest.raises(FileNotFoundError):
        data.load_arrays(f"npz:{tmp_path / 'missing.npz'}")
    with pytest.raises(ValueError, match="split"):
        data.load_arrays("digits", "validation")
    it = data.make_iterator("digits", global_batch_size=8, seed=0, prefetch=0)
    with pytest.raises(ValueError, match="out of range"):
        it.set_state({"epoch": 0, "index": 1500})
    with pytest.raises(ValueError, match="epoch"):
        it.set_state({"step": 3})


# ------------------------------------------------------------------------------------------------ tfds


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tfds")


def test_tfds_array_record_without_tensorflow(no_tensorflow):
    pytest.importorskip("tensorflow_datasets")
    a = data.load_arrays("tiny_images", data_dir=os.path.join(FIXTURES, "array_record"))
    assert a.images.shape == (8, 4, 5, 1) and a.images.dtype == np.uint8 and a.max_value == 255
    assert a.labels.dtype == np.int32 and sorted(a.labels) == [0, 0, 0, 1, 1, 1, 2, 2]
    assert data.image_shape("tiny_images", data_dir=os.path.join(FIXTURES, "array_record")) == (4, 5, 1)


def test_tfds_tfrecord_without_tensorflow_says_what_to_do(no_tensorflow):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ImportError, match=r"TFRecord.*requirements-tf\.txt.*\[tf\].*file_format=array_record"):
        data.load_arrays("tiny_images", data_dir=os.path.join(FIXTURES, "tfrecord"))


@pytest.mark.tensorflow
def test_tfds_tfrecord_with_tensorflow_reads_the_same_data():
    pytest.importorskip("tensorflow")
    a = data.load_arrays("tiny_images", data_dir=os.path.join(FIXTURES, "array_record"))
    t = data.load_arrays("tiny_images", data_dir=os.path.join(FIXTURES, "tfrecord"))
    order_a, order_t = np.lexsort(a.images.reshape(8, -1).T), np.lexsort(t.images.reshape(8, -1).T)
    np.testing.assert_array_equal(a.images[order_a], t.images[order_t])
    np.testing.assert_array_equal(a.labels[order_a], t.labels[order_t])


def test_tfds_mock_data_array_record(no_tensorflow):
    pytest.importorskip("tensorflow_datasets")
    with mock_tfds_array_record(num_examples=16):
        a = data.load_arrays("mnist")
        assert a.images.shape == (16, 28, 28, 1) and a.images.dtype == np.uint8
        assert a.labels.shape == (16,) and a.labels.dtype == np.int32 and a.max_value == 255
        c = data.load_arrays("celeb_a")  # center crop 140x140, resize to 64x64, no labels
        assert c.images.shape == (16, 64, 64, 3) and c.labels is None
        assert data.image_shape("celeb_a") == (64, 64, 3) and data.image_shape("cifar10") == (32, 32, 3)
        with data.make_iterator("mnist", global_batch_size=8, seed=0) as it:
            batch = next(it)
        assert batch["image"].shape == (8, 1, 28, 28, 1) and batch["label"].shape == (8, 1)


@pytest.mark.tensorflow
def test_celeba_resize_is_tensorflows():
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(0).integers(0, 256, (3, 140, 140, 3)).astype(np.uint8)
    expected = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(x, [64, 64], method="bilinear", antialias=True)),
                                        0, 255), tf.uint8).numpy()
    np.testing.assert_array_equal(data._celeba_resize(x), expected)


@pytest.mark.tensorflow
def test_tfds_mock_data_tfrecord():
    pytest.importorskip("tensorflow")
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=16):
        a = data.load_arrays("mnist")
        assert a.images.shape == (16, 28, 28, 1) and a.labels.dtype == np.int32
        c = data.load_arrays("celeb_a")
        assert c.images.shape == (16, 64, 64, 3) and c.labels is None
    with pytest.raises(ValueError, match="no 'image' feature"):
        data.load_arrays("wine_quality")  # (without TensorFlow, tfds does not register wine_quality at all)


def test_tfds_not_prepared_is_a_clear_error_without_download(tmp_path, monkeypatch, no_tensorflow):
    # not prepared is said first, with or without TensorFlow
    tfds = pytest.importorskip("tensorflow_datasets")

    def no_download(*args, **kwargs):
        raise AssertionError("the pipeline must never try to download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_arrays("mnist", data_dir=str(tmp_path))
    msg = str(err.value)
    assert "not available offline" in msg and str(tmp_path) in msg
    assert "tfds build mnist" in msg and "npz:" in msg and "array_record" in msg
    assert isinstance(err.value, ValueError)


# ------------------------------------------------------------------------------------------------ image folders


def _png(path, array):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def image_folder(tmp_path, monkeypatch):
    """cats/ (2 PNGs, one nested deeper), dogs/ (a JPEG and an RGBA PNG); sizes and aspects differ."""
    monkeypatch.setenv("DDPM_JAX_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "pets"
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255  # the centred square is white, the sides black
    _png(str(root / "cats" / "a.png"), wide)
    _png(str(root / "cats" / "deeper" / "b.png"), np.full((16, 16, 3), 40, np.uint8))
    from PIL import Image

    os.makedirs(root / "dogs")
    Image.fromarray(np.full((9, 9, 3), 200, np.uint8)).save(root / "dogs" / "c.JPG", quality=100)
    _png(str(root / "dogs" / "d.png"), np.full((7, 5, 4), 90, np.uint8))
    (root / "dogs" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_labels_crop_resize(image_folder):
    a = data.load_arrays(f"folder:{image_folder}", image_size=8)
    assert a.images.shape == (4, 8, 8, 3) and a.images.dtype == np.uint8 and a.max_value == 255
    np.testing.assert_array_equal(a.labels, [0, 0, 1, 1])  # sorted paths; classes 'cats', 'dogs'
    assert a.images[0].min() > 200  # the centred square of the wide image (bicubic reads a little past it)
    assert np.all(a.images[1] == 40) and np.all(np.abs(a.images[2].astype(int) - 200) <= 2)
    assert np.all(a.images[3] == 90)  # RGBA -> RGB
    assert data.image_shape(f"folder:{image_folder}", image_size=8) == (8, 8, 3)
    with data.make_iterator(f"folder:{image_folder}", global_batch_size=8, seed=0, image_size=8) as it:
        assert next(it)["image"].shape == (8, 1, 8, 8, 3)


def test_image_folder_without_classes_and_grayscale(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_JAX_CACHE", str(tmp_path / "cache"))
    for i in range(3):
        _png(str(tmp_path / "gray" / f"{i}.png"), np.full((6, 6), 10 * i, np.uint8))
    _png(str(tmp_path / "gray" / "sub" / "x.png"), np.zeros((6, 6), np.uint8))  # an image in root: no labels
    a = data.load_arrays(f"folder:{tmp_path / 'gray'}", image_size=4)
    assert a.images.shape == (4, 4, 4, 1) and a.labels is None


def test_image_folder_cache(image_folder, monkeypatch):
    source = f"folder:{image_folder}"
    first = data.load_arrays(source, image_size=8)
    cache_dir = data.folder_cache_dir()
    assert [f for f in os.listdir(cache_dir) if f.endswith(".npz")] and not any(
        f.startswith(".tmp") for f in os.listdir(cache_dir))

    def no_decoding(*args):
        raise AssertionError("cached: nothing should be decoded")

    monkeypatch.setattr(data, "_decode", no_decoding)
    np.testing.assert_array_equal(data.load_arrays(source, image_size=8).images, first.images)
    with pytest.raises(AssertionError, match="cached"):  # another size is another cache
        data.load_arrays(source, image_size=4)
    os.utime(image_folder / "cats" / "a.png", ns=(1, 1))  # a changed file is another cache
    with pytest.raises(AssertionError, match="cached"):
        data.load_arrays(source, image_size=8)


def test_image_folder_errors(image_folder, tmp_path):
    with pytest.raises(ValueError, match="config.data.image_size, a positive integer"):
        data.load_arrays(f"folder:{image_folder}")
    with pytest.raises(ValueError, match="split 'train', not 'test'"):
        data.load_arrays(f"folder:{image_folder}", "test", image_size=8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_arrays(f"folder:{tmp_path / 'missing'}", image_size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        data.load_arrays(f"folder:{tmp_path / 'empty'}", image_size=8)
    with pytest.raises(ValueError, match="image_size=8 applies only to image folders"):
        data.load_arrays("digits", image_size=8)
