"""The sharded train step (jax.jit over a (data, fsdp) mesh) against the pmap one: throughput on this CPU, and the
per-device memory of the train state (params + Adam + EMA) from the compiled step's memory analysis.

    python benchmarks/sharded_step.py --out benchmarks/results/sharded_step.json      # the full run
    python benchmarks/sharded_step.py --quick                                         # a smoke run

Each measurement runs in its own subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=N (8 forced CPU
devices, or 1), as the tests do:

* throughput: the library's compiled step (`train.make_train_step`, steps_per_call=1) of the digits experiment
  (755k params, 8x8x1, batch 64) on a fixed random batch placed by the layout (`put_state`, `put_batches`; the
  input pipeline is not timed): median ms/step of the timed steps after a warm-up, under pmap, sharded data=N and,
  on 8 devices, sharded fsdp=4 x data=2 and fsdp=8, all in one process and timed in turns (8 rounds of 5 steps
  each), so a change in the machine's load hits every layout alike. The 8 forced devices share this machine's cores, so the
  figures compare the layouts, not the hardware.
* memory: the same step, lowered and compiled only (nothing runs), for Ho et al.'s CIFAR-10 U-Net (35.7M, 32x32x3)
  and a 300M+ U-Net (ADM ImageNet-256 width: ch 256, ch_mult (1, 1, 2, 2, 4, 4), 2 blocks, attention at 32, 16 and
  8 with 4 heads, scale-shift norm; 256x256x3), at one image per device (global batch 8), under pmap (state
  replicated) and sharded fsdp=8. `compiled.memory_analysis()` gives the per-device argument bytes (the state and
  this device's batch), output, aliased (donated) and temporary bytes; the state's share is the argument bytes
  less the batch's, and is checked against the sum of the state's shard sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

LAYOUTS = {  # name -> (parallelism, mesh) on N devices
    "pmap": ("pmap", None),
    "sharded data=N": ("sharded", dict(data=-1, fsdp=1)),
    "sharded fsdp=4 x data=2": ("sharded", dict(data=2, fsdp=4)),
    "sharded fsdp=8": ("sharded", dict(data=1, fsdp=8)),
}
# The 300M+ U-Net: the width of Dhariwal & Nichol's ImageNet-256 model on this codebase's U-Net (no up/down-sampling
# residual blocks, no class embedding).
ADM256 = dict(ch=256, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(32, 16, 8), num_heads=4,
              scale_shift_norm=True, dropout=0.0)
MEMORY_MODELS = {
    "cifar10": dict(config="experiments/cifar10.py", overrides=[], image_shape=(32, 32, 3),
                    what="unet.ddpm_cifar10() (35.7M), 32x32x3"),
    "adm256": dict(config="experiments/cifar10.py",
                   overrides=[f"--config.model.{k}={v!r}" for k, v in ADM256.items()] + ["--config.data.image_size=256"],
                   image_shape=(256, 256, 3), what="ADM ImageNet-256 width (ch 256), 256x256x3"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 3 timed steps, the CIFAR-10 model's memory only")
    p.add_argument("--steps", type=int, default=5, help="timed steps per layout and round")
    p.add_argument("--rounds", type=int, default=8, help="rounds of timed steps, the layouts taking turns")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _layout_config(config_path, overrides, parallelism, mesh, batch):
    from ddpm_jax import configs

    extra = [f"--config.train.parallelism={parallelism}", f"--config.train.batch_size={batch}"]
    if mesh:
        extra += [f"--config.train.mesh.{k}={v}" for k, v in mesh.items()]
    return configs.load_config(os.path.join(common.REPO, config_path), list(overrides) + extra)


def _placed(config, image_shape, batch, layout, abstract=False):
    """(placed state, placed batches [1 step]) for the layout: real arrays, or ShapeDtypeStructs to lower with."""
    import jax
    import numpy as np

    from ddpm_jax import configs, train

    model = configs.create_model(config)

    def make_state():
        return train.create_train_state(config, model, train.create_optimizer(config), image_shape)

    local = len(layout.local_devices)
    if abstract:
        state = jax.eval_shape(make_state)
        images = jax.ShapeDtypeStruct((1, batch) + image_shape, np.float32)
        if hasattr(layout, "mesh"):
            return state, {"image": images}
        lead = lambda x: jax.ShapeDtypeStruct((local,) + x.shape, x.dtype)  # noqa: E731
        per_device = jax.ShapeDtypeStruct((local, 1, batch // local) + image_shape, np.float32)
        return jax.tree_util.tree_map(lead, state), {"image": per_device}
    state = make_state()
    host = np.random.RandomState(0).uniform(-1, 1, (local, batch // local) + image_shape).astype(np.float32)
    return layout.put_state(state), layout.put_batches([{"image": host}])


def child_throughput(spec: dict) -> list:
    """Every layout of spec["layouts"] on this process's devices, timed in interleaved rounds (so a change in the
    machine's load hits all of them alike): median ms/step over all rounds."""
    import jax

    from ddpm_jax import train

    runs = []
    for name in spec["layouts"]:
        parallelism, mesh = LAYOUTS[name]
        config = _layout_config("experiments/digits.py", ["--config.model.num_classes=None"], parallelism, mesh,
                                spec["batch"])
        layout = train.make_layout(config)
        state, batches = _placed(config, (8, 8, 1), spec["batch"], layout)
        runs.append(dict(name=name, layout=layout.describe(), step=train.make_train_step(config), carry=[state],
                         batches=batches, times=[]))

    def one(run):
        run["carry"][0], metrics = run["step"](run["carry"][0], run["batches"])
        return metrics

    for run in runs:  # compile and warm up
        common.time_calls(lambda: one(run), reps=0, warmup=2)
    for _ in range(spec["rounds"]):
        for run in runs:
            run["times"] += common.time_calls(lambda: one(run), reps=spec["steps"], warmup=0)
    out = []
    for run in runs:
        s = common.summary(run["times"])
        out.append(dict(name=run["name"], devices=jax.device_count(), layout=run["layout"],
                        ms_per_step=1e3 * s["median"], ms_min=1e3 * s["min"],
                        images_per_sec=spec["batch"] / s["median"], n=s["n"]))
    return out


def child_memory(spec: dict) -> dict:
    import jax
    import numpy as np

    from ddpm_jax import train

    m = MEMORY_MODELS[spec["model"]]
    config = _layout_config(m["config"], m["overrides"], spec["parallelism"], spec["mesh"], spec["batch"])
    layout = train.make_layout(config)
    state, batches = _placed(config, m["image_shape"], spec["batch"], layout, abstract=True)
    compiled = train.make_train_step(config).lower(state, batches).compile()
    ma = compiled.memory_analysis()
    n = jax.device_count()
    batch_bytes = spec["batch"] // n * int(np.prod(m["image_shape"])) * 4
    # The state's bytes on one device from its shardings (pmap: one whole copy per device, the leading axis).
    sharded = hasattr(layout, "mesh")
    if sharded:
        leaves = jax.tree_util.tree_leaves(state)
        shardings = jax.tree_util.tree_leaves(layout.state_shardings(state))
        expected = sum(int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize for x, s in zip(leaves, shardings))
    else:
        expected = sum(int(np.prod(x.shape[1:])) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state))
    params = sum(int(np.prod(x.shape[0 if sharded else 1:])) for x in jax.tree_util.tree_leaves(state.params))
    mib = 2 ** 20
    return dict(model=spec["model"], what=m["what"], params=int(params), devices=n, layout=layout.describe(),
                argument_mib=ma.argument_size_in_bytes / mib, output_mib=ma.output_size_in_bytes / mib,
                alias_mib=ma.alias_size_in_bytes / mib, temp_mib=ma.temp_size_in_bytes / mib,
                batch_mib=batch_bytes / mib, state_mib=(ma.argument_size_in_bytes - batch_bytes) / mib,
                state_mib_from_shardings=expected / mib)


def run_child(kind: str, devices: int, **spec) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(dict(spec, kind=kind))],
                         env=env, capture_output=True, text=True, cwd=common.REPO)
    if out.returncode:
        raise SystemExit(f"child {kind} {spec} failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(kind, devices, spec, "->", result, file=sys.stderr, flush=True)
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps((child_throughput if spec["kind"] == "throughput" else child_memory)(spec)))
        return
    load = common.LoadMonitor()
    steps = 3 if args.quick else args.steps
    throughput = []
    for devices, names in ((8, list(LAYOUTS)), (1, ["pmap", "sharded data=N"])):
        throughput += run_child("throughput", devices, layouts=names, batch=64, steps=steps,
                                rounds=1 if args.quick else args.rounds)
    memory = []
    for model in ["cifar10"] if args.quick else list(MEMORY_MODELS):
        for name in ("pmap", "sharded fsdp=8"):
            parallelism, mesh = LAYOUTS[name]
            memory.append(dict(run_child("memory", 8, model=model, parallelism=parallelism, mesh=mesh, batch=8),
                               name=name))
    rows = []
    for r in throughput:
        base = next(b for b in throughput if b["devices"] == r["devices"] and b["name"] == "pmap")
        rows.append([str(r["devices"]), r["name"], common.fmt(r["ms_per_step"], ".2f"),
                     common.fmt(r["images_per_sec"], ".0f"), common.fmt(base["ms_per_step"] / r["ms_per_step"], ".2f")])
    text = "train step, digits model, batch 64 (median ms/step; speed relative to pmap on as many devices)\n"
    text += common.table(["devices", "layout", "ms/step", "images/s", "vs pmap"], rows)
    mrows = [[r["model"], f"{r['params'] / 1e6:.1f}M", r["name"], common.fmt(r["state_mib"], ".0f"),
              common.fmt(r["state_mib_from_shardings"], ".0f"), common.fmt(r["temp_mib"], ".0f")] for r in memory]
    text += ("\n\nper-device memory of the compiled step on 8 devices, one image per device (MiB; state = params + "
             "Adam moments + EMA + step/rng, from memory_analysis: arguments less the batch)\n")
    text += common.table(["model", "params", "layout", "state MiB/device", "from shardings", "temp MiB"], mrows)
    common.report(text, load.stop(), args.out, machine=common.machine_info(), throughput=throughput, memory=memory,
                  timed_steps_per_round=steps, rounds=1 if args.quick else args.rounds)


if __name__ == "__main__":
    main()
