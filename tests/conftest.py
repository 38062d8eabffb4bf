"""Test setup: 8 forced CPU devices (set before JAX is imported) and float32 defaults; mock tfds data."""

import contextlib
import gc
import importlib.abc
import os
import sys
from unittest import mock

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def mock_tfds_array_record(num_examples):
    """`tfds.testing.mock_data` with every dataset in array_record form, so it is read through
    `as_data_source` (no TensorFlow), as a dataset prepared with --file_format=array_record is."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=num_examples), mock.patch(
            "tensorflow_datasets.core.dataset_info.DatasetInfo.file_format", new_callable=mock.PropertyMock,
            return_value=tfds.core.FileFormat.ARRAY_RECORD):
        yield


@contextlib.contextmanager
def read_only_directory(path, monkeypatch):
    """Make the existing directory `path` read-only for the block (as root, who writes anyway, by making os.access
    report it so, as on a read-only filesystem); its permissions are restored after."""
    path.chmod(0o555)
    if os.geteuid() == 0:
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p).startswith(str(path))
                            and mode & os.W_OK else access(p, mode, **kw))
    try:
        yield path
    finally:
        path.chmod(0o755)


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the no_tensorflow fixture)", name=name)
        return None


@pytest.fixture
def no_tensorflow(monkeypatch):
    """`import tensorflow` fails inside the test, as where TensorFlow is not installed."""
    for name in [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NoTensorFlow()] + sys.meta_path)


@pytest.fixture(autouse=True, scope="module")
def release_compiled_executables():
    """After each test module, drop every compiled executable (JAX's caches and the package's own lru_caches of
    compiled functions). Each XLA:CPU executable holds about 6 memory mappings until it is freed; the suite
    compiles thousands, and a process past the kernel's vm.max_map_count (65530 by default) segfaults inside XLA's
    compiler when LLVM cannot map the next one (the full suite reached it at test_vdm)."""
    yield
    import jax

    for name, module in list(sys.modules.items()):
        if name == "ddpm_jax" or name.startswith("ddpm_jax."):
            for obj in list(vars(module).values()):
                if getattr(obj, "__module__", None) == name and callable(getattr(obj, "cache_clear", None)):
                    obj.cache_clear()
    jax.clear_caches()
    gc.collect()
