"""Where a training step's time goes on XLA:CPU: a jax.profiler trace aggregated by kind of HLO op.

    python benchmarks/profile_step.py --model mnist --out benchmarks/results/profile_mnist.json
    python benchmarks/profile_step.py --model cifar10 --batch 8 --what forward

Traces a few steady-state calls of the library's compiled train step (or of one model forward, `--what
forward`) with `jax.profiler`, reads the trace back (`jax.profiler.ProfileData`), and adds up the time of each
executed HLO op (XLA:CPU's thunks carry the op name). Each op is classified from the optimized HLO text of the
same executable:

  kind   conv / dot through YNNPACK (XLA:CPU's library fusions, `__ynn_fusion`), a convolution or dot XLA emits
         itself (no library), elementwise / reduction loop fusions, copies and transposes, other;
  phase  forward (`jvp(...)` in the op's source metadata), backward (`transpose(jvp(...))`), the rest
         (loss, RNG, the optimizer, the EMA), or no metadata: ops XLA created without source metadata, in
         practice the kernel-gradient convolutions and dots it rewrote into canonical form and the transposes
         feeding them (backward work).

Op times are summed over threads: where XLA runs independent ops concurrently the sum can exceed the wall time.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$")
HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")


def parse_hlo(text: str):
    """name -> dict(opcode, kind, calls, op_name, ynn) for every instruction; computation -> set of opcodes."""
    instrs, comps, current = {}, collections.defaultdict(set), None
    comp_op_names = collections.defaultdict(list)
    for line in text.splitlines():
        h = HEADER.match(line)
        if h and "=" not in line.split("{")[0]:
            current = h.group(1)
            continue
        m = INSTR.match(line)
        if not m:
            continue
        name, _, opcode, rest = m.groups()
        comps[current].add(opcode)
        kind = re.search(r"kind=(k\w+)", rest)
        calls = re.search(r"calls=%?([\w.\-]+)", rest)
        op_name = re.search(r'op_name="([^"]*)"', rest)
        if op_name:
            comp_op_names[current].append(op_name.group(1))
        instrs[name] = dict(opcode=opcode, kind=kind.group(1) if kind else None,
                            calls=calls.group(1) if calls else None, op_name=op_name.group(1) if op_name else "",
                            ynn="__ynn_fusion" in rest, dims=re.search(r"dim_labels=(\S+?),", rest))
    for info in instrs.values():  # a fusion without metadata: take its fused computation's
        if not info["op_name"] and info["calls"] and comp_op_names.get(info["calls"]):
            info["op_name"] = comp_op_names[info["calls"]][0]
    return instrs, comps


def classify(name: str, instrs, comps) -> tuple[str, str]:
    info = instrs.get(name)
    if info is None:
        return "other", "rest"
    op_name = info["op_name"]
    phase = "backward" if "transpose(jvp" in op_name else "forward" if "jvp(" in op_name or "/UNet" in op_name \
        else "rest" if op_name else "no metadata"
    ops = comps.get(info["calls"], set()) if info["calls"] else {info["opcode"]}
    if info["ynn"]:
        what = "conv" if "convolution" in ops else "dot" if "dot" in ops else "reduce" if "reduce" in ops else "other"
        return f"{what} (YNNPACK)", phase
    if "convolution" in ops:
        return "conv (XLA-emitted loops)", phase
    if "dot" in ops:
        return "dot (XLA)", phase
    if info["opcode"] in ("copy", "transpose") or ops <= {"copy", "transpose", "parameter", "bitcast"}:
        return "copy / transpose", phase
    if info["opcode"] == "fusion":
        return ("reduction fusion" if "reduce" in ops else "elementwise fusion"), phase
    return info["opcode"], phase


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="digits", choices=tuple(common.MODELS))
    p.add_argument("--batch", type=int, default=None, help="default: throughput.py's training batch")
    p.add_argument("--what", default="train", choices=("train", "forward"))
    p.add_argument("--steps", type=int, default=3, help="profiled calls")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--top", type=int, default=12, help="list the N most expensive ops")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from ddpm_jax import configs, parallel, train

    B = args.batch or common.MODELS[args.model]["batch"]
    config = common.load_config(args.model, [f"train.batch_size={B}", f"model.dtype={args.dtype}"])
    shape = common.MODELS[args.model]["image_shape"]
    model = configs.create_model(config)
    state = train.create_train_state(config, model, train.create_optimizer(config), shape)
    rs = np.random.RandomState(0)
    if args.what == "train":
        devices = tuple(jax.local_devices())
        fn = train.make_train_step(config, devices)
        carry = [parallel.replicate(state, devices)]
        batch = dict(image=rs.uniform(-1, 1, (len(devices), 1, B // len(devices)) + shape).astype(np.float32))
        compiled = fn.lower(carry[0], batch).compile()

        def call():
            carry[0], metrics = compiled(carry[0], batch)
            return metrics
    else:
        x = jnp.asarray(rs.uniform(-1, 1, (B,) + shape).astype(np.float32))
        t = jnp.full((B,), 500, jnp.int32)
        compiled = jax.jit(model.apply).lower(state.params, x, t).compile()

        def call():
            return compiled(state.params, x, t)

    instrs, comps = parse_hlo(compiled.as_text())
    common.time_calls(call, reps=2, warmup=1)
    monitor = common.LoadMonitor()
    tmp = tempfile.mkdtemp(prefix="ddpm_profile_")
    jax.profiler.start_trace(tmp)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        common.block(call())
    wall = (time.perf_counter() - t0) / args.steps
    jax.profiler.stop_trace()
    load = monitor.stop()
    path = sorted(glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True))[-1]
    data = jax.profiler.ProfileData.from_file(path)
    per_op = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            for ev in line.events:
                stats = dict(ev.stats)
                if "hlo_op" in stats:
                    per_op[stats["hlo_op"]] += ev.duration_ns / 1e6 / args.steps
    by_kind = collections.defaultdict(float)
    by_phase = collections.defaultdict(float)
    for name, ms in per_op.items():
        kind, phase = classify(name, instrs, comps)
        by_kind[(kind, phase)] += ms
        by_phase[phase] += ms
    total = sum(per_op.values())
    kinds = sorted({k for k, _ in by_kind}, key=lambda k: -sum(v for (kk, _), v in by_kind.items() if kk == k))
    phases = ("forward", "backward", "rest", "no metadata")
    rows = []
    for k in kinds:
        cells = [by_kind.get((k, ph), 0.0) for ph in phases]
        rows.append([k] + [f"{c:.1f}" for c in cells] + [f"{sum(cells):.1f}", f"{100 * sum(cells) / total:.0f}%"])
    rows.append(["total"] + [f"{by_phase.get(ph, 0.0):.1f}" for ph in phases] + [f"{total:.1f}", "100%"])
    text = common.table(["op kind", "forward ms", "backward ms", "rest ms", "no metadata ms", "all ms", "share"], rows)
    top = [[n, *classify(n, instrs, comps), f"{ms:.2f}", instrs.get(n, {}).get("op_name", "")[-70:]]
           for n, ms in per_op.most_common(args.top)]
    top_text = common.table(["op", "kind", "phase", "ms", "source"], top)
    print(f"\n{common.cpu_model()}, {common.cores()} cores, jax {jax.__version__}; {args.model} {args.what}, "
          f"batch {B}, "
          f"dtype {args.dtype}; wall {wall * 1e3:.1f} ms per call, op time summed over threads {total:.1f} ms; "
          f"other processes {load['other_cores']:.2f} cores")
    print(text)
    print()
    print(top_text)
    if args.out:
        common.write_json(args.out, dict(args=vars(args), load=load, wall_ms=wall * 1e3, op_ms_total=total,
                                         by_kind={f"{k}|{ph}": v for (k, ph), v in by_kind.items()},
                                         top=top, table=text, top_table=top_text))


if __name__ == "__main__":
    main()
