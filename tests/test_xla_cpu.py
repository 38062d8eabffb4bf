"""Tests for ddpm_jax.xla_cpu: when the CPU convolution flag is added to XLA_FLAGS, and that it took effect in this
process (conftest imports nothing from JAX before ddpm_jax sets it) without changing what a convolution computes."""

import os

import jax
import numpy as np
import pytest

from ddpm_jax import xla_cpu

IN_RANGE = (0, 10)


def test_appends_to_existing_flags():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_cpu.apply_cpu_defaults(env, IN_RANGE)
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {xla_cpu.CPU_DEFAULTS}"
    env = {}
    assert xla_cpu.apply_cpu_defaults(env, (0, 11))
    assert env["XLA_FLAGS"] == xla_cpu.CPU_DEFAULTS


@pytest.mark.parametrize("env, version", [
    ({"XLA_FLAGS": f"{xla_cpu.FLAG}="}, IN_RANGE),                       # the user's own value wins
    ({"XLA_FLAGS": "--a=1", xla_cpu.OPT_OUT: "0"}, IN_RANGE),             # opted out
    ({"XLA_FLAGS": "--a=1"}, (0, 9)),                                     # jaxlib without the flag
    ({"XLA_FLAGS": "--a=1"}, (0, 12)),                                    # jaxlib not known to have it
])
def test_leaves_flags_alone(env, version):
    before = dict(env)
    assert not xla_cpu.apply_cpu_defaults(env, version)
    assert env == before


def _conv_nhwc(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_convolutions_leave_ynnpack_and_match_float64():
    """At a size YNNPACK would take (MNIST's 28x28x32), the compiled conv is XLA's own, and it agrees with a float64
    numpy convolution."""
    if xla_cpu.FLAG not in os.environ.get("XLA_FLAGS", "") or jax.default_backend() != "cpu":
        pytest.skip("the CPU default is not active in this process (jaxlib out of range, or opted out)")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 28, 28, 32)).astype(np.float32)
    w = (0.1 * rng.standard_normal((3, 3, 32, 16))).astype(np.float32)
    compiled = jax.jit(_conv_nhwc).lower(x, w).compile()
    assert "ynn_fusion" not in compiled.as_text()
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = sum(np.einsum("bhwc,co->bhwo", xp[:, i:i + 28, j:j + 28], w[i, j].astype(np.float64))
               for i in range(3) for j in range(3))
    np.testing.assert_allclose(np.asarray(compiled(x, w)), want, rtol=1e-4, atol=1e-4)
