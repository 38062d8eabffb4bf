"""Sample quality against network evaluations (NFE) for every sampler, on a trained run.

    python benchmarks/quality_vs_nfe.py --workdir runs/digits --feature-net classifier:runs/classifier_digits \
        --num-samples 1000 --out benchmarks/results/quality_vs_nfe_digits.json --plot docs/quality_vs_nfe_digits.png

For each sampler of `sampling.SAMPLERS` and each NFE of --nfe (Heun spends 2N - 1 evaluations on N steps, so it
runs at the odd NFE at or below; DDIM's "leading" spacing visits one level more where N does not divide T), --num-samples EMA samples with the same seed, then the project's FID, IS,
KID and precision/recall against the run's test split (`sample_quality`, the reference statistics cached as
`evaluate` does), images/s of the sampling (compile excluded: each setting is compiled on a small batch first),
and ancestral sampling over all T steps as the reference. Prints the table, the smallest NFE at which each
sampler's FID is within 10% of ancestral's, and the same metrics for --num-samples real training images
(a fixed random subset) against the test split: the score of real data, the floor a model can reach.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

DEFAULT_NFE = (5, 10, 15, 20, 35, 50, 100)


def steps_for_nfe(sampler: str, nfe: int) -> int:
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def nfe_of(run, sampler: str, steps: int) -> int:
    """Network evaluations of `sampler` in `steps` steps on the run's process: N levels for N steps on a continuous
    one; on a Schedule, the levels its spacing visits (DDIM's "leading" may add one); Heun's 2N - 1."""
    from ddpm_jax import processes, sampling, solvers

    levels = steps if processes.is_process(run.sched) else len(sampling.sampler_timesteps(run.sched, sampler, steps))
    return solvers.nfe(sampler, levels) if sampler in solvers.SOLVERS else levels


class Scorer:
    """The project's FID, IS, KID and precision/recall of `num_samples` samples (seed `seed`) against the test split
    of the run in `workdir` (`sample_quality`; reference statistics cached as `evaluate` does), and the sampling
    images/s with the compile excluded: rounds of at most 256 samples per device, one compiled shape, compiled on a
    first draw of one round."""

    def __init__(self, workdir: str, run, feature_net: str, num_samples: int, seed: int):
        import jax

        from ddpm_jax import data, reference_stats, sample_quality

        self.network = sample_quality.resolve_feature_network(feature_net)
        source, data_dir = run.config.data.source, run.config.data.get("data_dir", None)
        self.test = data.load_arrays(source, "test", data_dir=data_dir)
        self.stats, self.real_features, _ = reference_stats.reference_features(
            self.network, source, "test", num_samples, reference_stats.default_stats_dir(workdir),
            data_dir=data_dir, arrays=self.test)
        self.num_samples, self.rng, self.devices = num_samples, jax.random.PRNGKey(seed), jax.local_device_count()
        self.per_device = min(256, -(-num_samples // self.devices))

    def __call__(self, run, **options) -> dict:
        """dict(images_per_s, fid, is, kid, precision, recall, ...) of `run`'s EMA samples with the sampler
        `options` of `runs.sample` (sampler, num_steps, ...)."""
        from ddpm_jax import runs, sample_quality

        config = copy.deepcopy(run.config)
        config.sample.per_device_batch = self.per_device
        draw = lambda n: runs.sample(config, run.params, self.rng, n, run.image_shape(), **options)  # noqa: E731
        draw(self.per_device * self.devices)  # compile, outside the timing
        start = time.perf_counter()
        images = draw(self.num_samples)
        seconds = time.perf_counter() - start
        fake = sample_quality.sample_features(self.network, images, self.test.max_value)
        values, _ = sample_quality.sample_metrics(self.stats, self.real_features, fake)
        return dict(images_per_s=self.num_samples / seconds, **values)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir")
    parser.add_argument("--feature-net", help="classifier:DIR or inception:WEIGHTS.npz")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--nfe", default=",".join(map(str, DEFAULT_NFE)))
    parser.add_argument("--samplers", default=None, help="comma-separated (default: all but ancestral)")
    parser.add_argument("--no-ancestral", action="store_true", help="skip the ancestral (all T steps) reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON results")
    parser.add_argument("--plot", default=None, help="PNG of FID and IS against NFE")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 samples, NFE 5 and 10")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="only re-render --out/--plot from these results files (with --header)")
    parser.add_argument("--header", default="", help="the merged report's first line")
    args = parser.parse_args(argv)
    if args.merge:
        merge(args.merge, args.header, args.out, args.plot)
        return 0

    import numpy as np

    from ddpm_jax import data, runs, sample_quality, sampling

    monitor = common.LoadMonitor()
    if args.quick:
        args.num_samples, args.nfe = 64, "5,10"
    run = runs.load_run(args.workdir)
    score = Scorer(args.workdir, run, args.feature_net, args.num_samples, args.seed)
    network, stats, real_features = score.network, score.stats, score.real_features
    source, data_dir = run.config.data.source, run.config.data.get("data_dir", None)
    samplers = args.samplers.split(",") if args.samplers else [s for s in sampling.SAMPLERS if s != "ancestral"]
    settings = [] if args.no_ancestral else [("ancestral", None)]
    settings += [(s, steps_for_nfe(s, n)) for s in samplers for n in map(int, args.nfe.split(","))]

    results = []
    for sampler, steps in settings:
        values = score(run, sampler=sampler, **(dict(num_steps=steps) if steps else {}))
        nfe = nfe_of(run, sampler, steps) if steps else run.sched.num_timesteps  # ancestral: all T steps
        result = dict(sampler=sampler, num_steps=steps, nfe=nfe, **values)
        results.append(result)
        print(f"{sampler:>12} NFE {nfe:>4}: FID {values['fid']:.3f} IS {values['is']:.3f} "
              f"({result['images_per_s']:.1f} img/s)", file=sys.stderr, flush=True)
        if args.out:  # partial results survive an interrupted run
            common.write_json(args.out, dict(partial=True, results=results))

    train = data.load_arrays(source, "train", data_dir=data_dir)
    subset = np.random.default_rng(1).permutation(train.images.shape[0])[:args.num_samples]
    real_fake = sample_quality.sample_features(network, data.to_float(train.images[subset], train.max_value),
                                               train.max_value)
    real_values, _ = sample_quality.sample_metrics(stats, real_features, real_fake)
    real_values["num_examples"] = len(subset)
    header = (f"{args.num_samples} samples of {args.workdir} (step {run.step}), feature network {network.name}; "
              "reference: the test split.")
    if args.plot:
        plot(results, args.plot)
    common.report(render(header, results, real_values), monitor.stop(), args.out, results=results, real=real_values,
                  header=header, machine=common.machine_info(), workdir=args.workdir, step=run.step,
                  feature_network=network.name)
    return 0


def render(header: str, results: list[dict], real: dict) -> str:
    """The table, real data's row, and each sampler's smallest NFE within 10% of ancestral's FID."""
    rows = [[r["sampler"], r["nfe"], common.fmt(r["fid"], ".3f"), common.fmt(r["is"], ".3f"),
             common.fmt(r["precision"], ".3f"), common.fmt(r["recall"], ".3f"), common.fmt(r["images_per_s"], ".1f")]
            for r in results]
    rows.append([f"real training images (n={real.get('num_examples', '?')})", "-", common.fmt(real["fid"], ".3f"),
                 common.fmt(real["is"], ".3f"), common.fmt(real["precision"], ".3f"),
                 common.fmt(real["recall"], ".3f"), "-"])
    text = header + "\n\n" + common.table(["sampler", "NFE", "FID", "IS", "precision", "recall", "img/s"], rows)
    ancestral = next((r for r in results if r["sampler"] == "ancestral"), None)
    lines = []
    for sampler in dict.fromkeys(r["sampler"] for r in results if r["sampler"] != "ancestral"):
        own = [r for r in results if r["sampler"] == sampler]
        best = min(r["fid"] for r in own)
        near_best = min(r["nfe"] for r in own if r["fid"] <= 1.1 * best)
        line = f"- {sampler}: within 10% of its own best FID ({best:.3f}) from NFE {near_best}"
        if ancestral is not None:
            within = [r["nfe"] for r in own if r["fid"] <= 1.1 * ancestral["fid"]]
            line += (f"; within 10% of ancestral-{ancestral['nfe']}'s ({ancestral['fid']:.3f}) from NFE "
                     f"{min(within)}" if within else f"; never within 10% of ancestral-{ancestral['nfe']}'s "
                     f"({ancestral['fid']:.3f}) at the NFEs run")
        lines.append(line)
    return text + "\n\n" + "\n".join(lines)


def merge(paths: list[str], header: str, out: str | None, plot_path: str | None) -> None:
    """Re-render one report from the results of several runs (e.g. one interrupted and its continuation)."""
    import json

    loaded = [json.load(open(p)) for p in paths]
    results = list({(r["sampler"], r["nfe"]): r for d in loaded for r in d["results"]}.values())  # last wins
    real = next(d["real"] for d in loaded if "real" in d)
    if plot_path:
        plot(results, plot_path)
    common.report(render(header, results, real), dict(other_cores=float("nan")), out, results=results, real=real,
                  header=header, merged_from=paths)


def plot(results, path, series="sampler", log_fid=False):
    """FID and IS against NFE, one line per value of each result's `series` field (ancestral: a level line)."""
    fig, axes = common.fid_is_figure()
    for name in dict.fromkeys(r[series] for r in results if r[series] != "ancestral"):
        rs = [r for r in results if r[series] == name]
        for ax, key in zip(axes, ("fid", "is")):
            ax.plot([r["nfe"] for r in rs], [r[key] for r in rs], marker="o", label=name)
    ancestral = next((r for r in results if r[series] == "ancestral"), None)
    for ax, key, name in zip(axes, ("fid", "is"), ("FID", "IS")):
        if ancestral:
            ax.axhline(ancestral[key], color="k", ls="--", lw=1, label=f"ancestral, NFE {ancestral['nfe']}")
        if key == "fid" and log_fid:
            ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    common.save_fid_is_figure(fig, axes, path)


if __name__ == "__main__":
    sys.exit(main())
