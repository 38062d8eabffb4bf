"""Training and sampling throughput of the DDPM U-Net at three sizes, with compile times, memory and FLOP/s.

    python benchmarks/throughput.py --out benchmarks/results/throughput.json     # the full run (~10 min, 2 cores)
    python benchmarks/throughput.py --quick --models digits                      # a smoke run (~1 min)
    python benchmarks/throughput.py --models cifar10 --batch cifar10=32 --dtype bfloat16

Models (benchmarks/common.py MODELS): the digits experiment (8x8x1), the MNIST experiment (28x28x1) and Ho et
al.'s 35.7M CIFAR-10 model (32x32x3). For each, in its own subprocess (so peak RSS is its own):

* training: the library's own compiled step (`train.make_train_step`, steps_per_call=1: pmap over the local
  devices, loss, grad, clip, Adam, EMA), on a fixed random batch (the input pipeline is not timed). Compile time
  (lower + compile, AOT) is reported apart from the steady-state ms/step (median of the timed steps).
* sampling: `sampling.ddim_sample` (50 steps) and `sampling.ancestral_sample` (1000 steps), jitted as a user
  calls them (one lax.scan each). "full" runs time the whole loop. "extrapolated" runs time a loop of k steps
  (DDIM with num_steps=k; ancestral on a k-step schedule: the step's work does not depend on the schedule's
  values) and scale the per-step time to 50 / 1000 steps; the table says which.
* FLOPs: XLA's cost analysis of the compiled executable (`compiled.cost_analysis()['flops']`). XLA counts a
  while loop's body once, so a sampler's FLOPs are steps x the FLOPs of one jitted model forward at that batch.
  Achieved FLOP/s over the dense float32 matmul FLOP/s measured in the same process (a 2048^3 jnp.dot, best
  of 5) gives the fraction of this machine's practical peak.
* memory: jax's device memory_stats() is None on CPU, so two other measures: XLA's static buffer assignment of
  the executable (arguments + outputs - donated + temporaries) and the growth of the process's peak RSS
  (getrusage maxrss) over its value after imports and param init. Phases run sampling first, then training,
  so the training RSS figure is the process peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

DDIM_STEPS = 50
ANCESTRAL_STEPS = 1000


def parse_kv(items, cast=int):
    out = {}
    for item in items or ():
        for part in item.split(","):
            name, _, value = part.partition("=")
            if name not in common.MODELS or not value:
                raise SystemExit(f"expected NAME=VALUE with NAME in {sorted(common.MODELS)}, got {part!r}")
            out[name] = cast(value)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="digits,mnist,cifar10",
                   help="comma-separated subset of " + ",".join(common.MODELS))
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small batches, 2 timed steps, 2-step sampler loops (numbers not meaningful)")
    p.add_argument("--batch", action="append", help="training batch per model, e.g. cifar10=32 (repeatable)")
    p.add_argument("--sample-batch", action="append", help="sampling batch per model, e.g. mnist=32")
    p.add_argument("--train-steps", type=int, default=None, help="timed training steps (default 20; cifar10 5)")
    p.add_argument("--sample-steps", type=int, default=10,
                   help="k, the sampler steps timed by extrapolated runs (default 10)")
    p.add_argument("--full-sampling", default="digits",
                   help="models whose samplers run all 50 / 1000 steps (default digits; 'all' or 'none')")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="U-Net compute dtype (config.model.dtype; params stay float32)")
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--no-sample", action="store_true")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def settings(args, name):
    spec = common.MODELS[name]
    batch = parse_kv(args.batch).get(name, spec["batch"])
    sample_batch = parse_kv(args.sample_batch).get(name, spec["sample_batch"])
    train_steps = args.train_steps or (5 if name == "cifar10" else 20)
    k = args.sample_steps
    full = args.full_sampling
    full = set(common.MODELS) if full == "all" else set() if full == "none" else set(full.split(","))
    if args.quick:
        batch = min(batch, 4 if name == "cifar10" else 8)
        sample_batch = min(sample_batch, 2 if name == "cifar10" else 8)
        train_steps, k, full = 2, 2, set()
    return dict(batch=batch, sample_batch=sample_batch, train_steps=train_steps, sample_steps=k,
                full_sampling=name in full, dtype=args.dtype, train=not args.no_train, sample=not args.no_sample,
                quick=args.quick)


# ---------------------------------------------------------------- worker (one model, one process)


def run_model(name: str, s: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ddpm_jax import configs, functional, parallel, sampling, schedules, train
    from ddpm_jax.models.unet import count_params

    config = common.load_config(name, [f"model.dtype={s['dtype']}"])
    image_shape = common.MODELS[name]["image_shape"]
    model = configs.create_model(config)
    sched = configs.create_schedule(config)
    optimizer = train.create_optimizer(config)
    state = train.create_train_state(config, model, optimizer, image_shape)
    params = state.params
    rss_base = common.maxrss_mb()
    peak = common.matmul_peak()
    out = dict(model=name, what=common.MODELS[name]["what"], image_shape=image_shape,
               params=count_params(params), dtype=s["dtype"], settings=s, matmul_peak=peak,
               rss_base_mb=rss_base)
    print(f"[{name}] {out['params']:,} params; matmul peak {peak['flops_per_s'] / 1e9:.0f} GFLOP/s",
          file=sys.stderr)

    if s["sample"]:
        B = s["sample_batch"]
        shape = (B,) + tuple(image_shape)
        x = jnp.zeros(shape, jnp.float32)
        t = jnp.zeros((B,), jnp.int32)
        fwd = jax.jit(model.apply).lower(params, x, t).compile()
        fwd_flops = common.cost_flops(fwd)
        fwd_times = common.time_calls(lambda: fwd(params, x, t), reps=3 if s["quick"] else 5, warmup=1)
        out["forward"] = dict(batch=B, flops=fwd_flops, **common.summary(fwd_times))
        rng = jax.random.PRNGKey(0)
        prediction = config.diffusion.prediction

        def ddim(p, key, num_steps):
            return sampling.ddim_sample(functional.bind(model.apply, p), sched, key, shape, num_steps=num_steps,
                                        prediction=prediction)

        def ancestral(p, key, sch):
            return sampling.ancestral_sample(functional.bind(model.apply, p), sch, key, shape,
                                             prediction=prediction, variance=config.diffusion.variance)

        k = s["sample_steps"]
        for kind, total in (("ddim", DDIM_STEPS), ("ancestral", ANCESTRAL_STEPS)):
            steps = total if s["full_sampling"] else k
            if kind == "ddim":
                jitted = jax.jit(ddim, static_argnums=2)
                call_args = (params, rng, steps)
            else:
                sch = sched if steps == sched.num_timesteps else schedules.make_schedule(
                    schedules.get_betas("cosine", steps))
                jitted = jax.jit(ancestral)
                call_args = (params, rng, sch)
            t0 = time.perf_counter()
            lowered = jitted.lower(*call_args)
            compiled = lowered.compile()
            compile_s = time.perf_counter() - t0
            run_args = call_args[:2] if kind == "ddim" else call_args
            times = common.time_calls(lambda: compiled(*run_args), reps=1 if (s["full_sampling"] or s["quick"]) else 2,
                                      warmup=0 if s["full_sampling"] else 1)
            per_step = min(times) / steps
            seconds = per_step * total
            flops = fwd_flops * total
            out[kind] = dict(batch=B, steps=total, timed_steps=steps,
                             mode="full" if steps == total else f"extrapolated from {steps} steps",
                             compile_s=compile_s, seconds=seconds, ms_per_step=per_step * 1e3,
                             images_per_s=B / seconds, flops=flops, flops_per_s=flops / seconds,
                             frac_peak=flops / seconds / peak["flops_per_s"],
                             xla_memory=common.xla_memory(compiled), times=times)
            print(f"[{name}] {kind}: {B / seconds:.2f} img/s ({out[kind]['mode']}), compile {compile_s:.1f}s",
                  file=sys.stderr)
        out["rss_after_sampling_mb"] = common.maxrss_mb()

    if s["train"]:
        B = s["batch"]
        config.train.batch_size = B
        devices = tuple(jax.local_devices())
        if B % len(devices):
            raise SystemExit(f"batch {B} does not divide over {len(devices)} devices")
        step_fn = train.make_train_step(config, devices)
        replicated = parallel.replicate(state, devices)
        del state
        rs = np.random.RandomState(0)
        batch = dict(image=rs.uniform(-1, 1, (len(devices), 1, B // len(devices)) + tuple(image_shape))
                     .astype(np.float32))
        t0 = time.perf_counter()
        compiled = step_fn.lower(replicated, batch).compile()
        compile_s = time.perf_counter() - t0
        flops = common.cost_flops(compiled) * len(devices)
        holder = [replicated]

        def one_step():
            holder[0], metrics = compiled(holder[0], batch)
            return metrics

        times = common.time_calls(one_step, reps=s["train_steps"], warmup=2)
        med = common.summary(times)["median"]
        out["train"] = dict(batch=B, compile_s=compile_s, ms_per_step=med * 1e3, images_per_s=B / med,
                            flops=flops, flops_per_s=flops / med, frac_peak=flops / med / peak["flops_per_s"],
                            xla_memory=common.xla_memory(compiled), times=times)
        out["rss_after_train_mb"] = common.maxrss_mb()
        print(f"[{name}] train: {B / med:.1f} img/s, {med * 1e3:.0f} ms/step, compile {compile_s:.1f}s",
              file=sys.stderr)
    out["load_avg_end"] = list(os.getloadavg())
    return out


# ---------------------------------------------------------------- the table


def rows_of(r: dict) -> list[list[str]]:
    rows = []
    base = r["rss_base_mb"]
    phases = [("train", "train", f"{r.get('train', {}).get('batch', '-')}")]
    phases += [("ddim", "DDIM-50", None), ("ancestral", "ancestral-1000", None)]
    for key, label, _ in phases:
        d = r.get(key)
        if not d:
            continue
        if key == "train":
            rss = r.get("rss_after_train_mb", base) - base
            per = f"{d['ms_per_step']:.0f} /step"
            mode = "steady state"
        else:
            rss = r.get("rss_after_sampling_mb", base) - base
            per = f"{d['ms_per_step']:.1f} /eval"
            mode = d["mode"]
        rows.append([
            r["model"], f"{r['params'] / 1e6:.2f}M", label, str(d["batch"]), per, common.fmt(d["images_per_s"], ".2f"),
            common.fmt(d["compile_s"], ".1f"), common.fmt(d["flops"] / 1e9, ".1f"),
            common.fmt(d["flops_per_s"] / 1e9, ".1f"), common.fmt(100 * d["frac_peak"], ".0f") + "%",
            common.fmt(d["xla_memory"].get("peak_mb"), ".0f"), common.fmt(rss, ".0f"), mode,
        ])
    return rows


HEADERS = ["model", "params", "phase", "batch", "ms", "images/s", "compile s", "GFLOP/call", "GFLOP/s",
           "of peak", "XLA MB", "RSS+ MB", "timing"]


def render(results: list[dict]) -> str:
    rows = [row for r in results for row in rows_of(r)]
    peaks = ", ".join(f"{r['model']}: {r['matmul_peak']['flops_per_s'] / 1e9:.0f}" for r in results)
    notes = (f"matmul peak (float32 2048^3 jnp.dot, GFLOP/s, per process): {peaks}. 'ms' is per training step or "
             "per sampler step (one model evaluation). XLA MB: the executable's static buffers (args + outputs - "
             "donated + temps); RSS+ MB: growth of the process peak RSS over its value after init.")
    return common.table(HEADERS, rows) + "\n\n" + notes


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        result = run_model(args.worker, settings(args, args.worker))
        print("RESULT " + json.dumps(result, default=float))
        return
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for n in names:
        if n not in common.MODELS:
            raise SystemExit(f"unknown model {n!r}; choose from {', '.join(common.MODELS)}")
    info = common.machine_info()
    monitor = common.LoadMonitor()
    results = []
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for name in names:
        print(f"--- {name}", file=sys.stderr)
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), *passthrough, "--worker", name],
                              stdout=subprocess.PIPE, text=True)
        if proc.returncode:
            raise SystemExit(f"worker for {name} failed (exit {proc.returncode})")
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
        results.append(json.loads(line[len("RESULT "):]))
    info["load"] = monitor.stop()
    info["load_avg_end"] = info["load"]["load_avg_end"]
    text = render(results)
    print(f"\n{info['cpu']}, {info['cores']} cores, jax {info['jax']}, dtype {args.dtype}; other processes used "
          f"{info['load']['other_cores']:.2f} cores on average during the run "
          f"(load avg start {info['load_avg_start'][0]:.2f} end {info['load_avg_end'][0]:.2f})"
          + (" (--quick: smoke run, not meaningful)" if args.quick else ""))
    print(text)
    if args.out:
        common.write_json(args.out, dict(machine=info, args=vars(args), results=results, table=text))


if __name__ == "__main__":
    main()
