"""Sample quality against the EMA length: post-hoc EMA reconstructions of a run at several sigma_rels, and the
run's fixed-decay EMA, scored alike.

    python -m ddpm_jax train --config experiments/mnist_fast.py --workdir runs/mnist_phema \
        --config.data.source=npz:/data/mnist.npz \
        "--config.train.posthoc_ema={'sigma_rels': (0.05, 0.1), 'snapshot_every': 100}"
    python benchmarks/posthoc_ema_sweep.py --workdir runs/mnist_phema --feature-net classifier:runs/classifier_mnist \
        --sigma-rels 0.02,0.03,0.05,0.07,0.10,0.13,0.16,0.2 --out benchmarks/results/posthoc_ema_mnist_fast.json

Each sigma_rel is reconstructed at the newest snapshot (`posthoc_ema.export`, written into the workdir, where
`sample --sigma-rel` finds it) and measured by `evaluate` (FID, IS, KID, precision/recall of --num-samples samples
with the config's sampler against the test split, seed --seed); the fixed-decay EMA (config.train.ema_decay) is
the checkpoint of that step's, measured the same way. A sigma_rel the snapshots cannot reconstruct within
posthoc_ema.MAX_PROFILE_ERROR is reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

METRICS = ("fid", "is", "kid", "precision", "recall")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a run trained with config.train.posthoc_ema")
    parser.add_argument("--feature-net", required=True,
                        help="classifier:DIR, inception:WEIGHTS.npz or inception:packaged")
    parser.add_argument("--sigma-rels", default="0.02,0.03,0.05,0.07,0.1,0.13,0.16,0.2")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from ddpm_jax import checkpoint, evaluate, posthoc_ema, runs

    sigma_rels = [float(s) for s in args.sigma_rels.split(",")]
    snapshots = posthoc_ema.snapshots(args.workdir)
    if not snapshots:
        raise SystemExit(f"no post-hoc EMA snapshots in {args.workdir!r}: train it with config.train.posthoc_ema.")
    step = snapshots[-1].step
    monitor = common.LoadMonitor()
    options = dict(num_samples=args.num_samples, feature_net=args.feature_net, bpd_examples=0, seed=args.seed,
                   progress=False, write=False)
    rows = []
    for sigma_rel in sigma_rels:
        try:
            _, info = posthoc_ema.export(args.workdir, sigma_rel, step=step)
        except ValueError as e:
            rows.append(dict(params=f"sigma_rel {sigma_rel:g}", sigma_rel=sigma_rel, skipped=str(e)))
            print(f"sigma_rel {sigma_rel:g}: skipped ({e})", file=sys.stderr)
            continue
        report = evaluate.evaluate(args.workdir, sigma_rel=sigma_rel, step=step, **options)
        rows.append(dict(params=f"sigma_rel {sigma_rel:g}", sigma_rel=sigma_rel, profile_error=info["profile_error"],
                         **{k: report["metrics"][k] for k in METRICS if k in report["metrics"]}))
        print(f"sigma_rel {sigma_rel:g}: FID {report['metrics']['fid']:.3f}", file=sys.stderr, flush=True)
    config = runs.load_config(args.workdir)
    try:
        checkpoint.restore_params(args.workdir, step=step)
        report = evaluate.evaluate(args.workdir, step=step, **options)
        rows.append(dict(params=f"EMA decay {config.train.ema_decay}", sigma_rel=None,
                         **{k: report["metrics"][k] for k in METRICS if k in report["metrics"]}))
    except FileNotFoundError as e:
        rows.append(dict(params=f"EMA decay {config.train.ema_decay}", sigma_rel=None, skipped=str(e)))
    load = monitor.stop()

    scored = [r for r in rows if "fid" in r]
    best = min(scored, key=lambda r: r["fid"])["params"] if scored else None
    table = common.table(
        ["params", "profile error", "FID", "IS", "KID", "precision", "recall"],
        [[r["params"], common.fmt(r.get("profile_error"), ".4f"),
          *(common.fmt(r.get(k), ".4f" if k == "kid" else ".3f") for k in METRICS)]
         if "fid" in r else [r["params"], "skipped", "-", "-", "-", "-", "-"] for r in rows])
    text = (f"{args.workdir}: step {step}, {len(snapshots)} snapshots; {args.num_samples} samples, seed {args.seed}, "
            f"feature network {args.feature_net}; best FID: {best}\n\n{table}")
    common.report(text, load, args.out, workdir=os.path.abspath(args.workdir), step=step, snapshots=len(snapshots),
                  num_samples=args.num_samples, seed=args.seed, feature_net=args.feature_net, rows=rows, best=best,
                  machine=common.machine_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
