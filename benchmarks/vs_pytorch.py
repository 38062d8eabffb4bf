"""ddpm_jax against PyTorch + Hugging Face diffusers at equal architecture, batch, optimizer and loss.

    # torch and diffusers live in a separate venv (requirements-bench.txt), not in the package's own:
    python3 -m venv /work/venv-bench
    /work/venv-bench/bin/pip install -r requirements.txt -r requirements-bench.txt
    /work/venv-bench/bin/pip install --no-deps -e .
    /work/venv-bench/bin/python benchmarks/vs_pytorch.py --out benchmarks/results/vs_pytorch.json
    /work/venv-bench/bin/python benchmarks/vs_pytorch.py --quick --models digits      # smoke run

The PyTorch side is diffusers' `UNet2DModel` built from a config (no weights are downloaded) that mirrors our
U-Net: block_out_channels = ch * ch_mult, layers_per_block = num_res_blocks, AttnDown/AttnUp blocks at the
levels whose resolution is in attn_resolutions, GroupNorm(norm_groups, eps 1e-6) also in every attention
block, scale-shift norm where the config has it (resnet_time_scale_shift="scale_shift"), single-head attention
(attention_head_dim=None), Ho et al.'s sinusoidal embedding (flip_sin_to_cos=False, freq_shift=1), TF-style
stride-2 downsampling (downsample_padding=0), the same dropout. For the CIFAR-10 model this is exactly the
`google/ddpm-cifar10-32` config. Parameter counts are printed side by side (and must agree within 2%).

Work per training step, on both sides: draw t ~ U{0..999} and eps ~ N(0, I), x_t = q_sample(x0, t, eps),
eps-prediction MSE, backward, clip the global gradient norm at 1, Adam (lr 2e-4, b 0.9/0.999, eps 1e-8), EMA
of the params. Ours is the library's own compiled step (`train.make_train_step`); theirs is the usual eager
loop. Sampling: DDIM with 50 steps, eta 0, clipped x0, on the DDIM paper's timesteps (0, 20, ..., 980) with
the last step to alpha_bar = 1: ours `sampling.ddim_sample`, theirs diffusers' `DDIMScheduler` (leading spacing,
set_alpha_to_one=True) around the UNet2DModel under torch.inference_mode(). For the big model, `--sample-steps`
times k-step loops on both sides and scales the per-step time to 50 (stated in the table).

JAX and torch run in two worker processes started once (each keeps its compiled / warmed-up state) and driven
alternately by this process, repetition by repetition, with the order flipped every repetition (J T T J ...),
so that load from elsewhere hits both sides alike. Both use the same number of threads: XLA:CPU sizes its
intra-op pool by the cores it may run on; torch gets torch.set_num_threads(that number) (interop threads 1).
Compile time (ours) and the first, warm-up steps (theirs) are reported apart and not in the throughput.
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

T_TRAIN = 1000
DDIM_STEPS = 50
TRAIN_TARGET, DDIM_TARGET = 1.5, 2.0  # the performance issue's targets: ours / diffusers images/s
SAMPLE_BATCH = {"digits": 64, "mnist": 64, "cifar10": 16}
TRAIN_STEPS = {"digits": 10, "mnist": 5, "cifar10": 3}    # timed steps per repetition
SAMPLE_STEPS = {"digits": 50, "mnist": 50, "cifar10": 10}  # sampler steps timed per repetition (50 = the whole)


def diffusers_config(config, image_shape) -> dict:
    """UNet2DModel kwargs with the architecture of our UNet for this experiment config."""
    m = config.model
    H, _, C = image_shape
    res = [H // 2 ** i for i in range(len(m.ch_mult))]
    attn = [r in tuple(m.attn_resolutions) for r in res]
    return dict(
        sample_size=H, in_channels=C, out_channels=C,
        block_out_channels=tuple(m.ch * k for k in m.ch_mult), layers_per_block=m.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0,
        flip_sin_to_cos=False, freq_shift=1, mid_block_scale_factor=1, norm_eps=1e-6,
        norm_num_groups=m.get("norm_groups", 32), attn_norm_num_groups=m.get("norm_groups", 32),
        resnet_time_scale_shift="scale_shift" if m.get("scale_shift_norm", False) else "default",
        time_embedding_type="positional", dropout=m.dropout,
    )


# ---------------------------------------------------------------- the two workers


class JaxSide:
    def __init__(self, name, batch, sample_batch, sample_steps, dtype):
        import jax
        import numpy as np

        from ddpm_jax import configs, functional, parallel, sampling, train
        from ddpm_jax.models.unet import count_params

        config = common.load_config(name, [f"model.dtype={dtype}", f"train.batch_size={batch}"])
        shape = common.MODELS[name]["image_shape"]
        model = configs.create_model(config)
        sched = configs.create_schedule(config)
        state = train.create_train_state(config, model, train.create_optimizer(config), shape)
        self.params_count = count_params(state.params)
        devices = tuple(jax.local_devices())
        step = train.make_train_step(config, devices)
        self.state = parallel.replicate(state, devices)
        rs = np.random.RandomState(0)
        self.batch = dict(image=rs.uniform(-1, 1, (len(devices), 1, batch // len(devices)) + shape)
                          .astype(np.float32))
        t0 = time.perf_counter()
        self.step = step.lower(self.state, self.batch).compile()
        self.train_compile_s = time.perf_counter() - t0
        params = state.params
        sshape = (sample_batch,) + shape

        def ddim(p, key):
            return sampling.ddim_sample(functional.bind(model.apply, p), sched, key, sshape, num_steps=sample_steps)

        t0 = time.perf_counter()
        compiled = jax.jit(ddim).lower(params, jax.random.PRNGKey(0)).compile()
        self.sample_compile_s = time.perf_counter() - t0
        self.sample = lambda: compiled(params, jax.random.PRNGKey(1))
        self.block = jax.block_until_ready
        x, t = np.zeros(sshape, np.float32), np.full((sample_batch,), 500, np.int32)
        self.train_gflop_per_image = common.cost_flops(self.step) / batch / 1e9
        forward = jax.jit(model.apply).lower(params, x, t).compile()
        self.ddim_gflop_per_image = DDIM_STEPS * common.cost_flops(forward) / sample_batch / 1e9
        self.matmul_peak = common.matmul_peak()["flops_per_s"]
        for _ in range(2):  # warm-up, untimed
            self._one_step()
        self.block(self.sample())

    def info(self):
        import jax

        return dict(params=self.params_count, compile_train_s=self.train_compile_s,
                    compile_sample_s=self.sample_compile_s, jax=jax.__version__,
                    train_gflop_per_image=self.train_gflop_per_image, ddim_gflop_per_image=self.ddim_gflop_per_image,
                    matmul_peak_gflop_s=self.matmul_peak / 1e9, xla_flags=os.environ.get("XLA_FLAGS", ""),
                    threads=f"XLA:CPU intra-op pool = {common.cores()} cores")

    def _one_step(self):
        self.state, metrics = self.step(self.state, self.batch)
        self.block(metrics)

    def train(self, n):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            self._one_step()
            times.append(time.perf_counter() - t0)
        return times

    def sample_once(self):
        t0 = time.perf_counter()
        self.block(self.sample())
        return time.perf_counter() - t0


class TorchSide:
    def __init__(self, name, batch, sample_batch, sample_steps, threads, channels_last=False):
        import numpy as np
        import torch
        from diffusers import DDIMScheduler, UNet2DModel

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        torch.manual_seed(0)
        self.torch = torch
        config = common.load_config(name)
        shape = common.MODELS[name]["image_shape"]
        self.unet = UNet2DModel(**diffusers_config(config, shape))
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.unet = self.unet.to(memory_format=self.memory_format)
        self.params = [p for p in self.unet.parameters()]
        self.params_count = sum(p.numel() for p in self.params)
        self.opt = torch.optim.Adam(self.params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8)
        self.ema = [p.detach().clone() for p in self.params]
        self.ema_decay = float(config.train.ema_decay)
        betas = np.linspace(1e-4, 0.02, T_TRAIN, dtype=np.float64)
        abar = np.cumprod(1.0 - betas)
        self.sqrt_abar = torch.tensor(np.sqrt(abar), dtype=torch.float32)
        self.sqrt_1m_abar = torch.tensor(np.sqrt(1.0 - abar), dtype=torch.float32)
        H, W, C = shape
        rs = np.random.RandomState(0)
        self.x0 = torch.tensor(rs.uniform(-1, 1, (batch, C, H, W)).astype(np.float32)).contiguous(
            memory_format=self.memory_format)
        self.scheduler = DDIMScheduler(num_train_timesteps=T_TRAIN, beta_start=1e-4, beta_end=0.02,
                                       beta_schedule="linear", clip_sample=True, set_alpha_to_one=True,
                                       steps_offset=0, timestep_spacing="leading", prediction_type="epsilon")
        self.sample_shape = (sample_batch, C, H, W)
        self.sample_steps = sample_steps
        self.threads = threads
        t0 = time.perf_counter()
        for _ in range(2):  # warm-up, untimed
            self._one_step()
        self.warmup_train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.sample_once()
        self.warmup_sample_s = time.perf_counter() - t0

    def info(self):
        import diffusers

        return dict(params=self.params_count, warmup_train_s=self.warmup_train_s,
                    warmup_sample_s=self.warmup_sample_s, torch=self.torch.__version__, diffusers=diffusers.__version__,
                    threads=f"torch.set_num_threads({self.torch.get_num_threads()}), "
                            f"interop {self.torch.get_num_interop_threads()}",
                    memory_format=str(self.memory_format))

    def _one_step(self):
        torch = self.torch
        self.unet.train()
        x0 = self.x0
        B = x0.shape[0]
        t = torch.randint(0, T_TRAIN, (B,))
        noise = torch.randn_like(x0)
        x_t = self.sqrt_abar[t].view(B, 1, 1, 1) * x0 + self.sqrt_1m_abar[t].view(B, 1, 1, 1) * noise
        loss = torch.nn.functional.mse_loss(self.unet(x_t, t).sample, noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, self.params, 1.0 - self.ema_decay)
        return float(loss.detach())

    def train(self, n):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            self._one_step()
            times.append(time.perf_counter() - t0)
        return times

    def sample_once(self):
        torch = self.torch
        self.unet.eval()
        t0 = time.perf_counter()
        with torch.inference_mode():
            g = torch.Generator().manual_seed(1)
            x = torch.randn(self.sample_shape, generator=g).contiguous(memory_format=self.memory_format)
            self.scheduler.set_timesteps(self.sample_steps)
            for t in self.scheduler.timesteps:
                eps = self.unet(x, t).sample
                x = self.scheduler.step(eps, t, x, eta=0.0).prev_sample
        return time.perf_counter() - t0


def worker_main(side: str, spec: dict):
    """Serve commands (JSON lines on stdin) for one side; answers are 'RESULT <json>' lines on stdout."""
    if spec.get("cpus"):  # before jax / torch start their thread pools (XLA sizes its pool by the affinity)
        os.sched_setaffinity(0, spec["cpus"])
    if side == "jax":
        obj = JaxSide(spec["model"], spec["batch"], spec["sample_batch"], spec["sample_steps"], spec["dtype"])
    else:
        obj = TorchSide(spec["model"], spec["batch"], spec["sample_batch"], spec["sample_steps"], spec["threads"],
                        spec["channels_last"])
    print("RESULT " + json.dumps(obj.info()), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "train":
            result = obj.train(cmd["n"])
        elif cmd["op"] == "sample":
            result = obj.sample_once()
        else:
            break
        print("RESULT " + json.dumps(result), flush=True)


class Worker:
    def __init__(self, side, spec, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", side, "--spec", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.info = self._read()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
        raise RuntimeError(f"worker exited (code {self.proc.wait()})")

    def call(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.proc.stdin.write(json.dumps(dict(op="quit")) + "\n")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self.proc.wait()


# ---------------------------------------------------------------- the driver


def compare(name, args):
    spec = common.MODELS[name]
    batch = args_kv(args.batch).get(name, spec["batch"])
    sample_batch = args_kv(args.sample_batch).get(name, SAMPLE_BATCH[name])
    train_steps = args.train_steps or TRAIN_STEPS[name]
    sample_steps = args_kv(args.sample_steps).get(name, SAMPLE_STEPS[name])
    reps = args.reps
    if args.quick:
        small = name != "cifar10"
        batch, sample_batch = min(batch, 8 if small else 4), min(sample_batch, 8 if small else 2)
        train_steps, sample_steps, reps = 2, 2, 2
    cpus = [int(c) for c in args.cpus.split(",")] if args.cpus else None
    threads = args.threads or (len(cpus) if cpus else common.cores())
    common_spec = dict(model=name, batch=batch, sample_batch=sample_batch, sample_steps=sample_steps, cpus=cpus)
    env = dict(os.environ)
    if args.xla_flags:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    print(f"--- {name}: starting workers (compiling / warming up)", file=sys.stderr)
    monitor = common.LoadMonitor()
    jax_w = Worker("jax", dict(common_spec, dtype=args.dtype), env=env)
    torch_w = Worker("torch", dict(common_spec, threads=threads, channels_last=args.channels_last))
    ours, theirs = jax_w.info["params"], torch_w.info["params"]
    rel = abs(ours - theirs) / ours
    print(f"[{name}] params: ours {ours:,}, diffusers {theirs:,} ({100 * rel:.3f}% apart)", file=sys.stderr)
    if rel > 0.02:
        raise SystemExit(f"parameter counts differ by {100 * rel:.1f}% (> 2%): the architectures do not match")
    times = {"jax": dict(train=[], sample=[]), "torch": dict(train=[], sample=[])}
    per_rep = []
    try:
        for r in range(reps):
            order = [("jax", jax_w), ("torch", torch_w)]
            if r % 2:
                order.reverse()
            rep = {}
            for side, w in order:
                tr = w.call(op="train", n=train_steps)
                times[side]["train"] += tr
                rep[side + "_train"] = statistics.median(tr)
            for side, w in order:
                s = w.call(op="sample")
                times[side]["sample"].append(s)
                rep[side + "_sample"] = s
            per_rep.append(rep)
            print(f"[{name}] rep {r}: train ratio {batch / rep['jax_train'] / (batch / rep['torch_train']):.2f}, "
                  f"DDIM ratio {rep['torch_sample'] / rep['jax_sample']:.2f}", file=sys.stderr)
    finally:
        jax_w.close()
        torch_w.close()
    load = monitor.stop()
    print(f"[{name}] other processes used {load['other_cores']:.2f} cores on average", file=sys.stderr)
    res = dict(model=name, load=load, cpus=cpus, threads=threads, batch=batch, sample_batch=sample_batch,
               train_steps_per_rep=train_steps,
               sample_steps_timed=sample_steps, reps=reps, dtype=args.dtype, params_ours=ours, params_theirs=theirs,
               jax=jax_w.info, torch=torch_w.info, times=times, per_rep=per_rep,
               diffusers_config=diffusers_config(common.load_config(name), spec["image_shape"]))
    for side in ("jax", "torch"):
        tr = statistics.median(times[side]["train"])
        sm = statistics.median(times[side]["sample"]) * DDIM_STEPS / sample_steps
        res[side + "_train_img_s"] = batch / tr
        res[side + "_train_ms"] = tr * 1e3
        res[side + "_ddim_img_s"] = sample_batch / sm
        res[side + "_ddim_s"] = sm
    res["train_ratio"] = res["jax_train_img_s"] / res["torch_train_img_s"]
    res["ddim_ratio"] = res["jax_ddim_img_s"] / res["torch_ddim_img_s"]
    res["train_ratio_per_rep"] = [p["torch_train"] / p["jax_train"] for p in per_rep]
    res["ddim_ratio_per_rep"] = [p["torch_sample"] / p["jax_sample"] for p in per_rep]
    return res


def args_kv(items):
    out = {}
    for item in items or ():
        for part in item.split(","):
            k, _, v = part.partition("=")
            if k not in common.MODELS or not v:
                raise SystemExit(f"expected NAME=VALUE with NAME in {sorted(common.MODELS)}, got {part!r}")
            out[k] = int(v)
    return out


def render(results):
    headers = ["model", "other load", "params ours / diffusers", "train batch", "train img/s ours", "theirs", "ratio",
               "DDIM-50 batch", "DDIM img/s ours", "theirs", "ratio", "DDIM timing"]
    rows = []
    for r in results:
        k = r["sample_steps_timed"]
        timing = "full" if k == DDIM_STEPS else f"{k} steps x {DDIM_STEPS / k:g}"
        rows.append([
            r["model"], f"{r['load']['other_cores']:.2f} cores", f"{r['params_ours']:,} / {r['params_theirs']:,}",
            str(r["batch"]),
            f"{r['jax_train_img_s']:.1f}", f"{r['torch_train_img_s']:.1f}", f"{r['train_ratio']:.2f}x",
            str(r["sample_batch"]), f"{r['jax_ddim_img_s']:.2f}", f"{r['torch_ddim_img_s']:.2f}",
            f"{r['ddim_ratio']:.2f}x", timing,
        ])
    return common.table(headers, rows)


def render_roofline(results, train_target=TRAIN_TARGET, ddim_target=DDIM_TARGET):
    """What the issue's targets ask of the hardware: the target images/s (a multiple of diffusers') times the FLOPs
    an image costs (XLA's cost analysis of our step / forward: direct convolution, no Winograd), against the dense
    matmul FLOP/s measured in our worker."""
    headers = ["model", "GFLOP / train image", f"{train_target:g}x theirs img/s", "needs GFLOP/s",
               "GFLOP / DDIM-50 image", f"{ddim_target:g}x theirs img/s", "needs GFLOP/s", "matmul peak GFLOP/s"]
    rows = []
    for r in results:
        j = r["jax"]
        train_rate, ddim_rate = train_target * r["torch_train_img_s"], ddim_target * r["torch_ddim_img_s"]
        rows.append([r["model"], f"{j['train_gflop_per_image']:.2f}", f"{train_rate:.1f}",
                     f"{train_rate * j['train_gflop_per_image']:.0f}", f"{j['ddim_gflop_per_image']:.1f}",
                     f"{ddim_rate:.2f}", f"{ddim_rate * j['ddim_gflop_per_image']:.0f}",
                     f"{j['matmul_peak_gflop_s']:.0f}"])
    return common.table(headers, rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="digits,mnist,cifar10")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny batches, 2 reps of 2 steps")
    p.add_argument("--reps", type=int, default=3, help="alternating repetitions (default 3)")
    p.add_argument("--batch", action="append", help="training batch per model, e.g. cifar10=32")
    p.add_argument("--sample-batch", action="append", help="DDIM batch per model, e.g. mnist=32")
    p.add_argument("--sample-steps", action="append",
                   help="sampler steps timed per repetition, scaled to 50 (default digits=50,mnist=50,cifar10=10)")
    p.add_argument("--train-steps", type=int, default=None, help="timed training steps per repetition")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores XLA uses)")
    p.add_argument("--cpus", default=None,
                   help="pin both workers to these CPU ids, e.g. '1' (XLA then uses that many threads, and torch too)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="our U-Net's compute dtype")
    p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for the JAX worker")
    p.add_argument("--channels-last", action="store_true", help="torch side in channels_last memory format")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.worker, json.loads(args.spec))
        return
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for n in names:
        if n not in common.MODELS:
            raise SystemExit(f"unknown model {n!r}; choose from {', '.join(common.MODELS)}")
    info = dict(cpu=common.cpu_model(), cores=common.cores(), load_avg_start=list(os.getloadavg()))
    monitor = common.LoadMonitor()
    results = [compare(n, args) for n in names]
    info["load"] = monitor.stop()
    info["load_avg_end"] = info["load"]["load_avg_end"]
    if results:
        info.update(jax=results[0]["jax"]["jax"], torch=results[0]["torch"]["torch"],
                    diffusers=results[0]["torch"]["diffusers"], jax_threads=results[0]["jax"]["threads"],
                    torch_threads=results[0]["torch"]["threads"])
    text = render(results)
    print(f"\n{info['cpu']}, {info['cores']} cores; jax {info.get('jax')} ({info.get('jax_threads')}); "
          f"torch {info.get('torch')} ({info.get('torch_threads')}), diffusers {info.get('diffusers')}; "
          f"our dtype {args.dtype}" + (f", XLA_FLAGS += {args.xla_flags!r}" if args.xla_flags else "")
          + (f", pinned to CPUs {args.cpus}" if args.cpus else "")
          + f"; other processes used {info['load']['other_cores']:.2f} cores on average "
          f"(load avg start {info['load_avg_start'][0]:.2f} end {info['load_avg_end'][0]:.2f})"
          + (" (--quick: smoke run, not meaningful)" if args.quick else ""))
    print(text)
    roofline = render_roofline(results)
    print("\nWhat the targets need (our FLOPs per image x the target rate) against the measured matmul peak:")
    print(roofline)
    text += "\n\n" + roofline
    for r in results:
        print(f"{r['model']}: train ratio per rep {', '.join(f'{x:.2f}' for x in r['train_ratio_per_rep'])}; "
              f"DDIM ratio per rep {', '.join(f'{x:.2f}' for x in r['ddim_ratio_per_rep'])}; "
              f"compile ours train {r['jax']['compile_train_s']:.1f}s, DDIM {r['jax']['compile_sample_s']:.1f}s; "
              f"theirs warm-up train {r['torch']['warmup_train_s']:.1f}s, DDIM {r['torch']['warmup_sample_s']:.1f}s")
    if args.out:
        common.write_json(args.out, dict(machine=info, args=vars(args), results=results, table=text))


if __name__ == "__main__":
    main()
