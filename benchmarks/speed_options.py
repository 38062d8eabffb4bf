"""Speed options on XLA:CPU, measured: compute dtype, buffer donation, XLA flags, and conv layout.

    python benchmarks/speed_options.py --out benchmarks/results/speed_options.json
    python benchmarks/speed_options.py --model cifar10 --batch 8 --variants baseline,bf16
    python benchmarks/speed_options.py --quick

Each variant runs in its own process (so XLA flags and memory are its own) and times the library's compiled
train step (steady-state median) and one jitted model forward at the sampling batch (a sampler's step). The
baseline runs first and last, so drift over the run shows. Variants:

  baseline          float32, donated state, the package's XLA:CPU defaults (ddpm_jax.xla_cpu: convolutions on
                    XLA's Eigen kernel; dots, reductions and elementwise fusions with YNNPACK)
  xla-defaults      DDPM_JAX_XLA_DEFAULTS=0: XLA's own defaults (convolutions with YNNPACK too)
  ynn-off           XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= (no YNNPACK fusions at all)
  bf16              model.dtype=bfloat16 (params, optimizer and loss stay float32; the U-Net computes in bf16)
  remat             model.remat=True (blocks' activations recomputed in the backward pass)
  no-donation       the same step without donating the state (new buffers for params, EMA and Adam moments)
  memory-scheduler  XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false (XLA's memory-minimizing
                    instruction order instead of the concurrency-optimized default)
  fast-math         XLA_FLAGS=--xla_cpu_enable_fast_math=true
  malloc-keep       glibc malloc keeps freed memory (one arena, no mmap, no trim): XLA:CPU's per-call temporaries
                    then reuse faulted-in pages instead of ~1 GB of fresh ones per MNIST step

and `--layout`: one 3x3 convolution at the CIFAR model's shapes, NHWC/HWIO (the U-Net's layout) against
NCHW/OIHW, forward and forward+backward (a microbenchmark: XLA picks physical layouts itself, so this shows
what the logical layout costs once XLA has normalized it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

VARIANTS = {
    "baseline": dict(),
    "xla-defaults": dict(env={"DDPM_JAX_XLA_DEFAULTS": "0"}),
    "ynn-off": dict(xla_flags="--xla_cpu_experimental_ynn_fusion_type="),
    "bf16": dict(dtype="bfloat16"),
    "remat": dict(remat=True),
    "no-donation": dict(donate=False),
    "memory-scheduler": dict(xla_flags="--xla_cpu_enable_concurrency_optimized_scheduler=false"),
    "fast-math": dict(xla_flags="--xla_cpu_enable_fast_math=true"),
    "malloc-keep": dict(env={"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
                             "MALLOC_TRIM_THRESHOLD_": str(2**40)}),
}


def measure(model_name, batch, sample_batch, steps, dtype="float32", donate=True, remat=False):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ddpm_jax import configs, parallel, train

    config = common.load_config(model_name, [f"train.batch_size={batch}", f"model.dtype={dtype}",
                                             f"model.remat={remat}"])
    shape = common.MODELS[model_name]["image_shape"]
    model = configs.create_model(config)
    state = train.create_train_state(config, model, train.create_optimizer(config), shape)
    devices = tuple(jax.local_devices())
    if donate:
        fn = train.make_train_step(config, devices)
    else:
        import functools

        step_fn = functools.partial(
            train.train_step, model=model, optimizer=train.create_optimizer(config),
            objective=configs.create_objective(config), ema_decay=config.train.ema_decay,
            ema_warmup=config.train.ema_warmup)
        fn = parallel.pmap(lambda s, b: step_fn(s, jax.tree_util.tree_map(lambda x: x[0], b)), devices=devices)
    rs = np.random.RandomState(0)
    batch_arr = dict(image=rs.uniform(-1, 1, (len(devices), 1, batch // len(devices)) + shape).astype(np.float32))
    carry = [parallel.replicate(state, devices)]
    t0 = time.perf_counter()
    compiled = fn.lower(carry[0], batch_arr).compile()
    compile_s = time.perf_counter() - t0

    def one():
        carry[0], metrics = compiled(carry[0], batch_arr)
        return metrics

    train_times = common.time_calls(one, reps=steps, warmup=2)
    x = jnp.asarray(rs.uniform(-1, 1, (sample_batch,) + shape).astype(np.float32))
    t = jnp.full((sample_batch,), 500, jnp.int32)
    fwd = jax.jit(model.apply).lower(state.params, x, t).compile()
    fwd_times = common.time_calls(lambda: fwd(state.params, x, t), reps=max(steps, 3), warmup=1)
    median = statistics.median(train_times)
    return dict(train_ms=median * 1e3, train_images_per_s=batch / median,
                forward_ms=statistics.median(fwd_times) * 1e3, compile_s=compile_s,
                train_flops=common.cost_flops(compiled), forward_flops=common.cost_flops(fwd),
                xla_memory=common.xla_memory(compiled), train_times=train_times, forward_times=fwd_times)


def layout_bench(reps, quick=False):
    """One 3x3 SAME conv, NHWC/HWIO vs NCHW/OIHW: forward and value_and_grad (w.r.t. input and kernel)."""
    import jax
    import jax.numpy as jnp

    shapes = [(4, 16, 16, 64, 64)] if quick else [(16, 32, 32, 128, 128), (16, 16, 16, 256, 256)]
    out = []
    for B, H, W, Ci, Co in shapes:
        row = dict(shape=f"B{B} {H}x{W} {Ci}->{Co}")
        for layout, (xs, ws, dn) in {
            "NHWC": ((B, H, W, Ci), (3, 3, Ci, Co), ("NHWC", "HWIO", "NHWC")),
            "NCHW": ((B, Ci, H, W), (Co, Ci, 3, 3), ("NCHW", "OIHW", "NCHW")),
        }.items():
            x = jax.random.normal(jax.random.PRNGKey(0), xs)
            w = jax.random.normal(jax.random.PRNGKey(1), ws) * 0.05

            def conv(x, w, dn=dn):
                return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)

            f = jax.jit(conv).lower(x, w).compile()
            g = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1))).lower(x, w).compile()
            row[f"{layout}_fwd_ms"] = min(common.time_calls(lambda: f(x, w), reps=reps, warmup=1)) * 1e3
            row[f"{layout}_fwd_bwd_ms"] = min(common.time_calls(lambda: g(x, w), reps=reps, warmup=1)) * 1e3
            row["gflop_fwd"] = common.cost_flops(f) / 1e9
        out.append(row)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mnist", choices=tuple(common.MODELS))
    p.add_argument("--batch", type=int, default=None, help="training batch (default: throughput.py's)")
    p.add_argument("--sample-batch", type=int, default=None, help="forward batch (default: throughput.py's)")
    p.add_argument("--steps", type=int, default=10, help="timed train steps per variant")
    p.add_argument("--variants", default="baseline,xla-defaults,ynn-off,bf16,remat,no-donation,memory-scheduler,fast-math")
    p.add_argument("--no-layout", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    spec = common.MODELS[args.model]
    batch = args.batch or spec["batch"]
    sample_batch = args.sample_batch or spec["sample_batch"]
    steps = args.steps
    if args.quick:
        batch, sample_batch, steps = min(batch, 8), min(sample_batch, 8), 2
    if args.worker:
        v = VARIANTS.get(args.worker, {})
        if args.worker == "layout":
            res = layout_bench(3 if args.quick else 5, args.quick)
        else:
            res = measure(args.model, batch, sample_batch, steps, v.get("dtype", "float32"), v.get("donate", True),
                          v.get("remat", False))
        print("RESULT " + json.dumps(res))
        return

    names = [n for n in args.variants.split(",") if n]
    for n in names:
        if n not in VARIANTS:
            raise SystemExit(f"unknown variant {n!r}; choose from {', '.join(VARIANTS)}")
    order = names + (["baseline"] if "baseline" in names and len(names) > 1 else [])
    if not args.no_layout:
        order.append("layout")
    results, load0 = {}, os.getloadavg()[0]
    monitor = common.LoadMonitor()
    passthrough = argv if argv is not None else sys.argv[1:]
    for name in order:
        env = dict(os.environ)
        env.update(VARIANTS.get(name, {}).get("env", {}))
        flags = VARIANTS.get(name, {}).get("xla_flags")
        if flags:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), *passthrough, "--worker", name],
                              stdout=subprocess.PIPE, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"variant {name} failed (exit {proc.returncode})", file=sys.stderr)
            results[name] = dict(error=f"exit {proc.returncode}")
            continue
        res = json.loads(lines[-1][len("RESULT "):])
        key = name if name not in results else f"{name} (again)"
        results[key] = res
        if name != "layout":
            print(f"{key:>18}: train {res['train_ms']:.0f} ms/step ({res['train_images_per_s']:.1f} img/s), "
                  f"forward {res['forward_ms']:.1f} ms, compile {res['compile_s']:.1f}s", file=sys.stderr)
    load = monitor.stop()
    base = results.get("baseline")
    rows = []
    for name, r in results.items():
        if name == "layout" or "error" in r:
            if "error" in r:
                rows.append([name, "failed", "", "", "", "", "", ""])
            continue
        rows.append([name, f"{r['train_ms']:.0f}", f"{r['train_images_per_s']:.1f}",
                     f"{base['train_ms'] / r['train_ms']:.2f}x" if base else "-", f"{r['forward_ms']:.1f}",
                     f"{base['forward_ms'] / r['forward_ms']:.2f}x" if base else "-", f"{r['compile_s']:.1f}",
                     common.fmt(r["xla_memory"].get("peak_mb"), ".0f")])
    text = common.table(["variant", "train ms/step", "img/s", "speedup", "forward ms", "speedup", "compile s",
                         "train XLA MB"], rows)
    header = (f"{common.cpu_model()}, {common.cores()} cores; model {args.model}, train batch {batch}, forward batch "
              f"{sample_batch}; other processes {load['other_cores']:.2f} cores (load avg start {load0:.2f} end "
              f"{os.getloadavg()[0]:.2f})"
              + (" (--quick: smoke run)" if args.quick else ""))
    print("\n" + header)
    print(text)
    if "layout" in results and "error" not in results["layout"]:
        lrows = [[r["shape"], f"{r['gflop_fwd']:.2f}", f"{r['NHWC_fwd_ms']:.1f}", f"{r['NCHW_fwd_ms']:.1f}",
                  f"{r['NHWC_fwd_bwd_ms']:.1f}", f"{r['NCHW_fwd_bwd_ms']:.1f}"] for r in results["layout"]]
        ltext = common.table(["conv 3x3", "GFLOP fwd", "NHWC fwd ms", "NCHW fwd ms", "NHWC fwd+bwd ms",
                              "NCHW fwd+bwd ms"], lrows)
        print()
        print(ltext)
        text += "\n\n" + ltext
    if args.out:
        common.write_json(args.out, dict(header=header, load=load, args=vars(args), results=results, table=text))


if __name__ == "__main__":
    main()
