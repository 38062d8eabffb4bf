"""Samples of a trained run, drawn by an older commit's code and by this tree's, compared bit for bit.

    python -m ddpm_jax train --config experiments/digits.py --workdir runs/digits
    python benchmarks/bit_identity.py --workdir runs/digits --old e3eded5 --out benchmarks/results/bit_identity_digits.json

The old commit's `ddpm_jax/` is extracted with `git archive` into a temporary directory; each side draws the same
cases in a fresh process (PYTHONPATH set to its code; the child checks which `ddpm_jax` it imported) from the same
run directory, EMA params, labels and keys: ancestral, DDIM with eta 0 and 1, DPM-Solver++(2M), Heun, img2img,
inpainting with RePaint resampling, and the run's own configured sampler through `runs.sample` (sharded over the
local devices). Every setting is passed explicitly (clip_denoised=True, as the run's config), so a change of a
library default cannot hide behind it. Prints a table and writes the JSON; exits 1 if any case differs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

NUM = 16


def draw(workdir: str, code: str, out: str) -> None:
    """The child: draw every case with the `ddpm_jax` found under `code`, save them to `out` (.npz)."""
    import jax
    import jax.numpy as jnp
    from jax.tree_util import Partial

    import ddpm_jax
    from ddpm_jax import editing, runs, sampling

    assert os.path.realpath(ddpm_jax.__file__).startswith(os.path.realpath(code)), ddpm_jax.__file__
    run = runs.load_run(workdir)
    shape = (NUM,) + tuple(run.model_shape())
    model_fn = run.model_fn
    if run.config.model.get("num_classes", None):
        model_fn = Partial(sampling.with_labels, model_fn, jnp.arange(NUM, dtype=jnp.int32) % run.config.model.num_classes)
    rng = jax.random.PRNGKey(2024)
    common_options = dict(prediction=run.config.diffusion.prediction, clip_denoised=True)
    cases = {
        "ancestral": lambda: sampling.sample(model_fn, run.sched, rng, shape, sampler="ancestral",
                                             variance="fixed_small", **common_options),
        "ddim_eta0": lambda: sampling.sample(model_fn, run.sched, rng, shape, sampler="ddim", num_steps=20, eta=0.0,
                                             spacing="leading", **common_options),
        "ddim_eta1": lambda: sampling.sample(model_fn, run.sched, rng, shape, sampler="ddim", num_steps=20, eta=1.0,
                                             spacing="leading", **common_options),
        "dpm++2m": lambda: sampling.sample(model_fn, run.sched, rng, shape, sampler="dpm++2m", num_steps=20,
                                           spacing="linspace", **common_options),
        "heun": lambda: sampling.sample(model_fn, run.sched, rng, shape, sampler="heun", num_steps=10,
                                        spacing="karras", **common_options),
    }
    images = sampling.sample(model_fn, run.sched, jax.random.PRNGKey(1), shape, sampler="ddim", num_steps=10,
                             eta=0.0, spacing="leading", **common_options)
    mask = jnp.zeros(shape[1:-1] + (1,)).at[: shape[1] // 2].set(1.0)  # regenerate the top half
    cases["img2img"] = lambda: editing.img2img(model_fn, run.sched, rng, images, strength=0.6, sampler="dpm++2m",
                                               num_steps=20, spacing="linspace", **common_options)
    cases["inpaint_resample"] = lambda: editing.inpaint(model_fn, run.sched, rng, images, mask, sampler="ddim",
                                                        num_steps=20, spacing="leading", resample=3, eta=1.0,
                                                        **common_options)
    cases["runs.sample"] = lambda: runs.sample(run.config, run.params, rng, NUM, run.image_shape())
    np.savez(out, **{name: np.asarray(fn()) for name, fn in cases.items()})


def extract(rev: str, into: str) -> str:
    """`ddpm_jax/` of commit `rev` under `into`; returns `into`."""
    os.makedirs(into)
    archive = os.path.join(into, "code.tar")
    with open(archive, "wb") as f:
        subprocess.run(["git", "archive", rev, "ddpm_jax"], check=True, stdout=f, cwd=common.REPO)
    with tarfile.open(archive) as tar:
        tar.extractall(into)
    return into


def side(workdir: str, code: str, out: str) -> dict:
    env = dict(os.environ, PYTHONPATH=code)
    subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--workdir", workdir, "--code", code,
                    "--save", out], check=True, env=env)
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--old", default="e3eded5", help="the commit to compare with (before the one-loop redesign)")
    parser.add_argument("--out")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    workdir = os.path.abspath(args.workdir)
    if args.child:
        draw(workdir, args.code, args.save)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        old = side(workdir, extract(args.old, os.path.join(tmp, "old")), os.path.join(tmp, "old.npz"))
        new = side(workdir, common.REPO, os.path.join(tmp, "new.npz"))
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=common.REPO)
    rows = {name: dict(identical=bool(np.array_equal(old[name], new[name])), shape=list(new[name].shape),
                       max_abs_diff=float(np.max(np.abs(old[name] - new[name]))))
            for name in old}
    print(f"{'case':18s} {'shape':18s} bit-identical  max |old - new|")
    for name, r in rows.items():
        print(f"{name:18s} {str(tuple(r['shape'])):18s} {str(r['identical']):14s} {r['max_abs_diff']:.3g}")
    result = dict(workdir=args.workdir, old=args.old, new=f"{head.stdout.strip()} (working tree)", cases=rows)
    if args.out:
        common.write_json(args.out, result)
    return 0 if all(r["identical"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
