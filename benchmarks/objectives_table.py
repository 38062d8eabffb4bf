"""The objectives comparison of docs/objectives.md as markdown, from the committed results JSONs.

    python benchmarks/objectives_table.py --dataset digits     # objectives_digits_{ddpm,v,flow,edm}[_sde].json
    python benchmarks/objectives_table.py --dataset mnist      # objectives_mnist_*.json, time_to_quality_mnist_fast_*.json

For each objective's run (written by benchmarks/quality_vs_nfe.py; `_sde` files hold the stochastic samplers of
the same run), one column of FID (precision / recall) per sampler and NFE, the best per row in bold, and the real
data's line; with --dataset mnist also FID and IS against training time (benchmarks/time_to_quality.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

OBJECTIVES = {"ddpm": "DDPM (eps)", "v": "v-prediction", "flow": "flow matching", "edm": "EDM"}
RESULTS = os.path.join(common.REPO, "benchmarks", "results")


def _load(name: str) -> dict | None:
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def quality_table(dataset: str) -> str:
    """Rows (sampler, NFE), columns the objectives: FID (precision / recall)."""
    cells, real, order = {}, None, []
    for key in OBJECTIVES:
        for suffix in ("", "_sde"):
            result = _load(f"objectives_{dataset}_{key}{suffix}.json")
            if result is None:
                continue
            real = real or result["real"]
            for r in result["results"]:
                row = (r["sampler"], r["nfe"])
                if row not in order:
                    order.append(row)
                cells[row, key] = r
    keys = [k for k in OBJECTIVES if any(k == c for _, c in cells)]
    lines = ["| sampler | NFE | " + " | ".join(f"{OBJECTIVES[k]} FID (P / R)" for k in keys) + " |",
             "|---|---:|" + "---:|" * len(keys)]
    for row in sorted(order, key=lambda r: (r[0], r[1])):
        fids = {k: cells[row, k]["fid"] for k in keys if (row, k) in cells}
        best = min(fids.values())
        out = []
        for k in keys:
            if (row, k) not in cells:
                out.append("-")
                continue
            r = cells[row, k]
            fid = f"{r['fid']:.1f}"
            out.append(f"{'**' + fid + '**' if r['fid'] == best and len(fids) > 1 else fid} "
                       f"({r['precision']:.2f} / {r['recall']:.2f})")
        lines.append(f"| {row[0]} | {row[1]} | " + " | ".join(out) + " |")
    lines.append(f"| real data (n = {real['num_examples']}) | - | FID {real['fid']:.1f} (precision "
                 f"{real['precision']:.2f} / recall {real['recall']:.2f}) |" + " |" * (len(keys) - 1))
    return "\n".join(lines)


def time_table() -> str:
    """MNIST: FID / IS at each checkpoint of each objective's 1,500-step run."""
    lines = ["| objective (config) | sampler | step 500 | step 1,000 | step 1,500 | training s (shared cores) |",
             "|---|---|---:|---:|---:|---:|"]
    real = None
    for key in OBJECTIVES:
        result = _load(f"time_to_quality_mnist_fast_{key}.json")
        if result is None:
            continue
        real = result["real"]
        s = result["sampler"]
        steps = {r["step"]: r for r in result["rows"]}
        cells = [f"{steps[n]['fid']:.2f} / {steps[n]['is']:.2f}" if n in steps else "-" for n in (500, 1000, 1500)]
        seconds = steps[max(steps)]["train_seconds"]
        lines.append(f"| {OBJECTIVES[key]} ({result['config']}{' ' + ' '.join(result['overrides'][1:]) if len(result['overrides']) > 1 else ''}) "
                     f"| {s['sampler']} {s['num_steps']} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    lines.append(f"| real data | - | FID {real['fid']:.2f} / IS {real['is']:.2f} | | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=("digits", "mnist"), required=True)
    args = parser.parse_args(argv)
    print(quality_table(args.dataset))
    if args.dataset == "mnist":
        print()
        print(time_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
