"""Training: the TrainState pytree, the pure data-parallel train step, and train_and_evaluate(config, workdir).

One call of the compiled step runs `steps_per_call` optimizer steps (a `lax.scan`): the loss, the gradients
averaged over the global batch, the optax update and the EMA update, all inside. How it runs on devices is the
run's `parallel` layout (config.train.parallelism): "pmap" (each device a slice of the batch, `lax.pmean` over the
data axis) or "sharded" (`jax.jit` over a mesh, the step seeing the global batch, params, EMA and optimizer state
split FSDP-style along config.train.mesh.fsdp); the step body is the same function for both. Randomness comes from fold_in(base key, step) and each example's global index, so a
resumed run replays the same draws and the result does not depend on the number of devices (dropout masks are
the exception: they are drawn per device, so with dropout > 0 only the distribution is layout-independent).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import time
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ddpm_jax import (checkpoint, config_schema, configs, data, latent, losses, parallel, posthoc_ema, runs,
                      train_eval, validation, vdm, viz)
from ddpm_jax.models import autoencoder as autoencoder_lib
from ddpm_jax.models import text as text_lib
from ddpm_jax.optimizers import create_optimizer  # noqa: F401 - public as train.create_optimizer
from ddpm_jax.keys import example_keys, per_example


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: step int32 [], params, ema_params, opt_state, rng (the base
    key, uint32 [2]), with importance sampling of t the loss history (else None), the frozen params the step reads
    but does not train (latent diffusion's first stage, dict(params=autoencoder params, scale=float32 []), which
    the train step encodes with; a distilled student's teacher, dict(teacher=params); else None), and with
    config.train.posthoc_ema the power-function EMAs of its sigma_rels, a tuple of params (else None;
    `posthoc_ema`)."""

    step: jnp.ndarray
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jnp.ndarray
    importance: losses.ImportanceState | None = None
    frozen: Any = None
    posthoc_ema: tuple | None = None


def create_train_state(config, model, optimizer, image_shape, frozen=None, params=None) -> TrainState:
    """A fresh TrainState on the host: `params` (a distilled student starts from its teacher's) or, if None, new
    ones from config.seed, EMA params equal to them; `frozen` as TrainState's. image_shape: the model's input (the
    latent shape for latent diffusion)."""
    init_rng, base_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    if params is None:
        params = _init_params(model, tuple(image_shape), init_rng)
    importance = (
        losses.ImportanceState.create(config.diffusion.num_timesteps)
        if config.diffusion.get("importance_sampling", False) else None
    )
    sigma_rels = posthoc_sigma_rels(config)
    return TrainState(
        step=jnp.int32(0), params=params, ema_params=params, opt_state=optimizer.init(params), rng=base_rng,
        importance=importance, frozen=frozen, posthoc_ema=tuple(params for _ in sigma_rels) if sigma_rels else None,
    )


def posthoc_sigma_rels(config) -> tuple[float, ...]:
    """config.train.posthoc_ema.sigma_rels, () when post-hoc EMA is off (the field None or absent)."""
    section = config.train.get("posthoc_ema", None)
    return () if section is None else tuple(float(s) for s in section.sigma_rels)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_params(model, image_shape, rng):
    x = jnp.zeros((1,) + image_shape, jnp.float32)
    y = None if model.null_label is None else jnp.asarray(model.null_label, jnp.int32)[None]  # the null condition
    return model.init({"params": rng}, x, jnp.zeros((1,), jnp.int32), y)


def ema_decay_at(step, decay: float, warmup: bool):
    """The EMA decay at `step`: `decay`, or min(decay, (1 + step) / (10 + step)) with warmup."""
    if not warmup:
        return jnp.float32(decay)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def train_step(state: TrainState, batch, *, model, optimizer, objective, ema_decay, ema_warmup, label_dropout=0.0,
               encoder=None, posthoc_gammas=(), axis=parallel.PER_DEVICE):
    """One optimizer step on this slice of the global batch: one device's under pmap (`axis` =
    parallel.PER_DEVICE), the whole batch under jit with shardings (parallel.GLOBAL).

    batch: dict(image float32 [B_dev, H, W, C], label int32 [B_dev] (class) or [B_dev, L] (prompt tokens) when
    the model is conditional; dropped to the model's `null_label` at rate `label_dropout`).
    objective: an `objectives` instance (its `loss_and_grads`). encoder: latent diffusion's
    `encoder(state.frozen, images, keys) -> latents` (`latent_encoder`), the model then denoising latents.
    posthoc_gammas: the exponents of state.posthoc_ema's power-function EMAs (`posthoc_ema.update`).
    Returns (new state, metrics averaged over the global batch).
    """
    step_rng = jax.random.fold_in(state.rng, state.step)
    example_rng, dropout_rng, label_rng = jax.random.split(step_rng, 3)
    device = axis.index()
    x0 = batch["image"]
    per_device = x0.shape[0]
    first_index = device * per_device
    if encoder is not None:
        x0 = encoder(state.frozen, x0, example_keys(jax.random.fold_in(step_rng, 3), per_device, first_index))
    labels = None
    if model.null_label is not None:
        labels = batch["label"]
        if label_dropout > 0:  # the null condition for classifier-free guidance (Ho & Salimans 2022)
            labels = drop_condition(labels, model.null_label, label_dropout,
                                    example_keys(label_rng, per_device, first_index))
    (loss, aux), grads = objective.loss_and_grads(
        model, state.params, x0, example_rng, labels=labels, rngs={"dropout": jax.random.fold_in(dropout_rng, device)},
        first_index=first_index, global_batch=per_device * axis.size(), importance=state.importance,
        frozen=state.frozen, ema_params=state.ema_params)
    new_state, grad_norm = _apply_gradients(state, grads, optimizer, ema_decay, ema_warmup, axis, posthoc_gammas)
    importance = state.importance
    if importance is not None:
        importance = importance.update(axis.gather(aux["t"]), axis.gather(aux["loss"]))
    metrics = {"loss": loss, "grad_norm": grad_norm}
    metrics.update({k: jnp.mean(aux[k]) for k in ("mse", "vlb") + vdm.METRICS if k in aux})
    metrics = axis.mean(metrics)
    return new_state.replace(importance=importance), metrics


def drop_condition(labels, null_label, rate: float, keys):
    """labels [B, ...] (class labels [B], prompt tokens [B, L]) with example i replaced by the null condition
    `null_label` (shape labels.shape[1:]) where bernoulli(keys[i], rate)."""
    drop = per_example(lambda k: jax.random.bernoulli(k, rate), keys)
    null = jnp.asarray(null_label, labels.dtype)
    return jnp.where(drop.reshape(drop.shape + (1,) * null.ndim), null, labels)


def _apply_gradients(state: TrainState, grads, optimizer, ema_decay, ema_warmup, axis,
                     posthoc_gammas=()) -> tuple[TrainState, jax.Array]:
    """(state after the optimizer and EMA updates with the gradients averaged over `axis`, their global norm); the
    power-function EMAs too, with exponents `posthoc_gammas`, when the state has them."""
    grads = axis.mean(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = ema_decay_at(state.step, ema_decay, ema_warmup)
    ema_params = jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
    posthoc = state.posthoc_ema
    if posthoc is not None:
        posthoc = posthoc_ema.update(posthoc, params, state.step + 1, posthoc_gammas)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads)))
    new_state = state.replace(step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state,
                              posthoc_ema=posthoc)
    return new_state, grad_norm


def autoencoder_step(state: TrainState, batch, *, model, optimizer, kl_weight, ema_decay, ema_warmup,
                     axis=parallel.PER_DEVICE):
    """One optimizer step of the first stage (`autoencoder.autoencoder_loss`) on this slice (as `train_step`'s).
    The posterior noise of example i is drawn from fold_in(fold_in(rng, step), i)."""
    x = batch["image"]
    keys = example_keys(jax.random.fold_in(state.rng, state.step), x.shape[0], axis.index() * x.shape[0])
    noise = per_example(lambda k: jax.random.normal(k, model.latent_shape(x.shape[1:])), keys)

    def loss_fn(params):
        return autoencoder_lib.autoencoder_loss(model, params, x, noise, kl_weight)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state, grad_norm = _apply_gradients(state, grads, optimizer, ema_decay, ema_warmup, axis)
    metrics = dict(loss=loss, grad_norm=grad_norm, mse=jnp.mean(aux["mse"]), kl=jnp.mean(aux["kl"]))
    return new_state, axis.mean(metrics)


def latent_encoder(model):
    """The train step's encoder of latent diffusion: (frozen, images [B, H, W, C], keys [B]) -> scale * z, z a
    posterior sample of `model` (an `Autoencoder`) with noise drawn per example from its key."""

    def encode(frozen, images, keys):
        noise = per_example(lambda k: jax.random.normal(k, model.latent_shape(images.shape[1:])), keys)
        return latent.encode(model, frozen["params"], frozen["scale"], images, noise)

    return encode


def make_multi_step(step_fn, steps: int, devices=None, *, layout=None):
    """`steps` train steps in one call, compiled for `layout` (default: `parallel.Pmap(devices)`, batch leaves
    [devices, steps, B_dev, ...]; `parallel.Sharded`: [steps, B, ...]) -> (state, metrics). step_fn must run its
    collectives over `layout.axis`.

    steps > 1 runs a `lax.scan` and averages the metrics over it (worth it on accelerators, where it saves
    dispatches; on XLA:CPU a gradient inside a scan runs ~20x slower, see benchmarks/). The state argument is
    donated: its buffers are reused for the new state.
    """

    def multi(state, batches):
        if steps == 1:
            return step_fn(state, jax.tree_util.tree_map(lambda x: x[0], batches))
        state, metrics = jax.lax.scan(step_fn, state, batches)
        return state, jax.tree_util.tree_map(jnp.mean, metrics)

    return (layout or parallel.Pmap(devices)).compile(multi)


class _Preemption:
    """Turns SIGTERM into a flag the loop checks, so it can checkpoint before exiting."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class Preempted(Exception):
    """Raised after a SIGTERM once the checkpoint of the current step is saved."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, devices=None, stop_after: int | None = None,
                       progress: bool = True) -> dict:
    """Train to config.train.num_steps in `workdir`, resuming from its newest checkpoint that restores.

    Before anything loads or compiles, refuses config values no run can mean (`config_schema.validate_config`), a
    workdir that is a file or not writable, and a workdir another train process holds (`runs.lock_workdir`).
    Logs to workdir/metrics.jsonl and TensorBoard (workdir/tensorboard), writes EMA sample grids to
    workdir/samples/, checkpoints to workdir/checkpoints/ every config.train.checkpoint_every steps and at the
    end (written in the background, see `checkpoint`); with config.train.posthoc_ema, snapshots of its EMAs to
    workdir/posthoc_ema/ (`posthoc_ema`); with config.train.eval_every, FID/IS of EMA samples to the logs and,
    with keep_best, the best checkpoint to workdir/best/ (`train_eval`). A SIGTERM checkpoints the current step,
    waits for the write and raises `Preempted`; a non-finite loss raises FloatingPointError and a failed
    checkpoint write `checkpoint.CheckpointWriteError`, both leaving the last good checkpoint as it was. A
    checkpoint that falls due while the previous one is still being written is skipped
    (config.train.checkpoint_if_busy = "skip", the default: training never waits for the disk) or waits for it
    ("wait"); the final and SIGTERM ones always wait.
    `stop_after` ends the call after that many steps without a final checkpoint, as a crash would (for tests).
    Returns dict(step, metrics, state, steps_run, checkpoints=dict(written, skipped), ...).
    """
    config_schema.validate_config(config)
    runs.prepare_workdir(workdir)
    lead = parallel.is_lead_process()
    with runs.lock_workdir(workdir) if lead else contextlib.nullcontext():
        return _train(config, workdir, devices, stop_after, progress and lead)


def _train(config, workdir, devices, stop_after, progress) -> dict:
    t_cfg = config.train
    # Several processes: all devices of all processes (each process feeding its local ones).
    layout = make_layout(config, devices)
    layout.check_batch(t_cfg.batch_size)
    lead = parallel.is_lead_process()
    arrays = data.load_arrays(config.data.source, "train", **configs.data_options(config))
    if config.model.get("text", None) is not None:
        arrays = _tokenize_captions(config, arrays)
    runs.save_or_check_config(workdir, config)

    pipeline_kwargs = dict(
        global_batch_size=t_cfg.batch_size, seed=config.seed, random_flip=config.data.random_flip,
        data_dir=config.data.get("data_dir", None), num_devices=len(layout.local_devices),
    )
    image_shape = arrays.images.shape[1:]
    model = configs.create_model(config)
    if model.num_classes is not None:
        if arrays.labels is None:
            raise ValueError(f"config.model.num_classes is set but {config.data.source!r} has no labels.")
        validation.check_labels(arrays.labels, model.num_classes, f"{config.data.source!r} split 'train'")
    frozen = None
    autoencoder = configs.create_autoencoder(config)
    if autoencoder is not None:  # latent diffusion: stage 1, the autoencoder (trained here unless done)
        first = _train_autoencoder(config, workdir, autoencoder, arrays, layout, stop_after, progress)
        if "report" not in first:
            return first
        frozen = dict(params=first["params"], scale=np.float32(first["report"]["scale_factor"]))
        image_shape = autoencoder.latent_shape(image_shape)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=t_cfg.keep_checkpoints,
                                   async_save=t_cfg.get("async_checkpointing", True))
    if config.get("distill", None) is not None:
        state = _student_state(config, model, image_shape, resuming=ckpt.latest_step() is not None)
    else:
        state = create_train_state(config, model, create_optimizer(config), image_shape, frozen)
    data_state = None
    if ckpt.latest_step() is not None:
        state, data_state = _restore(ckpt, state, workdir)
    pipeline = data.make_iterator(arrays, state=data_state, **pipeline_kwargs)
    step_config = _step_config_json(config)
    step = int(state.step)
    end = t_cfg.num_steps if stop_after is None else min(t_cfg.num_steps, step + stop_after)

    codec = None if frozen is None else latent.Codec(autoencoder, frozen["params"], float(frozen["scale"]))

    # Sharded runs sample on their mesh; pmap runs on all devices, whatever `devices` (as they always did).
    sample_layout = layout if isinstance(layout, parallel.Sharded) else None

    def write_samples(placed, step, data_state):
        _write_samples(config, layout.host(placed.ema_params), step, image_shape, workdir if lead else None, codec,
                       sample_layout)

    periodic = [Periodic(t_cfg.sample_every, write_samples)]
    sigma_rels = posthoc_sigma_rels(config)
    if sigma_rels:
        periodic.append(Periodic(t_cfg.posthoc_ema.snapshot_every, functools.partial(
            _write_snapshot, layout, workdir if lead else None, sigma_rels)))
    with contextlib.ExitStack() as stack:
        if t_cfg.get("eval_every", 0):
            quality = train_eval.SampleQuality(config, workdir, image_shape, arrays.max_value, sample_layout)
            best = None
            if t_cfg.get("keep_best", False):
                best = train_eval.BestCheckpoint(workdir, quality.protocol())
                stack.callback(best.close)
            periodic.append(Periodic(t_cfg.eval_every, functools.partial(_evaluate, layout, quality, best)))
        placed, metrics, last, checkpoints = _loop(
            layout, layout.put_state(state), pipeline, ckpt, lambda k: _compiled_steps(step_config, layout, k),
            t_cfg, step=step, end=end, writer=_MetricWriter(workdir) if lead else None, progress=progress,
            periodic=periodic, workdir=workdir)
    state = layout.host(placed)
    return dict(step=last, metrics=metrics, state=state, steps_run=last - step, checkpoints=checkpoints)


def _student_state(config, model, image_shape, resuming: bool) -> TrainState:
    """A distilled student's first state (config.distill, `distill_run`): its teacher's EMA params of
    config.distill.teacher_step, frozen (TrainState.frozen["teacher"]) and the student's start. When `resuming`,
    only the state's structure: the checkpoint holds the teacher, so a student resumes without its teacher's
    workdir."""
    optimizer = create_optimizer(config)
    if resuming:
        like = create_train_state(config, model, optimizer, image_shape)
        return like.replace(frozen=dict(teacher=like.params))
    teacher = checkpoint.restore_params(config.distill.teacher, step=config.distill.teacher_step)[0]
    return create_train_state(config, model, optimizer, image_shape, dict(teacher=teacher), teacher)


class Periodic(NamedTuple):
    """Work the training loop does every `every` steps (0: never) and at the last step: fn(placed state, step,
    data_state) with data_state() the pipeline's position; a dict it returns is logged (metrics.jsonl, TensorBoard's
    eval/ section) and shown in the progress bar."""

    every: int
    fn: Callable


def _write_snapshot(layout, workdir, sigma_rels, placed, step, data_state):
    """The post-hoc EMA snapshot of `step` (every process takes part in the copy; written where workdir is given)."""
    emas = layout.host(placed.posthoc_ema)
    if workdir is not None:
        posthoc_ema.write_snapshot(workdir, step, sigma_rels, emas)


def _evaluate(layout, quality, best, placed, step, data_state) -> dict:
    """FID and IS of the EMA params (`train_eval.SampleQuality`), offered to the best checkpoint when kept."""
    out = quality(layout.host(placed.ema_params))
    if best is not None:
        best.offer(step, out["fid"], lambda: layout.host(placed), data_state())
    return out


def _tokenize_captions(config, arrays: data.Arrays) -> data.Arrays:
    """The arrays with labels = the captions' tokens [N, L]; config.model.text.vocabulary filled in from the
    captions when empty (the saved config then keeps it)."""
    if arrays.captions is None:
        raise ValueError(f"config.model.text needs captioned data; {config.data.source!r} has no captions (use a "
                         "'pairs:SOURCE' source).")
    if not config.model.text.get("vocabulary", None):
        config.model.text.vocabulary = text_lib.build_vocabulary(arrays.captions)
    return arrays._replace(labels=configs.tokenizer(config).encode(arrays.captions))


def _train_autoencoder(config, workdir, model, arrays, layout, stop_after, progress) -> dict:
    """Stage 1 of latent diffusion in workdir/autoencoder/: train (or resume) to config.autoencoder.train.num_steps,
    then write latent.json (scale factor from the train split's latents, reconstruction error on the test split).
    Returns dict(params=EMA params, report=latent.json's contents), or (stopped early) dict(step, metrics, ...)."""
    t_cfg = configs.autoencoder_train_config(config)
    directory = os.path.join(workdir, latent.AUTOENCODER_DIR)
    report = latent.read_report(workdir)
    ckpt = checkpoint.Checkpointer(os.path.join(directory, "checkpoints"), max_to_keep=t_cfg.keep_checkpoints,
                                   async_save=t_cfg.get("async_checkpointing", True))
    init_rng, base_rng = jax.random.split(jax.random.PRNGKey(config.seed + 1))
    params = jax.jit(model.init)(init_rng, jnp.zeros((1,) + arrays.images.shape[1:]),
                                 jnp.zeros((1,) + model.latent_shape(arrays.images.shape[1:])))
    optimizer = create_optimizer(ml_collections.ConfigDict(dict(train=t_cfg)))
    state = TrainState(step=jnp.int32(0), params=params, ema_params=params, opt_state=optimizer.init(params),
                       rng=base_rng)
    data_state = None
    if ckpt.latest_step() is not None:
        state, data_state = _restore(ckpt, state, directory)
    step = int(state.step)
    if report is not None and step >= t_cfg.num_steps:
        ckpt.close()
        return dict(params=state.ema_params, report=report)
    pipeline = data.make_iterator(arrays, state=data_state, global_batch_size=t_cfg.batch_size, seed=config.seed,
                                  random_flip=config.data.random_flip, num_devices=len(layout.local_devices))
    end = t_cfg.num_steps if stop_after is None else min(t_cfg.num_steps, step + stop_after)
    steps = functools.partial(_compiled_autoencoder_steps, _step_config_json(config), layout)
    start = time.perf_counter()
    placed, metrics, last, _ = _loop(
        layout, layout.put_state(state), pipeline, ckpt, steps, t_cfg, step=step, end=end,
        writer=_MetricWriter(directory) if parallel.is_lead_process() else None, progress=progress,
        periodic=(), workdir=directory)
    state = layout.host(placed)
    if last < t_cfg.num_steps:
        return dict(step=last, metrics=metrics, state=state, steps_run=last - step)
    report = _autoencoder_report(config, model, state.ema_params, arrays, time.perf_counter() - start)
    if parallel.is_lead_process():
        latent.write_report(workdir, report)
    return dict(params=state.ema_params, report=report)


def _autoencoder_report(config, model, params, arrays, seconds) -> dict:
    """latent.json: the scale factor (1 / std of the train split's posterior samples, noise from PRNGKey(seed)),
    the latent shape, and the test split's reconstruction error (of the posterior means) in [-1, 1] units."""
    images = data.to_float(arrays.images, arrays.max_value)
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(config.seed),
                                         (len(images),) + model.latent_shape(images.shape[1:])))
    unit = latent.Codec(model, params, 1.0)
    scale = latent.scale_factor(unit.encode(images, noise))
    test = data.load_arrays(config.data.source, "test", data_dir=config.data.get("data_dir", None))
    test_images = data.to_float(test.images, test.max_value)
    squared = np.square(latent.Codec(model, params, scale).decode(unit.encode(test_images) * scale) - test_images)
    mse = float(np.mean(squared))
    return dict(scale_factor=scale, latent_shape=list(model.latent_shape(images.shape[1:])),
                test_reconstruction_mse=mse, test_reconstruction_psnr_db=float(10 * np.log10(4.0 / mse)),
                test_examples=len(test_images), train_seconds=seconds)


def _loop(layout, placed, pipeline, ckpt, compiled, t_cfg, *, step, end, writer, progress, periodic, workdir):
    """Run the compiled steps (`compiled(k)`: k steps per call) on the state `placed` by `layout` from `step` to
    `end`: log to `writer`, do the `periodic` work (`Periodic`; its time is left out of images/s), checkpoint
    every t_cfg.checkpoint_every steps, at t_cfg.num_steps and on SIGTERM (then raise `Preempted`). A checkpoint
    due while the previous write is still in flight is skipped (t_cfg.checkpoint_if_busy = "skip") or waits for it
    ("wait"); the final and the SIGTERM checkpoints always wait. Closes the pipeline, writer and checkpointer.
    Returns (placed state, last metrics, last step, dict(written=..., skipped=...) checkpoints)."""
    bar = _progress_bar(step, t_cfg.num_steps, progress)
    metrics, timer, shown = {}, _Timer(), {}
    counts = dict(written=0, skipped=0)
    try:
        with _Preemption() as preemption:
            while step < end:
                k = min(t_cfg.steps_per_call, end - step)
                batches = layout.put_batches([next(pipeline) for _ in range(k)])
                placed, metrics = compiled(k)(placed, batches)
                metrics = layout.scalars(metrics)
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise FloatingPointError(
                        f"non-finite training metrics at step {step + k}: {metrics}. Stopping; "
                        f"{_last_checkpoint(ckpt)}. Lower the learning rate or enable gradient clipping "
                        "(config.train.grad_clip)."
                    )
                step += k
                timer.record(k * t_cfg.batch_size)
                bar.update(k)
                if writer and (step % t_cfg.log_every < k or step == end):
                    writer.write(step, dict(metrics, images_per_sec=timer.rate(),
                                            compile_seconds=timer.first_call_seconds))
                started = time.perf_counter()
                for work in periodic:
                    if work.every and (step % work.every < k or step == t_cfg.num_steps):
                        out = work.fn(placed, step, pipeline.state)
                        if out:
                            shown.update({name: f"{v:.4g}" for name, v in out.items() if name != "eval_seconds"})
                            if writer:
                                writer.write(step, out, section="eval")
                timer.exclude(time.perf_counter() - started)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", img_s=f"{timer.rate():.0f}", **shown)
                final = step == t_cfg.num_steps or preemption.requested
                if final or step % t_cfg.checkpoint_every < k:
                    if final or t_cfg.get("checkpoint_if_busy", "skip") == "wait" or not ckpt.busy():
                        ckpt.save(step, layout.host(placed), pipeline.state())
                        counts["written"] += 1
                    else:
                        counts["skipped"] += 1
                if preemption.requested:
                    ckpt.wait()
                    raise Preempted(f"SIGTERM: checkpoint of step {step} saved in {workdir}; rerun to resume.")
    finally:
        bar.close()
        pipeline.close()
        if writer:
            writer.close()
        ckpt.close()  # waits for the write in flight; raises CheckpointWriteError if it failed
    return placed, metrics, step, counts


def _restore(ckpt, like, workdir):
    """(state, data_state) of the newest checkpoint that restores; newer unreadable ones are set aside so this
    run can write their steps again."""
    try:
        state, data_state = ckpt.restore(like)
    except ValueError as e:
        raise ValueError(
            f"no checkpoint in {workdir!r} restores. If the config changed, a checkpoint does not fit this config's "
            "train state (was the optimizer, gradient clipping or importance sampling changed?): use a new "
            f"--workdir. {str(e)[:800]}"
        ) from None
    ckpt.set_aside_newer_than(int(state.step))
    return jax.tree_util.tree_map(jnp.asarray, state), data_state


def _last_checkpoint(ckpt) -> str:
    step = ckpt.latest_step()
    return "no checkpoint was written yet" if step is None else f"the last good checkpoint (step {step}) is intact"


# Fields that do not change the compiled step (so runs differing only in them share one compilation).
_NOT_IN_STEP = ("seed", "sample", "train.log_every", "train.checkpoint_every", "train.sample_every",
                "train.keep_checkpoints", "train.async_checkpointing", "train.checkpoint_if_busy",
                "train.posthoc_ema.snapshot_every", "train.eval_every", "train.eval_samples", "train.eval_feature_net",
                "train.keep_best")


def _step_config_json(config) -> str:
    d = json.loads(configs.to_json(config))
    for dotted in _NOT_IN_STEP:
        *path, last = dotted.split(".")
        (functools.reduce(lambda node, key: node.get(key) or {}, path, d)).pop(last, None)
    return json.dumps(d, sort_keys=True)


make_layout = configs.create_layout  # the run's device layout (config.train.parallelism, config.train.mesh)


def make_train_step(config: ml_collections.ConfigDict, devices=None, steps: int = 1):
    """The compiled train step of `config` as training runs it, on its layout (`make_layout`) over `devices`, of
    `steps` optimizer steps per call: (placed TrainState, batches) -> (state, metrics), the state donated. Under
    pmap the state is `parallel.replicate`d and batches are [devices, steps, B_dev, ...]; sharded, see
    `parallel.Sharded` (`put_state`, `put_batches`). Compiled once per process for equal settings (fields that do
    not enter the step, such as logging and checkpoint intervals, do not count)."""
    return _compiled_steps(_step_config_json(config), make_layout(config, devices), steps)


@functools.lru_cache(maxsize=8)
def _compiled_steps(step_config: str, layout, steps: int):
    """The `steps`-step function for a config (as `_step_config_json`) on `layout`, compiled once per process."""
    config = configs.from_json(step_config)
    t_cfg = config.train
    autoencoder = configs.create_autoencoder(config)
    step_fn = functools.partial(
        train_step, model=configs.create_model(config), optimizer=create_optimizer(config),
        objective=configs.create_objective(config), ema_decay=t_cfg.ema_decay, ema_warmup=t_cfg.ema_warmup,
        label_dropout=t_cfg.get("label_dropout", 0.0),
        encoder=None if autoencoder is None else latent_encoder(autoencoder),
        posthoc_gammas=tuple(float(g) for g in posthoc_ema.std_to_exp(posthoc_sigma_rels(config))), axis=layout.axis,
    )
    return make_multi_step(step_fn, steps, layout=layout)


@functools.lru_cache(maxsize=4)
def _compiled_autoencoder_steps(step_config: str, layout, steps: int):
    """The `steps`-step function of the first stage of a latent config on `layout`, compiled once per process."""
    config = configs.from_json(step_config)
    t_cfg = configs.autoencoder_train_config(config)
    step_fn = functools.partial(
        autoencoder_step, model=configs.create_autoencoder(config),
        optimizer=create_optimizer(ml_collections.ConfigDict(dict(train=t_cfg))),
        kl_weight=config.autoencoder.kl_weight, ema_decay=t_cfg.ema_decay, ema_warmup=t_cfg.ema_warmup,
        axis=layout.axis)
    return make_multi_step(step_fn, steps, layout=layout)


def _write_samples(config, ema, step, image_shape, workdir, codec=None, layout=None):
    """Samples of the EMA params `ema` (host arrays; every process takes part in sampling; a text model's are
    unconditional, of the empty prompt) on `layout` (None: the config's, `runs.sample`), decoded by `codec` for
    latent diffusion; the grid is written where workdir is given."""
    images = runs.sample(config, ema, jax.random.PRNGKey(config.seed + 1), config.sample.num_images, image_shape,
                         layout=layout)
    if codec is not None:
        images = codec.decode(images)
    if workdir is None:
        return
    viz.save_grid(images, os.path.join(workdir, "samples", f"step_{step:07d}.png"),
                  upscale=max(1, 128 // images.shape[1]))


class _Timer:
    """Images per second over the steady state (the first call, which compiles, is timed apart)."""

    def __init__(self):
        self.last = time.perf_counter()
        self.first_call_seconds = None
        self.images = 0
        self.seconds = 0.0

    def record(self, images: int):
        now = time.perf_counter()
        if self.first_call_seconds is None:
            self.first_call_seconds = now - self.last
        else:
            self.images += images
            self.seconds += now - self.last
        self.last = now

    def exclude(self, seconds: float):
        """Leave `seconds` just spent on other work out of the next interval."""
        self.last += seconds

    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


class _MetricWriter:
    """metrics.jsonl (appended across restarts) and TensorBoard scalars."""

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter

        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict, section: str = "train"):
        """One line of metrics.jsonl; TensorBoard scalars named <section>/<metric>."""
        self._jsonl.write(json.dumps(dict(step=step, time=time.time(), **metrics)) + "\n")
        self._jsonl.flush()
        for name, value in metrics.items():
            if value is not None:
                self._tb.add_scalar(f"{section}/{name}", value, step)
        self._tb.flush()

    def close(self):
        self._jsonl.close()
        self._tb.close()


def _progress_bar(step: int, total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=step, disable=not enabled, unit="step", dynamic_ncols=True, mininterval=1.0)
