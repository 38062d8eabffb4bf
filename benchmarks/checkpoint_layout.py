"""Where a checkpoint's time goes: Orbax's cost per array, the packed layout, compression, and a whole save.

    python benchmarks/checkpoint_layout.py --out benchmarks/results/checkpoint_layout.json

The state is a fresh digits TrainState (params, EMA params, Adam's moments: 584 arrays, 11.5 MiB). Each row is
the median of --repeats writes into a fresh directory: wall time and CPU time of this process (all its threads).
  per-array      the state as a pytree, one array per leaf (the layout before packing), Orbax's PyTree handler
  packed         the same bytes as one float32 buffer per dtype (`checkpoint.pack`), same handler
  packed, raw    the same, without Orbax's zstd compression
  pack only      `checkpoint.pack` alone (the host copy of a save)
  save (sync)    a whole `Checkpointer.save` with async_save=False: the three items, bookkeeping, finalize
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(write, repeats: int) -> dict:
    """Median wall and CPU milliseconds of write(directory) into fresh directories (a first, warm-up write is not
    counted), and the bytes on disk."""
    walls, cpus, size = [], [], 0
    for k in range(repeats + 1):
        directory = tempfile.mkdtemp()
        try:
            c0, t0 = cpu_seconds(), time.perf_counter()
            write(directory)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            size = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(directory) for n in names)
        finally:
            shutil.rmtree(directory)
        if k:
            walls.append(wall)
            cpus.append(cpu)
    return dict(wall_ms=1e3 * float(np.median(walls)), cpu_ms=1e3 * float(np.median(cpus)), mib=size / 2**20)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import jax
    import orbax.checkpoint as ocp

    from ddpm_jax import checkpoint, configs, train

    config = common.load_config("digits")
    state = train.create_train_state(config, configs.create_model(config), train.create_optimizer(config),
                                     common.MODELS["digits"]["image_shape"])
    state = jax.tree_util.tree_map(np.asarray, state)
    buffers, _ = checkpoint.pack(state)
    leaves = jax.tree_util.tree_leaves(state)

    def pytree(tree, **handler):
        writer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(**handler))
        return lambda d: writer.save(os.path.join(d, "item"), args=ocp.args.PyTreeSave(tree))

    def whole_save(d):
        ckpt = checkpoint.Checkpointer(d, async_save=False)
        ckpt.save(1, state, {"epoch": 0, "index": 0})
        ckpt.close()

    info, load = common.machine_info(), common.LoadMonitor()
    rows = {
        "per-array": measure(pytree(state), args.repeats),
        "packed": measure(pytree(buffers), args.repeats),
        "packed, raw": measure(pytree(buffers, use_compression=False), args.repeats),
        "pack only": measure(lambda d: checkpoint.pack(state), args.repeats),
        "save (sync)": measure(whole_save, args.repeats),
    }
    load = load.stop()
    text = (f"digits TrainState: {len(leaves)} arrays, {sum(x.nbytes for x in leaves) / 2**20:.1f} MiB; median of "
            f"{args.repeats} writes\n" + common.table(
                ["write", "wall ms", "CPU ms (all threads)", "MiB on disk"],
                [[name, f"{r['wall_ms']:.0f}", f"{r['cpu_ms']:.0f}", f"{r['mib']:.1f}"] for name, r in rows.items()]))
    common.report(text, load, args.out, machine=info, rows=rows, arrays=len(leaves), repeats=args.repeats)


if __name__ == "__main__":
    main()
