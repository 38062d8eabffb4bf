"""Issue 25's targets over sampling seeds: each student's FID at 1, 2 and 4 NFE against the teacher's best
training-free sampler at 20 NFE, from `benchmarks/distill.py` results of the same students at several --seed.

    python benchmarks/distill_targets.py --results benchmarks/results/distill_mnist_v_heun8.json,\
benchmarks/results/distill_mnist_v_heun8_seed1.json,benchmarks/results/distill_mnist_v_heun8_seed2.json \
        --out benchmarks/results/distill_targets_mnist_v_heun8.json

Per results file (one seed): the teacher's best is the lowest FID among its samplers scored at 19-20 NFE (Heun
runs at the odd NFE), and each student's ratio is its FID over that; a target (4x at 1 NFE, 2x at 2, 1.5x at 4) is
met only where it holds at every seed. Reads JSON, computes nothing else: no sampling.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

TARGETS = {1: 4.0, 2: 2.0, 4: 1.5}  # NFE: the largest FID ratio to the teacher's best at 20 NFE
STUDENTS = ("progressive student", "consistency student")


def seed_ratios(results: list[dict]) -> dict:
    """dict(teacher=dict(sampler, nfe, fid), students={what: {nfe: dict(fid, ratio)}}) of one seed's results."""
    teacher = min((r for r in results if r["what"].startswith("teacher, ") and r["nfe"] in (19, 20)),
                  key=lambda r: r["fid"])
    students = {}
    for r in results:
        if r["what"] in STUDENTS and r["nfe"] in TARGETS:
            students.setdefault(r["what"], {})[r["nfe"]] = dict(fid=r["fid"], ratio=r["fid"] / teacher["fid"])
    return dict(teacher=dict(sampler=teacher["what"].removeprefix("teacher, "), nfe=teacher["nfe"],
                             fid=teacher["fid"]), students=students)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", required=True, help="comma-separated benchmarks/distill.py JSONs, one a seed")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    seeds = {}
    for path in args.results.split(","):
        with open(path) as f:
            data = json.load(f)
        seeds[str(data["settings"]["seed"])] = dict(path=path, **seed_ratios(data["results"]))
    rows, summary = [], {}
    for what in STUDENTS:
        for nfe, target in TARGETS.items():
            per_seed = [s["students"][what][nfe] for s in seeds.values() if nfe in s["students"].get(what, {})]
            if len(per_seed) != len(seeds):
                continue
            ratios = [p["ratio"] for p in per_seed]
            met = all(r <= target for r in ratios)
            summary.setdefault(what, {})[nfe] = dict(
                fid_mean=float(np.mean([p["fid"] for p in per_seed])), ratio_mean=float(np.mean(ratios)),
                ratio_max=float(max(ratios)), target=target, met_at_every_seed=met)
            rows.append([what, str(nfe), " / ".join(f"{p['fid']:.2f}" for p in per_seed),
                         " / ".join(f"{r:.2f}x" for r in ratios), f"{max(ratios):.2f}x", f"{target:g}x",
                         "met" if met else "not met"])
    teachers = " / ".join(f"{s['teacher']['sampler']} {s['teacher']['fid']:.2f}" for s in seeds.values())
    text = (f"seeds {', '.join(seeds)}; the teacher's best at 19-20 NFE per seed: {teachers}\n\n"
            + common.table(["student", "NFE", "FID per seed", "/ teacher's best", "worst", "target", ""], rows))
    print(text)
    common.write_json(args.out, dict(table=text, seeds=seeds, summary=summary, targets=TARGETS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
