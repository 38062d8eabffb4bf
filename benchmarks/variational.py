"""DDPM's discrete VLB against VDM's continuous one, with the same U-Net and training: bits/dim of a test split
and the variance of each model's one-sample estimate of its diffusion loss.

    python benchmarks/variational.py --out benchmarks/results/variational_digits.json
    python benchmarks/variational.py --dataset mnist --source npz:/path/to/mnist.npz --steps 6000 --num-test 2000 \
        --out benchmarks/results/variational_mnist.json

Trains (or resumes, in --runs-dir/DATASET_NAME) and evaluates, one after the other (--only NAME runs one, so
several processes can share an accelerator):

    ddpm_simple   experiments/DATASET.py, unconditional: L_simple, T = 1000 linear betas, fixed_large variance
    ddpm_hybrid   the same with learned_range variance and L_hybrid (Nichol & Dhariwal, lambda = 0.001)
    vdm_fixed     experiments/DATASET_vdm.py: the continuous-time VLB with the fixed linear gamma (-13.3 .. 5)
    vdm_learned   the same with the learned schedule (end points on the VLB, shape on the variance)

    vdm_refit     vdm_fixed's trained network with a learned schedule fitted afterwards for low variance alone
                  (--refit-steps Adam steps on the shape, the network and end points frozen; the continuous VLB
                  does not depend on the shape, so its bits/dim should not move, its variance should)

Bits/dim of the EMA params on every image of the test split: DDPM's full VLB over its T = 1000 terms with the
stable decoder likelihood (`likelihood.bits_per_dim_dataset`), VDM's prior + reconstruction + L_inf at
--vdm-times stratified times per image (`likelihood.vdm_bits_per_dim_dataset`). "Diffusion variance" is the
variance, over test images, uniform t and the noise, of the one-sample estimate of the diffusion part of the bound
(DDPM: (T - 1) L_t, t in 1 .. T - 1; VDM: gamma'(t) / 2 ||eps - eps_hat||^2), in bits/dim squared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

UNCONDITIONAL = ["--config.model.num_classes=None", "--config.train.label_dropout=0.0"]  # as digits_vdm.py
# The training of the published MNIST rows (experiments/mnist.py's before it became the 30-minute CPU recipe), for
# every run of that dataset, so the rows stay reproducible.
TRAINING = {"digits": [], "mnist": ["--config.train.batch_size=128", "--config.train.learning_rate=1e-3",
                                    "--config.train.warmup_steps=200"]}
RUNS = {  # name: (experiment file with {dataset} in it, overrides)
    "ddpm_simple": ("experiments/{dataset}.py", UNCONDITIONAL),
    "ddpm_hybrid": ("experiments/{dataset}.py", UNCONDITIONAL + ["--config.diffusion.variance=learned_range",
                                                                 "--config.diffusion.loss_type=hybrid"]),
    "vdm_fixed": ("experiments/{dataset}_vdm.py", ["--config.diffusion.vdm.schedule=linear"]),
    "vdm_learned": ("experiments/{dataset}_vdm.py", ["--config.diffusion.vdm.schedule=learned"]),
}
DATASETS = tuple(TRAINING)


def evaluate(name, config, params, images, max_value, vdm_times, per_device_batch=64):
    import jax

    from ddpm_jax import configs, functional, likelihood, vdm

    model = configs.create_model(config)
    rng = jax.random.fold_in(jax.random.PRNGKey(0), 1)  # as `evaluate`: fold_in(PRNGKey(seed), 1)
    if configs.objective(config) == "vdm":
        return likelihood.vdm_bits_per_dim_dataset(
            vdm.bind_eps(model, params), vdm.bind_gamma(model, params), images, rng, max_value=max_value,
            num_times=vdm_times, per_device_batch=per_device_batch)
    return likelihood.bits_per_dim_dataset(
        functional.bind(model.apply, params), configs.create_schedule(config), images, rng, max_value=max_value,
        prediction=config.diffusion.prediction, variance=config.diffusion.variance)


def refit_shape(config, params, steps, learning_rate, batch_size, seed=0):
    """A learned schedule fitted for low variance to a trained fixed-schedule VDM: (config, params)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from ddpm_jax import configs, data, vdm

    config = configs.from_json(configs.to_json(config))
    config.diffusion.vdm.schedule = "learned"
    model = configs.create_model(config)
    images = data.load_arrays(config.data.source, "train", data_dir=config.data.data_dir)
    x = jnp.asarray(data.to_float(images.images, images.max_value))
    init = model.init(jax.random.PRNGKey(seed), x[:1], jnp.zeros(1, jnp.int32))["params"]["learned"]
    params = {"params": {"unet": params["params"]["unet"], "learned": init}}
    optimizer = optax.adam(learning_rate)

    @jax.jit
    def step(p, opt_state, key):
        batch = x[jax.random.choice(jax.random.fold_in(key, 0), x.shape[0], (batch_size,))]
        _, grads = vdm.training_loss_and_grads(model, p, batch, jax.random.fold_in(key, 1))
        grads = jax.tree_util.tree_map_with_path(lambda path, g: g if vdm.is_schedule_shape(path) else 0 * g, grads)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    opt_state = optimizer.init(params)
    for i in range(steps):
        params, opt_state = step(params, opt_state, jax.random.fold_in(jax.random.PRNGKey(seed), i))
    return config, jax.tree_util.tree_map(np.asarray, params)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits", choices=DATASETS)
    parser.add_argument("--source", default=None, help="data source (default: the experiments'), e.g. npz:PATH")
    parser.add_argument("--num-test", type=int, default=None, help="the first N test images (default: all)")
    parser.add_argument("--eval-batch", type=int, default=64, help="per-device batch of the bits/dim evaluation")
    parser.add_argument("--runs-dir", default=os.path.join(common.REPO, "runs", "variational"))
    parser.add_argument("--only", default=",".join(RUNS), help="comma-separated names of RUNS")
    parser.add_argument("--steps", type=int, default=None, help="override train.num_steps (default: the configs')")
    parser.add_argument("--vdm-times", type=int, default=1000, help="stratified times per image for VDM's L_inf")
    parser.add_argument("--refit-steps", type=int, default=400, help="vdm_refit: Adam steps on the shape (0: skip)")
    parser.add_argument("--refit-lr", type=float, default=3e-2)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    from ddpm_jax import configs, data, train, vdm
    from ddpm_jax.models.unet import count_params

    results, test_splits = {}, {}  # test splits by (source, data_dir): the runs of a dataset share one
    for name in args.only.split(","):
        path, overrides = RUNS[name]
        path = path.format(dataset=args.dataset)
        overrides = (overrides + TRAINING[args.dataset]
                     + ([f"--config.train.num_steps={args.steps}"] if args.steps else [])
                     + ([f"--config.data.source={args.source}"] if args.source else []))
        config = configs.load_config(os.path.join(common.REPO, path), overrides)
        source, data_dir = config.data.source, config.data.data_dir
        if (source, data_dir) not in test_splits:
            test_splits[source, data_dir] = data.load_arrays(source, "test", data_dir=data_dir)
        test = test_splits[source, data_dir]
        images = test.images[:args.num_test]
        workdir = os.path.join(args.runs_dir, name if args.dataset == "digits" else f"{args.dataset}_{name}")
        t0 = time.perf_counter()
        out = train.train_and_evaluate(config, workdir, progress=False)
        train_seconds = time.perf_counter() - t0
        params = jax.tree_util.tree_map(np.asarray, out["state"].ema_params)
        t0 = time.perf_counter()
        bpd = evaluate(name, config, params, images, test.max_value, args.vdm_times, args.eval_batch)
        row = dict(config=path, overrides=overrides, steps=out["step"], steps_run=out["steps_run"],
                   train_seconds=round(train_seconds, 1), eval_seconds=round(time.perf_counter() - t0, 1),
                   params=count_params(params), bpd=bpd["mean"], bpd_stderr=bpd["stderr"], prior=bpd["prior_mean"],
                   decoder=bpd["decoder_mean"], diffusion=bpd["mean"] - bpd["prior_mean"] - bpd["decoder_mean"],
                   diffusion_var=bpd["diffusion_var"], num_examples=bpd["num_examples"])
        if configs.objective(config) == "vdm":
            model = configs.create_model(config)
            row["gamma_at_tenths"] = [round(float(g), 3) for g in vdm.bind_gamma(model, params)(
                jax.numpy.linspace(0.0, 1.0, 11))]
        results[name] = row
        print(f"{name}: {json.dumps(row)}", flush=True)
        if name == "vdm_fixed" and args.refit_steps:
            t0 = time.perf_counter()
            refit_config, refit_params = refit_shape(config, params, args.refit_steps, args.refit_lr,
                                                     config.train.batch_size)
            refit_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            bpd = evaluate("vdm_refit", refit_config, refit_params, images, test.max_value, args.vdm_times,
                           args.eval_batch)
            model = configs.create_model(refit_config)
            g = vdm.bind_gamma(model, refit_params)(jax.numpy.linspace(0.0, 1.0, 11))
            results["vdm_refit"] = dict(
                row, overrides=overrides + [f"refit {args.refit_steps} steps, lr {args.refit_lr}"],
                train_seconds=round(refit_seconds, 1), eval_seconds=round(time.perf_counter() - t0, 1),
                params=count_params(refit_params), bpd=bpd["mean"], bpd_stderr=bpd["stderr"],
                prior=bpd["prior_mean"], decoder=bpd["decoder_mean"],
                diffusion=bpd["mean"] - bpd["prior_mean"] - bpd["decoder_mean"], diffusion_var=bpd["diffusion_var"],
                gamma_at_tenths=[round(float(v), 3) for v in g])
            print(f"vdm_refit: {json.dumps(results['vdm_refit'])}", flush=True)

    print(f"\n{args.dataset} test split ({images.shape[0]} images), {common.cpu_model()}, {common.cores()} cores")
    print("| run | bits/dim | prior | decoder | diffusion | diffusion variance | train s | eval s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['bpd']:.3f} +- {r['bpd_stderr']:.3f} | {r['prior']:.4f} | {r['decoder']:.4f} | "
              f"{r['diffusion']:.3f} | {r['diffusion_var']:.1f} | {r['train_seconds']:.0f} | {r['eval_seconds']:.0f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(machine=common.machine_info(), results=results), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
