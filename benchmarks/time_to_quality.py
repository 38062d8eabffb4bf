"""Sample quality against wall-clock training time: a recipe's FID and IS at its checkpoints, real data beside.

    python benchmarks/time_to_quality.py --name digits --config experiments/digits.py \
        --feature-net classifier:runs/classifier_digits --every 200 --out benchmarks/results/ttq_digits.json
    python benchmarks/time_to_quality.py --name mnist_fast --config experiments/mnist_fast.py \
        --feature-net classifier:runs/classifier_mnist --every 500 -- --config.data.source=npz:/data/mnist.npz
    python benchmarks/time_to_quality.py --plot docs/time_to_quality.png benchmarks/results/ttq_*.json

Training runs as the README runs it (`python -m ddpm_jax train`, a fresh process, compiles included) with a
checkpoint every --every steps; the clock of a checkpoint is the time from the process's start to the logged
time of that step. Then each checkpoint's EMA params draw --num-samples samples with the config's own sampler
(the sampling is timed apart) and the project's classifier metrics score them. The protocol ("same n, same
feature net"):

* mnist-like sources (a test split of thousands): FID and IS of n samples against the test split; real data:
  n training images (a fixed random subset) against the same statistics, and the IS of n test images.
* digits (297 test images): the reference statistics are the training split's (1500), the real data are the
  297 held-out test images, and the samples are scored in disjoint subsets of 297, FID and IS averaged, so
  that both sides have the same n.
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


def train(config: str, workdir: str, every: int, overrides: list[str]) -> dict:
    """Run the training command; {step: seconds since the process started} at each checkpoint."""
    cmd = [sys.executable, "-m", "ddpm_jax", "train", "--config", config, "--workdir", workdir,
           f"--config.train.checkpoint_every={every}", f"--config.train.log_every={every}",
           "--config.train.keep_checkpoints=1000", *overrides]
    start = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=common.REPO)
    total = time.time() - start
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = {r["step"]: r["time"] - start for r in map(json.loads, f)}
    return dict(clock=logged, total_seconds=total)


def score(network, images, stats, real_features, max_value: int, subset: int | None) -> dict:
    """FID, IS, precision, recall of images; averaged over disjoint subsets of `subset` images if given."""
    import numpy as np

    from ddpm_jax import sample_quality

    n = len(images) if subset is None else subset
    parts = [images[i:i + n] for i in range(0, len(images) - n + 1, n)]
    values = [sample_quality.sample_metrics(stats, real_features,
                                            sample_quality.sample_features(network, p, max_value))[0]
              for p in parts]
    return {k: float(np.mean([v[k] for v in values])) for k in ("fid", "is", "precision", "recall")}


def evaluate(workdir: str, feature_net: str, num_samples: int, seed: int) -> dict:
    import jax
    import numpy as np

    from ddpm_jax import checkpoint, data, reference_stats, runs, sample_quality

    run = runs.load_run(workdir)
    config = run.config
    source, data_dir = config.data.source, config.data.get("data_dir", None)
    network = sample_quality.resolve_feature_network(feature_net)
    test = data.load_arrays(source, "test", data_dir=data_dir)
    train_split = data.load_arrays(source, "train", data_dir=data_dir)
    small = test.images.shape[0] < num_samples
    ref_split, ref = ("train", train_split) if small else ("test", test)
    stats, real_features, _ = reference_stats.reference_features(
        network, source, ref_split, num_samples, reference_stats.default_stats_dir(workdir), data_dir=data_dir,
        arrays=ref)
    subset = test.images.shape[0] if small else None
    if small:  # the held-out images themselves
        real = score(network, data.to_float(test.images, test.max_value), stats, real_features, test.max_value, None)
    else:
        pick = np.random.default_rng(1).permutation(train_split.images.shape[0])[:num_samples]
        real = score(network, data.to_float(train_split.images[pick], 255), stats, real_features, 255, None)
        test_images = data.to_float(test.images[:num_samples], test.max_value)
        real["is"] = score(network, test_images, stats, real_features, test.max_value, None)["is"]
    rows = []
    ckpt_dir = os.path.join(workdir, "checkpoints")
    for step in sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()):
        params, _ = checkpoint.restore_params(workdir, step=step)
        start = time.perf_counter()
        images = runs.sample(config, params, jax.random.PRNGKey(seed), num_samples, run.image_shape())
        sampling_seconds = time.perf_counter() - start
        rows.append(dict(step=step, sampling_seconds=sampling_seconds,
                         **score(network, images, stats, real_features, test.max_value, subset)))
        print(f"step {step}: FID {rows[-1]['fid']:.3f} IS {rows[-1]['is']:.3f}", file=sys.stderr, flush=True)
    return dict(rows=rows, real=real, reference=f"{source} {ref_split} split", scored_in_subsets_of=subset,
                sampler=runs.sampler_options(config), feature_network=network.name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", help="the recipe's name in tables and plots")
    parser.add_argument("--config", help="experiment file")
    parser.add_argument("--workdir", default=None, help="default: /tmp/ttq/<name> (replaced)")
    parser.add_argument("--feature-net")
    parser.add_argument("--every", type=int, default=200, help="checkpoint (and score) every N steps")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None, help="with results files as arguments: draw them (no training)")
    parser.add_argument("overrides", nargs="*", help="after --: --config.a.b=value overrides of the recipe")
    args = parser.parse_args(argv)
    if args.plot:
        plot([json.load(open(p)) for p in args.overrides], args.plot)
        return 0
    import shutil

    monitor = common.LoadMonitor()
    workdir = args.workdir or f"/tmp/ttq/{args.name}"
    shutil.rmtree(workdir, ignore_errors=True)
    timing = train(args.config, workdir, args.every, args.overrides)
    result = evaluate(workdir, args.feature_net, args.num_samples, args.seed)
    for row in result["rows"]:
        row["train_seconds"] = timing["clock"].get(row["step"])
    load = monitor.stop()
    real = result["real"]
    rows = [[r["step"], common.fmt(r["train_seconds"], ".0f"), common.fmt(r["fid"], ".2f"),
             common.fmt(r["is"], ".3f"), common.fmt(r["is"] / real["is"] * 100, ".1f"),
             common.fmt(r["fid"] / real["fid"], ".2f"), common.fmt(r["sampling_seconds"], ".1f")]
            for r in result["rows"]]
    text = (f"{args.name}: {args.config} {' '.join(args.overrides)}; sampler {result['sampler']}; "
            f"{args.num_samples} samples; reference {result['reference']}; feature network "
            f"{result['feature_network']}; real: FID {real['fid']:.2f}, IS {real['is']:.3f}; training process "
            f"{timing['total_seconds']:.0f} s in all\n\n" + common.table(
                ["step", "train s", "FID", "IS", "IS % of real", "FID / real", "sampling s"], rows))
    common.report(text, load, args.out, name=args.name, config=args.config, overrides=args.overrides,
                  total_train_seconds=timing["total_seconds"], machine=common.machine_info(), **result)
    return 0


def plot(results: list[dict], path: str) -> None:
    fig, axes = common.fid_is_figure()
    for r in results:
        t = [row["train_seconds"] / 60 for row in r["rows"]]
        for ax, key in zip(axes, ("fid", "is")):
            line, = ax.plot(t, [row[key] for row in r["rows"]], marker="o", label=r["name"])
            ax.axhline(r["real"][key], color=line.get_color(), ls=":", lw=1)
    for ax, name in zip(axes, ("FID (dotted: real data)", "IS (dotted: real data)")):
        ax.set_xlabel("training wall-clock, minutes (2 CPU cores, compiles included)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    common.save_fid_is_figure(fig, axes, path)


if __name__ == "__main__":
    sys.exit(main())
