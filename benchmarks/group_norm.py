"""GroupNorm + swish, forward and forward+backward: flax's nn.GroupNorm, the U-Net's unet.GroupNorm, and PyTorch.

    python benchmarks/group_norm.py                          # JAX only (the package's venv)
    /work/venv-bench/bin/python benchmarks/group_norm.py     # and torch's native group_norm (the bench venv)

The evidence for unet.GroupNorm: XLA:CPU runs nn.GroupNorm's reductions over grouped axes slower than per-channel
sums folded into one affine pass. Shapes are the MNIST and CIFAR-10 U-Nets' (NHWC for JAX, NCHW for torch),
float32, best of 7 calls, all cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SHAPES = [(128, 28, 28, 64, 8), (128, 14, 14, 128, 8), (16, 32, 32, 128, 32), (16, 16, 16, 256, 32)]


def best_ms(fn):
    return common.best_time(fn) * 1e3


def jax_times(make_norm, shape):
    import jax
    import jax.numpy as jnp

    B, H, W, C, G = shape
    x = jax.random.normal(jax.random.PRNGKey(0), (B, H, W, C)) + 1.0
    norm = make_norm(G)
    params = norm.init(jax.random.PRNGKey(1), x)
    fwd = jax.jit(lambda p, x: jax.nn.swish(norm.apply(p, x)))
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(jax.nn.swish(norm.apply(p, x)) * x), argnums=(0, 1)))
    return best_ms(lambda: fwd(params, x)), best_ms(lambda: grad(params, x))


def torch_times(shape):
    import torch

    torch.set_num_threads(common.cores())
    B, H, W, C, G = shape
    x = torch.randn(B, C, H, W) + 1.0
    norm = torch.nn.GroupNorm(G, C, eps=1e-6)
    with torch.no_grad():
        fwd = best_ms(lambda: torch.nn.functional.silu(norm(x)))
    xr = x.clone().requires_grad_(True)

    def fwd_bwd():
        (torch.nn.functional.silu(norm(xr)) * xr).sum().backward()

    return fwd, best_ms(fwd_bwd)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import flax.linen as nn

    from ddpm_jax.models import unet

    sides = {"flax nn.GroupNorm": lambda g: nn.GroupNorm(num_groups=g, epsilon=unet.GROUPNORM_EPS),
             "unet.GroupNorm": lambda g: unet.GroupNorm(num_groups=g)}
    have_torch = importlib.util.find_spec("torch") is not None
    monitor = common.LoadMonitor()
    results, rows = {}, []
    for shape in SHAPES:
        key = "B{} {}x{}x{} G{}".format(*shape)
        results[key] = {name: jax_times(make, shape) for name, make in sides.items()}
        if have_torch:
            results[key]["torch"] = torch_times(shape)
        rows.append([key] + [f"{f:.1f} / {fb:.1f}" for f, fb in results[key].values()])
    load = monitor.stop()
    headers = ["shape (forward / fwd+bwd ms)"] + list(sides) + (["torch"] if have_torch else [])
    text = common.table(headers, rows)
    common.report(text, load, args.out, results=results)


if __name__ == "__main__":
    main()
