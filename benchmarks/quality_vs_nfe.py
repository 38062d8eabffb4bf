"""Sample quality against network evaluations (NFE) for every sampler, on a trained run.

    python benchmarks/quality_vs_nfe.py --workdir runs/digits --feature-net classifier:runs/classifier_digits \
        --num-samples 1000 --out benchmarks/results/quality_vs_nfe_digits.json --plot docs/quality_vs_nfe_digits.png

For each sampler of `sampling.SAMPLERS` and each NFE of --nfe (Heun spends 2N - 1 evaluations on N steps, so it
runs at the odd NFEs nearest below), --num-samples EMA samples with the same seed, then the project's FID, IS,
KID and precision/recall against the run's test split (`sample_quality`, the reference statistics cached as
`evaluate` does), images/s of the sampling (compile excluded: each setting is compiled on a small batch first),
and ancestral sampling over all T steps as the reference. Prints the table, the smallest NFE at which each
sampler's FID is within 10% of ancestral's, and the same metrics for --num-samples real training images
(a fixed random subset) against the test split: the score of real data, the floor a model can reach.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

DEFAULT_NFE = (5, 10, 15, 20, 35, 50, 100)


def steps_for_nfe(sampler: str, nfe: int) -> int:
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--feature-net", required=True, help="classifier:DIR or inception:WEIGHTS.npz")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--nfe", default=",".join(map(str, DEFAULT_NFE)))
    parser.add_argument("--samplers", default=None, help="comma-separated (default: all but ancestral)")
    parser.add_argument("--no-ancestral", action="store_true", help="skip the ancestral (all T steps) reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON results")
    parser.add_argument("--plot", default=None, help="PNG of FID and IS against NFE")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 samples, NFE 5 and 10")
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    from ddpm_jax import configs, data, reference_stats, runs, sample_quality, sampling, solvers

    monitor = common.LoadMonitor()
    if args.quick:
        args.num_samples, args.nfe = 64, "5,10"
    run = runs.load_run(args.workdir)
    config = run.config
    network = sample_quality.resolve_feature_network(args.feature_net)
    source, data_dir = config.data.source, config.data.get("data_dir", None)
    test = data.load_arrays(source, "test", data_dir=data_dir)
    stats, real_features, _ = reference_stats.reference_features(
        network, source, "test", args.num_samples, reference_stats.default_stats_dir(args.workdir),
        data_dir=data_dir, arrays=test)
    image_shape = run.image_shape()
    rng = jax.random.PRNGKey(args.seed)
    samplers = args.samplers.split(",") if args.samplers else [s for s in sampling.SAMPLERS if s != "ancestral"]
    settings = [(s, steps_for_nfe(s, n)) for s in samplers for n in map(int, args.nfe.split(","))]
    if not args.no_ancestral:
        settings.append(("ancestral", None))

    rows, results = [], []
    for sampler, steps in settings:
        options = dict(num_steps=steps) if steps else {}
        draw = lambda n: configs.sample(config, run.params, rng, n, image_shape, sampler=sampler, **options)
        draw(jax.local_device_count())  # compile (one sample per device), outside the timing
        start = time.perf_counter()
        images = draw(args.num_samples)
        seconds = time.perf_counter() - start
        fake = sample_quality.sample_features(network, images, test.max_value)
        values, _ = sample_quality.sample_metrics(stats, real_features, fake)
        nfe = run.sched.num_timesteps if sampler == "ancestral" else solvers.nfe(sampler, steps) \
            if sampler in solvers.SOLVERS else steps
        result = dict(sampler=sampler, num_steps=steps, nfe=nfe, images_per_s=args.num_samples / seconds, **values)
        results.append(result)
        print(f"{sampler:>12} NFE {nfe:>4}: FID {values['fid']:.3f} IS {values['is']:.3f} "
              f"({result['images_per_s']:.1f} img/s)", file=sys.stderr, flush=True)
        rows.append([sampler, nfe, common.fmt(values["fid"], ".3f"), common.fmt(values["is"], ".3f"),
                     common.fmt(values["precision"], ".3f"), common.fmt(values["recall"], ".3f"),
                     common.fmt(result["images_per_s"], ".1f")])

    train = data.load_arrays(source, "train", data_dir=data_dir)
    subset = np.random.default_rng(1).permutation(train.images.shape[0])[:args.num_samples]
    real_fake = sample_quality.sample_features(network, data.to_float(train.images[subset], train.max_value),
                                               train.max_value)
    real_values, _ = sample_quality.sample_metrics(stats, real_features, real_fake)
    rows.append([f"real training images (n={len(subset)})", "-", common.fmt(real_values["fid"], ".3f"),
                 common.fmt(real_values["is"], ".3f"), common.fmt(real_values["precision"], ".3f"),
                 common.fmt(real_values["recall"], ".3f"), "-"])
    text = common.table(["sampler", "NFE", "FID", "IS", "precision", "recall", "img/s"], rows)
    reference = next((r["fid"] for r in results if r["sampler"] == "ancestral"), None)
    if reference is not None:
        lines = []
        for sampler in samplers:
            within = [r["nfe"] for r in results if r["sampler"] == sampler and r["fid"] <= 1.1 * reference]
            lines.append(f"- {sampler}: {min(within) if within else 'none of the NFEs run'}")
        text += (f"\n\nSmallest NFE with FID within 10% of ancestral-{run.sched.num_timesteps}'s "
                 f"({reference:.3f}):\n" + "\n".join(lines))
    text = (f"{args.num_samples} samples of {args.workdir} (step {run.step}), feature network {network.name}; "
            f"reference: the test split.\n\n" + text)
    if args.plot:
        plot(results, samplers, reference, args.plot, run.sched.num_timesteps)
    common.report(text, monitor.stop(), args.out, results=results, real=real_values,
                  machine=common.machine_info(), workdir=args.workdir, step=run.step, feature_network=network.name)
    return 0


def plot(results, samplers, reference, path, num_timesteps):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for sampler in samplers:
        rs = [r for r in results if r["sampler"] == sampler]
        for ax, key in zip(axes, ("fid", "is")):
            ax.plot([r["nfe"] for r in rs], [r[key] for r in rs], marker="o", label=sampler)
    ancestral = next((r for r in results if r["sampler"] == "ancestral"), None)
    for ax, key, name in zip(axes, ("fid", "is"), ("FID", "IS")):
        if ancestral:
            ax.axhline(ancestral[key], color="k", ls="--", lw=1, label=f"ancestral, NFE {num_timesteps}")
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
