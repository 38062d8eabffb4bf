"""Helpers shared by the benchmark scripts: the benchmarked models, timing, machine facts, the matmul peak.

Not part of the package: the scripts run as `python benchmarks/NAME.py` and import this file from their folder.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The three benchmarked model sizes: the experiment config each comes from, the image shape, and default
# batches (training batch, sampling batch). digits trains at its config's batch size, mnist at 128 (its config's
# until it became the 30-minute CPU recipe, batch 32, in which the figures of docs/ were measured); the 35.7M
# CIFAR-10 model (config batch 128) trains at 16 here, a batch that runs in seconds per step on 2 CPU cores.
MODELS = {
    "digits": dict(config="experiments/digits.py", image_shape=(8, 8, 1), batch=64, sample_batch=64,
                   what="experiments/digits.py, 8x8x1"),
    "mnist": dict(config="experiments/mnist.py", image_shape=(28, 28, 1), batch=128, sample_batch=64,
                  what="experiments/mnist.py, 28x28x1"),
    "cifar10": dict(config="experiments/cifar10.py", image_shape=(32, 32, 3), batch=16, sample_batch=16,
                    what="unet.ddpm_cifar10() / experiments/cifar10.py (35.7M), 32x32x3"),
}


def load_config(name: str, overrides=()):
    """The experiment config of a benchmarked model, with "section.field=value" overrides."""
    from ddpm_jax import configs

    return configs.load_config(os.path.join(REPO, MODELS[name]["config"]), list(overrides))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cores() -> int:
    """CPU cores this process may run on (what XLA:CPU sizes its thread pool by)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict:
    import jax
    import jaxlib

    import ddpm_jax  # its XLA:CPU defaults go into XLA_FLAGS (as in the workers) before the backend starts

    info = dict(cpu=cpu_model(), cores=cores(), python=platform.python_version(), ddpm_jax=ddpm_jax.__version__,
                jax=jax.__version__,
                jaxlib=jaxlib.__version__, backend=jax.default_backend(), devices=len(jax.local_devices()),
                xla_flags=os.environ.get("XLA_FLAGS", ""), load_avg_start=list(os.getloadavg()))
    try:
        import flax

        info["flax"] = flax.__version__
    except ImportError:
        pass
    return info


class LoadMonitor:
    """How busy the machine was with other processes while a benchmark ran, from /proc/stat.

    other_cores = (CPU time of the whole machine - CPU time of this process and its waited-for children) / wall
    time, in cores: 0 on a quiet machine; on 2 cores, 1.0 means another process kept one core busy throughout.
    Call stop() after the benchmark's subprocesses have exited (their CPU time counts once they are waited for).
    """

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        ticks = os.sysconf("SC_CLK_TCK")
        try:
            with open("/proc/stat") as f:
                fields = [float(x) for x in f.readline().split()[1:]]
            busy = (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)) / ticks  # minus idle, iowait
        except OSError:
            busy = float("nan")
        own = sum(getattr(resource.getrusage(who), k) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for k in ("ru_utime", "ru_stime"))
        return time.time(), busy, own

    def stop(self) -> dict:
        t1, busy1, own1 = self._snapshot()
        t0, busy0, own0 = self.start
        wall = max(t1 - t0, 1e-9)
        return dict(wall_s=wall, machine_busy_cores=(busy1 - busy0) / wall, own_cores=(own1 - own0) / wall,
                    other_cores=max(0.0, (busy1 - busy0) - (own1 - own0)) / wall, load_avg_end=list(os.getloadavg()))


def block(x):
    import jax

    return jax.block_until_ready(x)


def time_calls(fn: Callable[[], object], *, reps: int, warmup: int = 1, min_seconds: float = 0.0) -> list[float]:
    """Wall times (s) of `reps` blocking calls of fn() after `warmup` untimed ones; keeps going until
    `min_seconds` of timed calls have passed."""
    for _ in range(warmup):
        block(fn())
    times = []
    while len(times) < reps or sum(times) < min_seconds:
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return times


def best_time(fn: Callable[[], object], reps: int = 7) -> float:
    """Seconds of the fastest of `reps` blocking calls of fn() after one warm-up."""
    return min(time_calls(fn, reps=reps, warmup=1))


def summary(times: list[float]) -> dict:
    return dict(median=statistics.median(times), min=min(times), max=max(times), n=len(times))


def matmul_peak(n: int = 2048, reps: int = 5, dtype: str = "float32") -> dict:
    """Dense matmul FLOP/s of this machine through XLA: best of `reps` timed n x n @ n x n jnp.dot calls.

    The practical peak the model FLOP/s are compared with (the best time, 2 n^3 FLOPs per product).
    """
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32).astype(dtype)
    dot = jax.jit(jnp.dot)
    times = time_calls(lambda: dot(a, b), reps=reps, warmup=2)
    flops = 2.0 * n ** 3
    return dict(n=n, dtype=dtype, best_s=min(times), median_s=statistics.median(times),
                flops_per_s=flops / min(times), median_flops_per_s=flops / statistics.median(times))


def cost_flops(compiled) -> float:
    """FLOPs of one call of a compiled executable, by XLA's own cost analysis (a while loop's body counts once)."""
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0]
    return float(ca.get("flops", float("nan")))


def xla_memory(compiled) -> dict:
    """XLA's static buffer assignment for one executable: arguments + outputs - aliased (donated) + temporaries."""
    ma = compiled.memory_analysis()
    if ma is None:
        return {}
    args, out, alias, temp = (ma.argument_size_in_bytes, ma.output_size_in_bytes, ma.alias_size_in_bytes,
                              ma.temp_size_in_bytes)
    return dict(argument_mb=args / 2**20, output_mb=out / 2**20, alias_mb=alias / 2**20, temp_mb=temp / 2**20,
                peak_mb=(args + out - alias + temp) / 2**20)


def maxrss_mb() -> float:
    """The process's peak resident set size so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def report(text: str, load: dict, out: str | None, **data) -> None:
    """Print a table under a line naming the machine and its load; with `out`, write it and `data` as JSON."""
    print(f"\n{cpu_model()}, {cores()} cores; other processes {load['other_cores']:.2f} cores")
    print(text)
    if out:
        write_json(out, dict(load=load, table=text, **data))


def write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=float)
    print(f"wrote {path}", file=sys.stderr)


def fmt(value, spec: str = ".1f", missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return missing
    return format(value, spec)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-markdown table, columns padded."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def fid_is_figure():
    """(fig, axes): two panels, FID left and IS right, for `save_fid_is_figure` (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, 2, figsize=(11, 4))


def save_fid_is_figure(fig, axes, path: str) -> None:
    """FID on a log axis, the legend, the PNG at `path` (parent directories created); closes the figure."""
    import matplotlib.pyplot as plt

    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)
