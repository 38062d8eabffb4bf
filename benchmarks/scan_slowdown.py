"""How much slower a U-Net step runs inside `lax.scan` than as separate calls on XLA:CPU, and which part.

    python benchmarks/scan_slowdown.py --out benchmarks/results/scan_slowdown.json
    python benchmarks/scan_slowdown.py --quick

`train.make_multi_step(step_fn, K)` runs K optimizer steps in one call (a `lax.scan`); on accelerators that
saves K - 1 dispatches. On XLA:CPU the scanned step is much slower than the same step called K times, which is
why the configs keep train.steps_per_call = 1. This script times, per step, on the digits experiment's U-Net:

  train step        the library's step (make_multi_step): K calls of steps=1 vs one call of steps=K
  train step unroll the same K steps in a scan with unroll=True (no while loop left in the program)
  grad only         value_and_grad of the eps-MSE loss + an SGD update (no optax, no EMA, no pmap)
  forward only      one model evaluation per step, x_{k+1} = x_k - 0.01 model(x_k, t) (a sampler's shape)

each as K separate calls of one compiled step and as one compiled `lax.scan` of K steps, and prints the ratio
(scan time per step / call time per step). `--xla-dump DIR` also writes XLA's optimized HLO of the variants.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="digits", choices=tuple(common.MODELS))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=8, help="K, steps per scan (default 8)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions of each variant (best is kept)")
    p.add_argument("--variants", default="train,unroll,grad,forward")
    p.add_argument("--quick", action="store_true", help="batch 8, K = 2, 1 rep")
    p.add_argument("--hlo-dir", default=None, help="write each variant's optimized HLO text here")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.reps = 8, 2, 1

    import jax
    import jax.numpy as jnp
    import numpy as np

    from ddpm_jax import configs, parallel, train

    K, B = args.steps, args.batch
    config = common.load_config(args.model, [f"train.batch_size={B}"])
    shape = common.MODELS[args.model]["image_shape"]
    model = configs.create_model(config)
    sched = configs.create_schedule(config)
    optimizer = train.create_optimizer(config)
    state0 = train.create_train_state(config, model, optimizer, shape)
    devices = tuple(jax.local_devices())
    rs = np.random.RandomState(0)
    images = rs.uniform(-1, 1, (K, B) + shape).astype(np.float32)
    info = common.machine_info()
    monitor = common.LoadMonitor()
    results = {}

    variants = set(args.variants.split(","))

    def bench(name, call_jit, scan_jit, carry0, call_rest, scan_rest):
        """Time K calls of call_jit(carry, *call_rest(k)) against one scan_jit(carry, *scan_rest); both return
        (new carry, ...), the carry is threaded (and, where the function donates it, donated)."""
        t0 = time.perf_counter()
        c_call = call_jit.lower(carry0, *call_rest(0)).compile()
        compile_call = time.perf_counter() - t0
        t0 = time.perf_counter()
        c_scan = scan_jit.lower(carry0, *scan_rest).compile()
        compile_scan = time.perf_counter() - t0
        if args.hlo_dir:
            os.makedirs(args.hlo_dir, exist_ok=True)
            for suffix, c in (("call", c_call), ("scan", c_scan)):
                with open(os.path.join(args.hlo_dir, f"{name.replace(' ', '_')}_{suffix}.txt"), "w") as f:
                    f.write(c.as_text())
        box = [carry0]

        def run_calls():
            for k in range(K):
                out = c_call(box[0], *call_rest(k))
                box[0] = out[0]
            return out

        def run_scan():
            out = c_scan(box[0], *scan_rest)
            box[0] = out[0]
            return out

        calls = common.time_calls(run_calls, reps=args.reps, warmup=1)
        scans = common.time_calls(run_scan, reps=args.reps, warmup=1)
        per_call, per_scan = min(calls) / K, min(scans) / K
        results[name] = dict(call_ms_per_step=per_call * 1e3, scan_ms_per_step=per_scan * 1e3,
                             ratio=per_scan / per_call, compile_call_s=compile_call, compile_scan_s=compile_scan,
                             flops_call=common.cost_flops(c_call), flops_scan_body=common.cost_flops(c_scan))
        print(f"{name:>14}: calls {per_call * 1e3:8.1f} ms/step   scan {per_scan * 1e3:8.1f} ms/step   "
              f"ratio {per_scan / per_call:5.1f}x   (compile {compile_call:.1f}s / {compile_scan:.1f}s)",
              file=sys.stderr)

    # --- the library's train step, as train_and_evaluate runs it (pmap over the devices, donated state).
    step_fn = functools.partial(
        train.train_step, model=model, optimizer=optimizer, objective=configs.create_objective(config),
        ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup)
    one = train.make_multi_step(step_fn, 1, devices)

    def unrolled_multi(st, batches):
        st, metrics = jax.lax.scan(step_fn, st, batches, unroll=True)
        return st, jax.tree_util.tree_map(jnp.mean, metrics)

    for name, key, fn in (("train step", "train", lambda: train.make_multi_step(step_fn, K, devices)),
                          ("train unrolled", "unroll",
                           lambda: parallel.pmap(unrolled_multi, devices=devices, donate_argnums=(0,)))):
        if key in variants:
            bench(name, one, fn(), parallel.replicate(state0, devices),
                  lambda k: ({"image": images[None, k:k + 1]},), ({"image": images[None]},))

    # --- grad only and forward only: plain jit, no pmap, no optimizer, no RNG.
    sqrt_ab, sqrt_1mab = sched.sqrt_alphas_cumprod, sched.sqrt_one_minus_alphas_cumprod

    def sgd_step(params, x0):
        t = jnp.arange(B, dtype=jnp.int32) * (sched.num_timesteps // B)
        noise = jnp.sin(x0 * 7.0)  # a deterministic stand-in for eps
        x_t = sqrt_ab[t][:, None, None, None] * x0 + sqrt_1mab[t][:, None, None, None] * noise

        def loss(p):
            return jnp.mean((model.apply(p, x_t, t) - noise) ** 2)

        value, grads = jax.value_and_grad(loss)(params)
        return jax.tree_util.tree_map(lambda w, g: w - 1e-4 * g, params, grads), value

    if "grad" in variants:
        bench("grad only", jax.jit(sgd_step, donate_argnums=(0,)),
              jax.jit(lambda p, xs: jax.lax.scan(sgd_step, p, xs), donate_argnums=(0,)),
              jax.tree_util.tree_map(jnp.array, state0.params), lambda k: (images[k],), (images,))

    def fwd_step(x, params):
        t = jnp.full((x.shape[0],), 500, jnp.int32)
        return x - 0.01 * model.apply(params, x, t)

    if "forward" in variants:
        params = state0.params
        bench("forward only", jax.jit(lambda x, p: (fwd_step(x, p),)),
              jax.jit(lambda x, p: jax.lax.scan(lambda c, _: (fwd_step(c, p), None), x, None, length=K)),
              jnp.asarray(images[0]), lambda k: (params,), (params,))

    info["load"] = monitor.stop()
    info["load_avg_end"] = info["load"]["load_avg_end"]
    rows = [[name, f"{r['call_ms_per_step']:.1f}", f"{r['scan_ms_per_step']:.1f}", f"{r['ratio']:.1f}x"]
            for name, r in results.items()]
    text = common.table(["variant", "K calls: ms/step", "one scan of K: ms/step", "scan / calls"], rows)
    print(f"\n{info['cpu']}, {info['cores']} cores, jax {info['jax']}; model {args.model}, batch {B}, K = {K}; "
          f"other processes {info['load']['other_cores']:.2f} cores (load avg start {info['load_avg_start'][0]:.2f} "
          f"end {info['load_avg_end'][0]:.2f})" + (" (--quick: smoke run)" if args.quick else ""))
    print(text)
    if args.out:
        common.write_json(args.out, dict(machine=info, args=vars(args), results=results, table=text))



if __name__ == "__main__":
    main()
