"""One 3x3 convolution at the U-Nets' shapes: XLA:CPU with and without YNNPACK, on 1 and 2 cores, and PyTorch.

    python benchmarks/conv_scaling.py                          # JAX only (the package's venv)
    /work/venv-bench/bin/python benchmarks/conv_scaling.py     # JAX and PyTorch (the bench venv)

The evidence behind docs/performance.md's main finding: at MNIST-sized feature maps (28x28, 32-64 channels)
XLA:CPU's default convolution path (a YNNPACK fusion) runs no faster on 2 cores than on 1, while XLA's Eigen
convolution (YNNPACK fusions off: XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=) and PyTorch's oneDNN
convolution use both. Each configuration runs in its own process (XLA flags and the CPU affinity are fixed
when a process starts); 1 core means the process is pinned to one CPU (XLA sizes its thread pool by that).
Forward only, float32, NHWC for JAX, NCHW and channels_last for torch; best of 7 calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SHAPES = [(64, 28, 28, 32, 32), (64, 28, 28, 64, 64), (64, 14, 14, 64, 64), (16, 32, 32, 128, 128),
          (16, 16, 16, 256, 256)]
YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="


def run_jax(shapes):
    import jax

    out = {}
    for B, H, W, Ci, Co in shapes:
        x = jax.random.normal(jax.random.PRNGKey(0), (B, H, W, Ci))
        w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, Ci, Co)) * 0.05
        f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                              dimension_numbers=("NHWC", "HWIO", "NHWC")))
        out[str((B, H, W, Ci, Co))] = common.best_time(lambda: f(x, w))
    return out


def run_torch(shapes, threads, channels_last):
    import torch

    torch.set_num_threads(threads)
    out = {}
    for B, H, W, Ci, Co in shapes:
        conv = torch.nn.Conv2d(Ci, Co, 3, padding=1)
        x = torch.randn(B, Ci, H, W)
        if channels_last:
            conv = conv.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            out[str((B, H, W, Ci, Co))] = common.best_time(lambda: conv(x))
    return out


CONFIGS = [
    ("XLA default (YNNPACK)", "jax", 2, {}),
    ("XLA default (YNNPACK)", "jax", 1, {}),
    ("XLA, YNNPACK off (Eigen)", "jax", 2, {"XLA_FLAGS": YNN_OFF}),
    ("XLA, YNNPACK off (Eigen)", "jax", 1, {"XLA_FLAGS": YNN_OFF}),
    ("torch NCHW", "torch", 2, {}),
    ("torch NCHW", "torch", 1, {}),
    ("torch channels_last", "torch-cl", 2, {}),
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="the first two shapes only")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    shapes = SHAPES[:2] if args.quick else SHAPES
    if args.worker:
        if args.worker == "jax":
            res = run_jax(shapes)
        else:
            res = run_torch(shapes, args.threads, args.worker == "torch-cl")
        print("RESULT " + json.dumps(res))
        return
    import importlib.util

    have_torch = importlib.util.find_spec("torch") is not None
    if not have_torch:
        print("torch is not installed in this venv: JAX only (use the bench venv for both)", file=sys.stderr)
    monitor = common.LoadMonitor()
    columns, results = [], {}
    ncores = common.cores()
    for label, side, cores, env_extra in CONFIGS:
        if side.startswith("torch") and not have_torch or cores > ncores:
            continue
        env = dict(os.environ)
        if "XLA_FLAGS" in env_extra:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + env_extra["XLA_FLAGS"]).strip()
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--threads", str(cores)]
        cmd += ["--quick"] if args.quick else []
        if cores < ncores:
            cmd = ["taskset", "-c", str(sorted(os.sched_getaffinity(0))[-1])] + cmd
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            print(f"{label} on {cores} cores failed", file=sys.stderr)
            continue
        name = f"{label}, {cores} core{'s' if cores > 1 else ''}"
        columns.append(name)
        results[name] = json.loads(lines[-1][len("RESULT "):])
    load = monitor.stop()
    rows = []
    for B, H, W, Ci, Co in shapes:
        key = str((B, H, W, Ci, Co))
        flops = 2.0 * B * H * W * Ci * Co * 9
        rows.append([f"B{B} {H}x{W} {Ci}->{Co}"] + [
            f"{results[c][key] * 1e3:.1f} ms ({flops / results[c][key] / 1e9:.0f})" if key in results[c] else "-"
            for c in columns])
    text = common.table(["conv 3x3 (GFLOP/s)"] + columns, rows)
    common.report(text, load, args.out, results=results)


if __name__ == "__main__":
    main()
