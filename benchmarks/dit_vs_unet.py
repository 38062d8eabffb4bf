"""The Diffusion Transformer against the U-Net: parameters and FLOPs per image, and (--measure) sample quality for
equal training wall-clock.

    python benchmarks/dit_vs_unet.py                          # MNIST and digits recipes + the paper's sizes (~1 min)
    python benchmarks/dit_vs_unet.py --quick --measure --feature-net classifier:runs/classifier_digits  # smoke run
    python benchmarks/dit_vs_unet.py --measure --pair mnist --feature-net classifier:runs/classifier_mnist \
        --every 250 -- --config.data.source=npz:/data/mnist.npz

Without --measure (no training): for each pair of recipes (mnist: experiments/mnist_fast.py's U-Net against
experiments/mnist_dit.py's DiT; digits: digits.py against digits_dit.py) the parameter count and the FLOPs of one
forward per image, from XLA's cost analysis of the compiled forward at batch 1 (`compiled.cost_analysis()['flops']`:
a multiply-add counts 2, and elementwise ops count); then the paper's DiT sizes on 256x256 ImageNet latents
(32x32x4, 1000 classes, learned sigma) at patch 2 and 4, their parameters and Gflops (XLA's count / 2, the
paper's multiply-add convention) beside Peebles & Xie's figures.

--measure trains both recipes of a pair as the README trains them and scores their checkpoints with the project's
classifier metrics (benchmarks/time_to_quality.py's `train` and `evaluate`: a fresh `python -m ddpm_jax train`
process each, compiles included, a checkpoint every --every steps, --num-samples samples each with the config's
sampler), then compares them at equal wall-clock: T is the earlier of the two runs' last checkpoint times (from
the training process's start, compiles included), and each recipe shows its last checkpoint trained within T.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

PAIRS = {  # (name, experiment, image shape) of the U-Net, then of the DiT
    "mnist": (("unet", "experiments/mnist_fast.py", (28, 28, 1)), ("dit", "experiments/mnist_dit.py", (28, 28, 1))),
    "digits": (("unet", "experiments/digits.py", (8, 8, 1)), ("dit", "experiments/digits_dit.py", (8, 8, 1))),
}
# Peebles & Xie 2023: params of the /2 models (their release's count, which includes the fixed sin-cos table);
# Gflops of Table 1 (p = 4) and Table 4 (XL/2).
PAPER = {"DiT-S": dict(params=33e6, gflops_p4=1.4), "DiT-B": dict(params=130e6, gflops_p4=5.6),
         "DiT-L": dict(params=458e6, gflops_p4=19.7), "DiT-XL": dict(params=675e6, gflops_p4=29.1, gflops_p2=118.6)}


def recipe_cost(config_path: str, image_shape) -> dict:
    """Parameters and XLA's FLOPs of one forward per image of an experiment's network."""
    import jax
    import jax.numpy as jnp

    from ddpm_jax import configs
    from ddpm_jax.models.unet import count_params

    config = configs.load_config(os.path.join(common.REPO, config_path))
    model = configs.create_model(config)
    x, t = jnp.zeros((1,) + tuple(image_shape)), jnp.zeros((1,), jnp.int32)
    y = None if model.num_classes is None else t
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x, t, y)
    compiled = jax.jit(model.apply).lower(params, x, t, y).compile()
    return dict(config=config_path, architecture=config.model.get("arch", "unet"), image_shape=list(image_shape),
                params=count_params(params), flops_per_image=common.cost_flops(compiled))


def paper_sizes() -> list[dict]:
    """The paper's DiT sizes on 32x32x4 latents: parameters and Gflops (abstract params, the forward lowered only)."""
    import jax
    import jax.numpy as jnp

    from ddpm_jax.models import dit
    from ddpm_jax.models.unet import count_params

    rows = []
    x, t = jax.ShapeDtypeStruct((1, 32, 32, 4), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32)
    for size, paper in PAPER.items():
        for p in (2, 4):
            model = dit.preset(f"{size}/{p}", num_classes=1000, learn_sigma=True)
            params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t)
            cost = jax.jit(model.apply).lower(params, x, t, t).cost_analysis()
            rows.append(dict(model=f"{size}/{p}", params=count_params(params),
                             params_with_sincos_table=count_params(params) + (32 // p) ** 2 * model.hidden_size,
                             gflops=cost["flops"] / 2e9, paper_params=paper["params"],
                             paper_gflops=paper.get(f"gflops_p{p}")))
    return rows


def measure(pair: str, feature_net: str, every: int, num_samples: int, seed: int, overrides: list[str]) -> dict:
    """Both recipes of `pair` trained and scored (time_to_quality.py), then compared at equal wall-clock."""
    import shutil

    import time_to_quality

    out = {}
    for name, config_path, _ in PAIRS[pair]:
        workdir = f"/tmp/dit_vs_unet/{pair}_{name}"
        shutil.rmtree(workdir, ignore_errors=True)
        timing = time_to_quality.train(config_path, workdir, every, overrides)
        result = time_to_quality.evaluate(workdir, feature_net, num_samples, seed)
        for row in result["rows"]:
            row["train_seconds"] = timing["clock"].get(row["step"])
        out[name] = dict(config=config_path, total_train_seconds=timing["total_seconds"], **result)
    clocks = {name: [row["train_seconds"] for row in r["rows"] if row["train_seconds"] is not None]
              for name, r in out.items()}
    budget = min(max(c) for c in clocks.values())
    for r in out.values():
        within = [row for row in r["rows"] if row["train_seconds"] is not None and row["train_seconds"] <= budget]
        r["at_equal_time"] = within[-1] if within else None  # None: its first checkpoint came later
    return dict(budget_seconds=budget, recipes=out)


def default_out(args, name: str) -> str | None:
    """Where the results go without --out: benchmarks/results/NAME, not for a --quick smoke run."""
    return None if args.quick else os.path.join(common.REPO, "benchmarks", "results", name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pair", choices=sorted(PAIRS), default=None, help="one pair of recipes (default: all)")
    parser.add_argument("--measure", action="store_true", help="train both recipes and score them (long)")
    parser.add_argument("--feature-net", help="with --measure: the classifier metrics' network (as evaluate's)")
    parser.add_argument("--every", type=int, default=250, help="with --measure: checkpoint and score every N steps")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON (default: benchmarks/results/dit_vs_unet.json, or "
                        "dit_vs_unet_measure_PAIR.json; none for --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: the digits pair only; with --measure, 20 "
                        "training steps, a checkpoint every 10, 5 sampler steps (numbers not meaningful)")
    parser.add_argument("overrides", nargs="*", help="after --: --config.a.b=value overrides of both recipes")
    args = parser.parse_args(argv)
    if args.quick:
        args.pair, args.every = args.pair or "digits", 10
        args.overrides += ["--config.train.num_steps=20", "--config.sample.num_steps=5"]
    monitor = common.LoadMonitor()
    if args.measure:
        if args.pair is None or not args.feature_net:
            parser.error("--measure needs --pair and --feature-net")
        result = measure(args.pair, args.feature_net, args.every, args.num_samples, args.seed, args.overrides)
        rows = [[name, r["config"], f"{r['total_train_seconds']:.0f}"]
                + [common.fmt((r["at_equal_time"] or {}).get(key), spec)
                   for key, spec in (("step", "d"), ("train_seconds", ".0f"), ("fid", ".2f"), ("is", ".3f"))]
                for name, r in result["recipes"].items()]
        text = (f"{args.pair}: both recipes at the last checkpoint within {result['budget_seconds']:.0f} s of "
                f"training; {args.num_samples} samples\n\n"
                + common.table(["network", "config", "train s (all)", "step", "its train s", "FID", "IS"], rows))
        out = args.out or default_out(args, f"dit_vs_unet_measure_{args.pair}.json")
        common.report(text, monitor.stop(), out, overrides=args.overrides, machine=common.machine_info(), **result)
        return 0
    pairs = [args.pair] if args.pair else sorted(PAIRS)
    recipes = {pair: {name: recipe_cost(path, shape) for name, path, shape in PAIRS[pair]} for pair in pairs}
    paper = [] if args.quick else paper_sizes()
    rows = [[pair, name, r["config"], f"{r['params']:,}", f"{r['flops_per_image'] / 1e6:.1f}"]
            for pair, both in recipes.items() for name, r in both.items()]
    paper_rows = [[r["model"], f"{r['params']:,}", f"{r['params_with_sincos_table'] / 1e6:.1f}M",
                   f"{r['paper_params'] / 1e6:.0f}M", f"{r['gflops']:.2f}", common.fmt(r["paper_gflops"], ".1f")]
                  for r in paper]
    text = common.table(["pair", "network", "config", "params", "MFLOPs / image (XLA)"], rows)
    if paper:
        text += ("\n\nThe paper's sizes, 32x32x4 latents, 1000 classes, learned sigma (Gflops: XLA's count / 2)\n\n"
                 + common.table(["model", "params", "+ sin-cos table", "paper (/2)", "Gflops", "paper"], paper_rows))
    out = args.out or default_out(args, "dit_vs_unet.json")
    common.report(text, monitor.stop(), out, recipes=recipes, paper_sizes=paper, machine=common.machine_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
