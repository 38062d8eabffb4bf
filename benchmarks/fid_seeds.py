"""How much a 500-sample FID moves with the sampling seed: `evaluate` of each run's newest checkpoint (its EMA
params, its config's sampler) at each of --seeds, the same seeds for every run, and the mean, standard deviation,
min and max of each metric per run.

    python benchmarks/fid_seeds.py --workdirs runs/mnist_fast_flow,runs/mnist_fast_flow_logit \
        --feature-net classifier:runs/classifier_mnist --seeds 0,1,2,3,4 --out benchmarks/results/fid_seeds.json

A difference between two runs smaller than the spread over seeds of one is not a difference the sample count can
show; a target (FID <= 1.2x real) met at one seed and not at another is not met. `--guidance 1,1.25` scores each run
at each classifier-free guidance scale (a class-conditional run's; rows "RUN guidance S" for S != 1); `--set
sample.clip_denoised=False` overrides every run's saved config.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

METRICS = ("fid", "is", "precision", "recall")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdirs", required=True, help="comma-separated runs")
    parser.add_argument("--feature-net", required=True, help="classifier:DIR or inception:WEIGHTS.npz")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--guidance", default="1", help="comma-separated classifier-free guidance scales")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override of every run's saved config, e.g. sample.clip_denoised=False")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import numpy as np

    from ddpm_jax import evaluate

    monitor = common.LoadMonitor()
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, rows = {}, []
    settings = [(w, float(g)) for w in args.workdirs.split(",") for g in args.guidance.split(",")]
    overrides = [f"--config.{kv}" for kv in args.set]
    for workdir, guidance in settings:
        name = workdir if guidance == 1 else f"{workdir} guidance {guidance:g}"
        scores = []
        for seed in seeds:
            report = evaluate.evaluate(workdir, num_samples=args.num_samples, feature_net=args.feature_net,
                                       bpd_examples=0, seed=seed, progress=False, write=False,
                                       guidance_scale=guidance, config_overrides=overrides)
            scores.append({k: report["metrics"][k] for k in METRICS})
            print(f"{name} seed {seed}: FID {scores[-1]['fid']:.3f}", file=sys.stderr, flush=True)
        summary = {k: dict(mean=float(np.mean(v)), std=float(np.std(v, ddof=1)), min=float(np.min(v)),
                           max=float(np.max(v))) for k in METRICS for v in [[s[k] for s in scores]]}
        runs[name] = dict(step=report["step"], sampler=report["sampler"], seeds=seeds, scores=scores,
                          summary=summary)
        rows.append([name, str(report["step"])] + [f"{summary[k]['mean']:.3f} +- {summary[k]['std']:.3f} "
                                                      f"[{summary[k]['min']:.3f}, {summary[k]['max']:.3f}]"
                                                      for k in ("fid", "is")])
    text = (f"{args.num_samples} samples a seed, seeds {args.seeds}, feature network {args.feature_net}"
            f"{'; config ' + ', '.join(args.set) if args.set else ''}; mean +- standard deviation [min, max] over the "
            "seeds\n\n"
            + common.table(["run", "step", "FID", "IS"], rows))
    common.report(text, monitor.stop(), args.out, runs=runs, num_samples=args.num_samples,
                  feature_net=args.feature_net, config_overrides=args.set, machine=common.machine_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
