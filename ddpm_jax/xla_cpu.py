"""XLA:CPU flags that make the U-Net fast on CPU, set in XLA_FLAGS when ddpm_jax is imported.

jaxlib 0.10-0.11 hands convolutions to YNNPACK by default, whose kernels use no second core at MNIST-sized feature
maps; XLA's Eigen convolution does. Routing convolutions to Eigen (`-individual_convolution`; dots, reductions and
elementwise fusions stay with YNNPACK) trains the MNIST U-Net 1.5x faster and samples 1.5x faster on 2 cores, the
CIFAR-10 U-Net 1.1x / 1.06x (docs/performance.md, speed options). XLA reads XLA_FLAGS when the first computation creates its CPU
backend, so this takes effect when ddpm_jax is imported before anything runs on JAX (importing jax first is fine).

It changes nothing when XLA_FLAGS already sets the flag, when DDPM_JAX_XLA_DEFAULTS=0, or for jaxlib versions
outside those known to have the flag (XLA aborts on unknown flags). It does nothing on GPU/TPU backends.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import MutableMapping

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
CPU_DEFAULTS = f"{FLAG}=-individual_convolution"
OPT_OUT = "DDPM_JAX_XLA_DEFAULTS"
JAXLIB_RANGE = ((0, 10), (0, 12))  # [first, last) major.minor versions known to accept FLAG


def _jaxlib_version() -> tuple[int, int] | None:
    try:
        major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def apply_cpu_defaults(environ: MutableMapping[str, str] = os.environ,
                       jaxlib_version: tuple[int, int] | None = None) -> bool:
    """Append CPU_DEFAULTS to environ["XLA_FLAGS"] unless the user opted out or set FLAG; True if appended."""
    version = jaxlib_version or _jaxlib_version()
    flags = environ.get("XLA_FLAGS", "")
    if (environ.get(OPT_OUT, "1") == "0" or FLAG in flags or version is None
            or not JAXLIB_RANGE[0] <= version < JAXLIB_RANGE[1]):
        return False
    environ["XLA_FLAGS"] = f"{flags} {CPU_DEFAULTS}".strip()
    return True
