"""Few-step generation: progressive and consistency distillation of a teacher run against the teacher's
training-free samplers at the same network evaluations (NFE).

    python benchmarks/distill.py --teacher runs/mnist_fast --feature-net classifier:runs/classifier_mnist \
        --num-samples 1000 --out benchmarks/results/distill_mnist.json
    python benchmarks/distill.py --teacher runs/digits --feature-net classifier:runs/classifier_digits --quick

Runs the whole chain with `distill_run.distill` (timed): progressive distillation from --pd-teacher-steps teacher
steps (DDIM; Heun in the first round with --set distill.solver=heun) down to 1 (--pd-train-steps per round), and
consistency distillation (--cd-train-steps, --cd-levels levels, Heun teacher steps); --methods picks them, --set
KEY=VALUE overrides the students' config (e.g. diffusion.prediction=v: a v student of an eps teacher). Then, at each
NFE of --nfe, --num-samples samples with the same seed of: the progressive student of that many steps, the
consistency student in that many steps (Algorithm 1), and the teacher with each sampler of --samplers (as
benchmarks/quality_vs_nfe.py counts NFE: Heun takes 2N - 1 on N steps and runs at the odd NFE at or below; DDIM's
leading spacing may visit one level more).
Each is scored with the project's FID, IS, KID and precision/recall against the teacher's test split
(`sample_quality`, reference statistics cached as `evaluate` does); sampling images/s excludes the compile
(rounds of at most 256 samples per device, one shape).
The students are written under --students-dir (default: beside the teacher), so a rerun resumes them and only
scores (its distillation times are then those of the resume: keep the first run's JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from quality_vs_nfe import Scorer, nfe_of, plot, steps_for_nfe  # noqa: E402

DEFAULT_SAMPLERS = ("ddim", "dpm++2m", "dpm++2m-sde", "unipc", "heun")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True, help="the teacher run's workdir")
    parser.add_argument("--feature-net", required=True, help="classifier:DIR or inception:WEIGHTS.npz")
    parser.add_argument("--students-dir", default=None, help="default: TEACHER_distill beside the teacher")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--nfe", default="1,2,4,8")
    parser.add_argument("--samplers", default=",".join(DEFAULT_SAMPLERS), help="the teacher's, comma-separated")
    parser.add_argument("--pd-teacher-steps", type=int, default=16, help="a power of 2: rounds down to 1 step")
    parser.add_argument("--pd-train-steps", type=int, default=2000, help="optimizer steps per progressive round")
    parser.add_argument("--cd-train-steps", type=int, default=8000, help="optimizer steps of consistency distillation")
    parser.add_argument("--cd-levels", type=int, default=18, help="N of the consistency discretization")
    parser.add_argument("--methods", default="progressive,consistency", help="comma-separated")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a student config override for every method, e.g. diffusion.prediction=v (repeatable)")
    parser.add_argument("--unclipped", action="store_true",
                        help="every student and teacher sampler predicts x0 unclipped (default: each run's "
                             "config.sample.clip_denoised)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON results (default: benchmarks/results/distill_NAME.json)")
    parser.add_argument("--plot", default=None, help="PNG of FID and IS against NFE, every student and sampler")
    parser.add_argument("--replot", default=None, metavar="JSON", help="only draw --plot from these results")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 samples, NFE 1 and 2, teacher steps 4, "
                        "20 train steps per student, 5 consistency levels, samplers ddim and dpm++2m")
    args = parser.parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            plot(json.load(f)["results"], args.plot, series="what", log_fid=True)
        return 0
    if args.quick:
        args.num_samples, args.nfe, args.pd_teacher_steps = 64, "1,2", 4
        args.pd_train_steps, args.cd_train_steps, args.cd_levels, args.samplers = 20, 20, 5, "ddim,dpm++2m"

    from ddpm_jax import distill_run, runs

    monitor = common.LoadMonitor()
    name = os.path.basename(os.path.normpath(args.teacher))
    students = args.students_dir or os.path.normpath(args.teacher) + "_distill"
    out = args.out or os.path.join(common.REPO, "benchmarks", "results",
                                   f"distill_{name}{'_quick' if args.quick else ''}.json")
    nfes = [int(n) for n in args.nfe.split(",")]

    methods = args.methods.split(",")
    method_overrides = {
        "progressive": [f"--config.distill.teacher_steps={args.pd_teacher_steps}",
                        f"--config.train.num_steps={args.pd_train_steps}"],
        "consistency": [f"--config.distill.num_levels={args.cd_levels}",
                        f"--config.train.num_steps={args.cd_train_steps}"]}
    unclipped = ["--config.sample.clip_denoised=False"] if args.unclipped else []  # students' and teacher's
    timings = {}
    for method in methods:
        overrides = method_overrides[method] + [f"--config.{kv}" for kv in args.set] + unclipped
        start = time.perf_counter()
        result = distill_run.distill(args.teacher, os.path.join(students, method), method, overrides,
                                     progress=False)
        timings[method] = dict(total_seconds=time.perf_counter() - start, rounds=result["rounds"])
        print(f"{method}: {timings[method]['total_seconds']:.0f}s", file=sys.stderr, flush=True)

    teacher = runs.load_run(args.teacher, overrides=unclipped)
    scorer = Scorer(args.teacher, teacher, args.feature_net, args.num_samples, args.seed)

    def score(what, nfe, run, **options):
        values = scorer(run, **options)
        print(f"{what:>28} NFE {nfe:>3}: FID {values['fid']:.3f} IS {values['is']:.3f}", file=sys.stderr, flush=True)
        return dict(what=what, nfe=nfe, step=run.step, **values)

    results = []
    pd_rounds = {r["steps"] for r in timings["progressive"]["rounds"]} if "progressive" in timings else set()
    for nfe in nfes:
        if nfe in pd_rounds:
            pd = runs.load_run(os.path.join(students, "progressive"), num_steps=nfe)
            results.append(score("progressive student", nfe, pd, num_steps=nfe))
        if "consistency" in timings and nfe <= args.cd_levels:
            cd = runs.load_run(os.path.join(students, "consistency"))
            results.append(score("consistency student", nfe, cd, num_steps=nfe))
        for sampler in args.samplers.split(","):
            steps = steps_for_nfe(sampler, nfe)
            actual = nfe_of(teacher, sampler, steps)
            if any(r["what"] == f"teacher, {sampler}" and r["nfe"] == actual for r in results):
                continue  # Heun at an even NFE runs at the odd one below, already scored
            results.append(score(f"teacher, {sampler}", actual, teacher, sampler=sampler, num_steps=steps))
        common.write_json(out, dict(partial=True, results=results, timings=timings))

    header = (f"{args.num_samples} samples of each; teacher {args.teacher} (step {teacher.step}); feature network "
              f"{scorer.network.name}; reference: the test split.")
    rows = [[r["what"], r["nfe"], common.fmt(r["fid"], ".3f"), common.fmt(r["is"], ".3f"),
             common.fmt(r["precision"], ".3f"), common.fmt(r["recall"], ".3f"), common.fmt(r["images_per_s"], ".1f")]
            for r in results]
    text = header + "\n\n" + common.table(["model / sampler", "NFE", "FID", "IS", "precision", "recall", "img/s"],
                                          rows)
    text += "\n\ndistillation time: " + ", ".join(f"{m} {t['total_seconds']:.0f}s" for m, t in timings.items())
    if args.plot:
        plot(results, args.plot, series="what", log_fid=True)
    common.report(text, monitor.stop(), out, results=results, timings=timings, header=header,
                  machine=common.machine_info(), teacher=args.teacher, teacher_step=teacher.step,
                  feature_network=scorer.network.name, settings=vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
