"""What checkpointing costs training: images/s with a checkpoint every N steps, written in the background
(Orbax's asynchronous checkpointing, the default) or synchronously (config.train.async_checkpointing=False), and,
in the background, with a checkpoint that falls due while the previous one is still being written skipped
(config.train.checkpoint_if_busy="skip", the default) or waited for ("wait").

    python benchmarks/checkpoint_cost.py --steps 100 --repeats 3 --out benchmarks/results/checkpoint_cost.json
    python benchmarks/checkpoint_cost.py --quick

Each run is `train.train_and_evaluate` on a fresh workdir for --steps steps (the digits experiment by default,
its batch of 64, no sample grids), with checkpoint_every N = 1, 10, 100 and none (only the final checkpoint).
"img/s" is the training loop's steady-state rate (metrics.jsonl's images_per_sec: the first, compiling call
excluded, and so is the wait for the final write); "wall s" is the whole call, that final wait included;
"written" counts the checkpoints written (the final one included), so steps / written is the interval achieved.
"vs none" divides by the median rate of the repeat's runs without checkpoints (all modes: the same loop then).
`--table-from FILE` prints the table of a results JSON this script wrote (with --out, writes it there), running
nothing.
The step is compiled once, by a warm-up run, and shared by all runs (checkpoint settings do not change it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

EVERY = (1, 10, 100, None)  # None: only the final checkpoint
MODES = (("async", True, "skip"), ("async", True, "wait"), ("sync", False, "wait"))  # (name, async_save, if_busy)


def config(model: str, steps: int, every: int | None, async_save: bool, if_busy: str = "skip"):
    return common.load_config(model, [
        f"train.num_steps={steps}", f"train.checkpoint_every={every or 10 * steps}", "train.sample_every=0",
        f"train.log_every={steps}", f"train.async_checkpointing={async_save}", f"train.checkpoint_if_busy={if_busy!r}"])


def run(model: str, steps: int, every: int | None, mode: tuple, root: str) -> dict:
    """One training run in a fresh workdir: steady img/s, wall seconds, checkpoints written, checkpoint size."""
    from ddpm_jax import train

    name, async_save, if_busy = mode
    workdir = tempfile.mkdtemp(dir=root)
    try:
        t0 = time.perf_counter()
        result = train.train_and_evaluate(config(model, steps, every, async_save, if_busy), workdir, progress=False)
        wall = time.perf_counter() - t0
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rate = json.loads(f.readlines()[-1])["images_per_sec"]
        step_dir = os.path.join(workdir, "checkpoints", str(steps))
        size = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(step_dir) for n in names)
    finally:
        shutil.rmtree(workdir)
    return dict(every=every, mode=f"{name} {if_busy}", async_save=async_save, if_busy=if_busy, images_per_sec=rate,
                wall_s=wall, checkpoint_mb=size / 2**20,
                **{f"checkpoints_{k}": v for k, v in result["checkpoints"].items()})


def warm_up(model: str, steps: int, root: str) -> None:
    """Compile the step (num_steps is part of it: the learning-rate schedule) with two steps of a run."""
    from ddpm_jax import train

    train.train_and_evaluate(config(model, steps, None, True), tempfile.mkdtemp(dir=root), stop_after=2,
                             progress=False)


def table(results: list, model: str, steps: int, repeats: int, workdir_root: str | None) -> str:
    """The markdown table of `results`: per N and mode the median img/s, its ratio to the runs without
    checkpoints (the range over repeats), the checkpoints written and the wall seconds."""
    # Without checkpoints every mode runs the same loop, so all "none" runs of a repeat form its baseline.
    baseline = {k: np.median([r["images_per_sec"] for r in results if r["every"] is None and r["repeat"] == k])
                for k in {r["repeat"] for r in results}}

    def cell(every, mode):
        runs = [r for r in results if r["every"] == every and r["mode"] == mode]
        ratios = [r["images_per_sec"] / baseline[r["repeat"]] for r in runs]
        spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        return [common.fmt(float(np.median([r["images_per_sec"] for r in runs])), ".0f"),
                f"{np.median(ratios):.2f}{spread}", str(int(np.median([r["checkpoints_written"] for r in runs]))),
                common.fmt(float(np.median([r["wall_s"] for r in runs])))]

    names = [f"{name} {if_busy}" for name, _, if_busy in MODES]
    rows = [[str(every or "none")] + sum((cell(every, mode) for mode in names), []) for every in EVERY]
    return (f"{model}, batch {common.MODELS[model]['batch']}, {steps} steps per run, {repeats} repeat(s) (medians; "
            f"the ratio's range in parentheses), one checkpoint {results[0]['checkpoint_mb']:.1f} MiB, workdirs in "
            f"{workdir_root or tempfile.gettempdir()}\n"
            + common.table(["checkpoint every"] + sum(([f"{m} img/s", "vs none", "written", "wall s"] for m in names),
                                                      []), rows))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="digits", choices=tuple(common.MODELS))
    p.add_argument("--steps", type=int, default=200, help="training steps per run (default 200)")
    p.add_argument("--workdir-root", default=None, help="where the runs' workdirs go (default: the system temp "
                   "directory); the filesystem measured")
    p.add_argument("--quick", action="store_true", help="20 steps per run")
    p.add_argument("--repeats", type=int, default=1, help="run the whole grid this many times, interleaved; the "
                   "table gives medians, and the ratio's range over the repeats (default 1)")
    p.add_argument("--out", default=None)
    p.add_argument("--table-from", default=None, help="print the table of this results JSON and exit")
    args = p.parse_args(argv)
    if args.table_from:  # re-render a saved run's table (with --out: into that JSON's "table")
        saved = json.load(open(args.table_from))
        saved["table"] = table(saved["results"], saved["model"], saved["steps"],
                               max(r["repeat"] for r in saved["results"]) + 1, saved.get("workdir_root"))
        print(saved["table"])
        if args.out:
            common.write_json(args.out, saved)
        return
    steps = 20 if args.quick else args.steps
    root = tempfile.mkdtemp(dir=args.workdir_root, prefix="checkpoint_cost-")
    info = common.machine_info()
    load = common.LoadMonitor()
    try:
        warm_up(args.model, steps, root)
        results = [dict(run(args.model, steps, every, mode, root), repeat=k)
                   for k in range(args.repeats) for every in EVERY for mode in MODES]
    finally:
        shutil.rmtree(root)
    load = load.stop()

    text = table(results, args.model, steps, args.repeats, args.workdir_root)
    common.report(text, load, args.out, machine=info, results=results, steps=steps, model=args.model,
                  workdir_root=args.workdir_root)


if __name__ == "__main__":
    main()
