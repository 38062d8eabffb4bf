"""What evaluation during training costs (config.train.eval_every): FID/IS time against training time.

    python benchmarks/eval_cost.py --feature-net classifier:runs/classifier_mnist \
        --out benchmarks/results/eval_cost_mnist_fast.json -- --config.data.source=npz:/data/mnist.npz
    python benchmarks/eval_cost.py --quick --config experiments/digits.py \
        --feature-net classifier:runs/classifier_digits

The recipe (default experiments/mnist_fast.py) is trained as the README trains it (`python -m ddpm_jax train`, a
fresh process, compiles included), with --eval-every (default: the recipe's checkpoint_every, 750 steps for
mnist_fast: evaluations at 750 and 1500) and --eval-samples (default: the config's, 500). Before it, the
reference statistics of the test split are computed once, cold (a fresh cache beside the workdir, which the run
then reuses), and timed. Each evaluation logs its own time (eval_seconds in metrics.jsonl: sampling, features,
FID and IS); training time is the training process's wall time less those. The cost is

    (reference statistics + sum of eval_seconds) / training time          (target: <= 10%)

and, unless --no-baseline, the same recipe trained without evaluation gives the end-to-end difference of the two
processes' wall times (noisier on a shared machine: both runs are reported with the load of other processes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

QUICK = ["--config.train.num_steps=20", "--config.train.checkpoint_every=10", "--config.train.log_every=10",
         "--config.train.warmup_steps=2", "--config.sample.num_steps=5"]


def train(config: str, workdir: str, overrides: list[str]) -> dict:
    """Run the training command in a fresh process; its wall seconds and the logged evaluations."""
    start = time.time()
    subprocess.run([sys.executable, "-m", "ddpm_jax", "train", "--config", config, "--workdir", workdir, *overrides],
                   check=True, stdout=subprocess.DEVNULL, cwd=common.REPO)
    seconds = time.time() - start
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        evals = [dict(step=r["step"], fid=r["fid"], is_=r.get("is"), seconds=r["eval_seconds"])
                 for r in map(json.loads, f) if "eval_seconds" in r]
    return dict(seconds=seconds, evals=evals)


def reference_seconds(config, feature_net: str, stats_dir: str) -> float:
    """Cold computation of the test split's reference statistics (as the run's `train_eval.SampleQuality` does)."""
    from ddpm_jax import reference_stats, sample_quality, train_eval

    network = sample_quality.resolve_feature_network(feature_net)
    start = time.perf_counter()
    reference_stats.reference_features(network, config.data.source, train_eval.REFERENCE_SPLIT,
                                       config.train.eval_samples, stats_dir, data_dir=config.data.get("data_dir"),
                                       image_size=config.data.get("image_size"))
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="experiments/mnist_fast.py")
    parser.add_argument("--feature-net", required=True,
                        help="classifier:DIR, inception:WEIGHTS.npz or inception:packaged")
    parser.add_argument("--eval-every", type=int, default=None, help="default: the recipe's checkpoint_every")
    parser.add_argument("--eval-samples", type=int, default=None, help="default: the config's eval_samples")
    parser.add_argument("--workdir", default="/tmp/eval_cost", help="replaced: runs/ and fid_stats/ go there")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run without evaluation")
    parser.add_argument("--quick", action="store_true", help="20 steps, an evaluation every 10: a smoke run")
    parser.add_argument("--out", default=None)
    parser.add_argument("overrides", nargs="*", help="after --: --config.a.b=value overrides of the recipe")
    args = parser.parse_args(argv)
    from ddpm_jax import configs

    overrides = (QUICK if args.quick else []) + list(args.overrides)
    config = configs.load_config(os.path.join(common.REPO, args.config), overrides)
    every = args.eval_every or config.train.checkpoint_every
    samples = args.eval_samples or config.train.eval_samples
    evaluation = [f"--config.train.eval_every={every}", f"--config.train.eval_samples={samples}",
                  f"--config.train.eval_feature_net={args.feature_net}"]
    config = configs.apply_overrides(config, evaluation)
    shutil.rmtree(args.workdir, ignore_errors=True)
    monitor = common.LoadMonitor()
    reference = reference_seconds(config, args.feature_net, os.path.join(args.workdir, "fid_stats"))
    with_eval = train(args.config, os.path.join(args.workdir, "with_eval"), overrides + evaluation)
    baseline = None if args.no_baseline else train(args.config, os.path.join(args.workdir, "baseline"), overrides)
    load = monitor.stop()

    eval_total = sum(e["seconds"] for e in with_eval["evals"])
    train_seconds = with_eval["seconds"] - eval_total
    cost = (reference + eval_total) / train_seconds
    rows = [[e["step"], common.fmt(e["seconds"], ".1f"), common.fmt(e["fid"], ".2f"), common.fmt(e["is_"], ".3f")]
            for e in with_eval["evals"]]
    text = (f"{args.config} {' '.join(overrides)}: eval every {every} steps, {samples} samples, sampler "
            f"{config.sample.sampler}; reference statistics (cold) {reference:.1f} s\n\n"
            + common.table(["step", "eval s", "FID", "IS"], rows)
            + f"\n\ntraining process {with_eval['seconds']:.0f} s, of which evaluation {eval_total:.1f} s: training "
              f"{train_seconds:.0f} s; cost (reference + evaluations) / training = {100 * cost:.1f}% (target <= 10%)")
    result = dict(config=args.config, overrides=overrides, eval_every=every, eval_samples=samples,
                  feature_net=args.feature_net, reference_seconds=reference, evals=with_eval["evals"],
                  process_seconds_with_eval=with_eval["seconds"], eval_seconds=eval_total,
                  train_seconds=train_seconds, cost_fraction=cost, quick=args.quick, machine=common.machine_info())
    if baseline is not None:
        difference = (with_eval["seconds"] - baseline["seconds"]) / baseline["seconds"]
        text += (f"\nwithout evaluation: training process {baseline['seconds']:.0f} s; end to end "
                 f"{100 * difference:+.1f}% with it (reference statistics excluded: computed before both runs)")
        result.update(process_seconds_baseline=baseline["seconds"], end_to_end_fraction=difference)
    common.report(text, load, args.out, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
