"""The command line: python -m ddpm_jax {train,sample,evaluate,train-classifier,plots} ... (thin: it parses and
calls library functions).

    python -m ddpm_jax train --config experiments/digits.py --workdir runs/digits [--config.train.batch_size=64]
    python -m ddpm_jax sample --workdir runs/digits --num 64 --sampler ddim --steps 50 --eta 0 --out grid.png
    python -m ddpm_jax train-classifier --dataset digits --workdir runs/classifier_digits
    python -m ddpm_jax evaluate --workdir runs/digits --num-samples 10000 --sampler ddim --steps 100 \
        --feature-net classifier:runs/classifier_digits [--bpd-examples 1000] [--split test]
    python -m ddpm_jax plots --out-dir pictures [--workdir runs/digits]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _train(args, overrides):
    from ddpm_jax import configs, parallel, train

    if args.distributed or args.coordinator_address:
        parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id,
                                        cpu_collectives=args.cpu_collectives)

    config = configs.load_config(args.config, overrides)
    try:
        result = train.train_and_evaluate(config, args.workdir)
    except train.Preempted as e:
        print(e, file=sys.stderr)
        return 143
    m = result["metrics"]
    print(f"done: step {result['step']}, loss {m.get('loss', float('nan')):.4f}; "
          f"samples in {os.path.join(args.workdir, 'samples')}")
    return 0


def _sample(args, overrides):
    import jax
    import numpy as np
    from tqdm.auto import tqdm

    from ddpm_jax import configs, runs, viz

    run = runs.load_run(args.workdir, ema=not args.raw_params, overrides=overrides)
    step, image_shape = run.step, run.image_shape()
    labels = None
    if args.labels is not None:
        labels = np.resize(np.array([int(v) for v in args.labels.split(",")], np.int32), args.num)
    bar = tqdm(total=args.num, unit="img", desc=f"sampling (step {step})")

    def progress(done, total):
        bar.update(done - bar.n)

    start = time.perf_counter()
    images = configs.sample(
        run.config, run.params, jax.random.PRNGKey(args.seed), args.num, image_shape, sampler=args.sampler,
        num_steps=args.steps, spacing=args.spacing, eta=args.eta, labels=labels, guidance_scale=args.guidance_scale, progress=progress,
    )
    bar.close()
    seconds = time.perf_counter() - start
    out = args.out or os.path.join(args.workdir, f"samples_step{step}.png")
    viz.save_grid(images, out, upscale=max(1, 128 // image_shape[0]))
    npz = os.path.splitext(out)[0] + ".npz"
    np.savez(npz, images=images, labels=labels if labels is not None else np.zeros((0,), np.int32))
    print(f"{args.num} samples in {seconds:.1f}s ({args.num / seconds:.1f} img/s, compile included): {out}, {npz}")
    return 0


def _evaluate(args, overrides):
    from ddpm_jax import evaluate

    if args.feature_net is None:
        print("no --feature-net given: computing bits/dim only (no FID/IS/KID/precision-recall). Pass "
              "--feature-net classifier:DIR or inception:WEIGHTS.npz for the sample metrics.", file=sys.stderr)
    report = evaluate.evaluate(
        args.workdir, num_samples=args.num_samples, sampler=args.sampler, num_steps=args.steps,
        spacing=args.spacing, eta=args.eta,
        feature_net=args.feature_net, bpd_examples=args.bpd_examples, split=args.split, ref_split=args.ref_split,
        stats_dir=args.stats_dir, seed=args.seed, ema=not args.raw_params, bpd_per_device_batch=args.bpd_batch,
        config_overrides=overrides,
    )
    print(evaluate.format_table(report))
    print(f"written: {report['path']}")
    return 0


def _train_classifier(args, overrides):
    from ddpm_jax import classifier

    if overrides:
        raise ValueError(f"train-classifier takes no --config overrides, got {' '.join(overrides)}")
    info = classifier.train_classifier(
        args.dataset, args.workdir, data_dir=args.data_dir, epochs=args.epochs, num_steps=args.steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed, overwrite=args.overwrite,
        progress=True,
    )
    print(f"test accuracy {100 * info['test_accuracy']:.2f}% on {info['test_examples']} {info['test_split']} "
          f"images ({info['num_steps']} steps in {info['seconds']:.1f}s); feature network {info['name']!r} "
          f"saved in {args.workdir}: evaluate with --feature-net classifier:{args.workdir}")
    return 0


def _plots(args, overrides):
    import jax

    from ddpm_jax import data, runs, sampling, viz

    out = args.out_dir
    written = [viz.plot_schedules(os.path.join(out, "schedules.png"))]
    run = runs.load_run(args.workdir, overrides=overrides) if args.workdir else None
    source, data_dir = (run.config.data.source, run.config.data.get("data_dir", None)) if run else ("digits", None)
    a = data.load_arrays(source, "train", data_dir=data_dir)
    x0 = data.to_float(a.images[:1], a.max_value)[0]
    written.append(viz.save_forward_process_strip(x0, os.path.join(out, "forward_process.png"),
                                                  schedule_names=("linear", "quadratic", "cosine", "sigmoid")))
    if run is not None:
        _, trajectory = sampling.ddim_sample(
            run.model_fn, run.sched, jax.random.PRNGKey(args.seed), (8,) + x0.shape,
            num_steps=run.config.sample.num_steps, prediction=run.config.diffusion.prediction, trajectory_steps=10)
        written.append(viz.reverse_process_strip(trajectory, os.path.join(out, "reverse_process.png")))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


SAMPLER_HELP = ("ancestral (all T steps), ddim, euler, heun, dpm++2m, dpm++3m, dpm++2m-sde, unipc; default: the "
                "config's")


def _sampler_arguments(p, default_steps):
    """--sampler, --steps, --spacing, --eta (names are checked by the library, with the accepted ones listed)."""
    p.add_argument("--sampler", default=None, help=SAMPLER_HELP)
    p.add_argument("--steps", type=int, default=default_steps,
                   help="sampler steps (default: " + ("the config's for its sampler, else the sampler's own)"
                                                      if default_steps is None else f"{default_steps})"))
    p.add_argument("--spacing", default=None, help="timesteps visited: linspace, leading, trailing, karras "
                   "(default: the sampler's: leading for ddim, karras for euler/heun, linspace for the rest)")
    p.add_argument("--eta", type=float, default=None, help="DDIM's eta (default: the config's)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddpm_jax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (or resume) a run; --config.a.b=value overrides config fields")
    p.add_argument("--config", required=True, help="experiment file defining get_config()")
    p.add_argument("--workdir", required=True, help="run directory: checkpoints, samples, metrics")
    g = p.add_argument_group("several processes (jax.distributed)")
    g.add_argument("--distributed", action="store_true", help="start jax.distributed, detecting the cluster "
                   "(TPU pod slice, SLURM, Open MPI)")
    g.add_argument("--coordinator-address", default=None, help="host:port of process 0 (with the next two)")
    g.add_argument("--num-processes", type=int, default=None)
    g.add_argument("--process-id", type=int, default=None)
    g.add_argument("--cpu-collectives", default=None, help="'gloo' for CPU devices across processes")

    p = sub.add_parser("sample", help="sample from a run's latest checkpoint (EMA params)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--num", type=int, default=64)
    _sampler_arguments(p, default_steps=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels", default=None, help="class labels, comma-separated, repeated to --num")
    p.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--raw-params", action="store_true", help="use the raw params instead of the EMA")
    p.add_argument("--out", default=None, help="grid PNG (default: WORKDIR/samples_step<N>.png); .npz beside it")

    p = sub.add_parser(
        "evaluate",
        help="FID/IS/KID/precision-recall of EMA samples and bits/dim over a split; writes WORKDIR/eval_<step>.json",
        description="Sample metrics need --feature-net; without it only bits/dim is computed (with a message). "
                    "Reference statistics are cached in --stats-dir (default WORKDIR/../fid_stats), per dataset "
                    "split and feature network.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--num-samples", type=int, default=10000, help="samples for FID/IS/KID/PR (0: none)")
    _sampler_arguments(p, default_steps=100)
    p.add_argument("--feature-net", default=None,
                   help="classifier:DIR (from train-classifier) or inception:WEIGHTS.npz; none: bits/dim only")
    p.add_argument("--bpd-examples", type=int, default=None,
                   help="first N images of --split for bits/dim (default: all; 0: skip bits/dim)")
    p.add_argument("--split", default="test", help="split for bits/dim and (by default) the reference statistics")
    p.add_argument("--ref-split", default=None, help="reference split for FID/KID/PR (default: --split)")
    p.add_argument("--stats-dir", default=None, help="reference statistics cache (default: WORKDIR/../fid_stats)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bpd-batch", type=int, default=64, help="bits/dim images per device per call")
    p.add_argument("--raw-params", action="store_true", help="use the raw params instead of the EMA")

    p = sub.add_parser("train-classifier",
                       help="train a small CNN classifier on a dataset (feature network for evaluate)")
    p.add_argument("--dataset", required=True, help="data source: digits, npz:/path.npz, or a tfds name (mnist, ...)")
    p.add_argument("--workdir", required=True, help="where the classifier is saved (checkpoints/, classifier.json)")
    p.add_argument("--data-dir", default=None, help="tfds data_dir")
    p.add_argument("--epochs", type=int, default=None, help="default: max(3 epochs, 1000 steps)")
    p.add_argument("--steps", type=int, default=None, help="training steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a classifier already in --workdir")

    p = sub.add_parser("plots", help="the tutorial views: schedules, the forward process, a reverse trajectory")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--workdir", default=None, help="a run: its data for the forward strip, its EMA model for "
                   "a DDIM reverse-process strip (default: the digits, no reverse strip)")
    p.add_argument("--seed", type=int, default=0)

    args, rest = parser.parse_known_args(argv)
    overrides = [a for a in rest if a.startswith("--config.")]
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        handlers = {"train": _train, "sample": _sample, "evaluate": _evaluate, "train-classifier": _train_classifier,
                    "plots": _plots}
        return handlers[args.command](args, overrides)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
