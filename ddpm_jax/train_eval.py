"""Evaluation during training (config.train.eval_every > 0): FID and IS of EMA samples, and the best checkpoint.

Every config.train.eval_every steps, and at the last step, the trainer draws config.train.eval_samples samples
from the EMA params with the config's sampler (config.sample, on the run's layout as its sample grids are), and the
feature network config.train.eval_feature_net ("classifier:DIR", "inception:WEIGHTS.npz" or "inception:packaged",
as `evaluate --feature-net`) scores them against the data's test split, whose reference statistics are computed once
and cached beside the workdir (`reference_stats`, shared with `evaluate`). FID and IS go to metrics.jsonl,
TensorBoard (eval/fid, eval/is) and the progress bar. Every evaluation draws its samples from the same key,
fold_in(PRNGKey(config.seed), 0), as `evaluate --seed SEED` does: differences between steps come from the params,
and the numbers are those of `evaluate --step N --num-samples EVAL_SAMPLES --seed SEED --bpd-examples 0`.

With config.train.keep_best, WORKDIR/best holds one checkpoint (the whole train state, as checkpoints/ does): that
of the lowest FID so far, its step, FID and measurement protocol saved inside it (`Checkpointer.save(info=...)`),
so the three are written atomically together. A resumed run continues from the FID saved there; one that measures
another way (another feature network, sample count or sampler) is refused rather than compared with it.
`sample --best` and `evaluate --best` use its EMA params.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable

import jax

from ddpm_jax import checkpoint, runs, sample_quality
from ddpm_jax.reference_stats import default_stats_dir, reference_features

BEST_DIR = runs.BEST_DIR
REFERENCE_SPLIT = "test"


class SampleQuality:
    """FID and IS of a run's EMA params (see the module docstring): reference statistics loaded (or computed and
    cached) when made; `image_shape` the model's samples, `max_value` the data's pixel grid; `layout` where to
    sample (None: the config's, as `runs.sample`)."""

    def __init__(self, config, workdir: str, image_shape, max_value: int, layout=None):
        t = config.train
        self.config, self.image_shape, self.max_value, self.layout = config, tuple(image_shape), max_value, layout
        self.num_samples = t.eval_samples
        self.network = sample_quality.resolve_feature_network(t.eval_feature_net)
        sample_quality.check_classifier_dataset(t.eval_feature_net, config.data.source)
        self.reference, _, _ = reference_features(
            self.network, config.data.source, REFERENCE_SPLIT, self.num_samples, default_stats_dir(workdir),
            data_dir=config.data.get("data_dir", None), image_size=config.data.get("image_size", None))

    def protocol(self) -> dict:
        """What the numbers depend on besides the params (JSON): feature network, samples, split, sampler, seed."""
        return json.loads(json.dumps(dict(
            feature_network=self.network.name, num_samples=self.num_samples, reference_split=REFERENCE_SPLIT,
            sampler=runs.sampler_options(self.config), seed=self.config.seed)))

    def __call__(self, params) -> dict:
        """dict(fid, is (when the network has logits), eval_seconds) of `params` (host arrays; every process
        takes part)."""
        start = time.perf_counter()
        samples = runs.sample(self.config, params, jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 0),
                              self.num_samples, self.image_shape, layout=self.layout)
        fake = sample_quality.sample_features(self.network, samples, self.max_value)
        values, _ = sample_quality.fid_and_inception_score(self.reference, fake)
        out = {k: float(values[k]) for k in ("fid", "is") if k in values}
        return dict(out, eval_seconds=time.perf_counter() - start)


class BestCheckpoint:
    """WORKDIR/best: the checkpoint of the lowest FID measured with `protocol` (see the module docstring)."""

    def __init__(self, workdir: str, protocol: dict):
        self.directory = os.path.join(workdir, BEST_DIR)
        self._ckpt = checkpoint.Checkpointer(self.directory, max_to_keep=1, async_save=False)
        self._protocol = protocol
        info = self._ckpt.info()
        if info is not None and info["protocol"] != protocol:
            self._ckpt.close()
            raise ValueError(f"{self.directory} holds the best checkpoint (step {info['step']}, FID {info['fid']:.4g}) "
                             f"measured as {info['protocol']}; this run measures as {protocol}, and FIDs measured "
                             "differently do not compare. Move that directory away, or measure as it was.")
        self.fid = math.inf if info is None else float(info["fid"])

    def offer(self, step: int, fid: float, state: Callable, data_state: dict) -> bool:
        """Save `state()` (the host train state) with `data_state` as the best checkpoint if `fid` is lower than
        the best so far; whether it was."""
        if not fid < self.fid:
            return False
        self._ckpt.save(step, state(), data_state, info=dict(step=int(step), fid=float(fid), protocol=self._protocol))
        self._ckpt.wait()
        self.fid = float(fid)
        return True

    def close(self) -> None:
        self._ckpt.close()


def read_best(workdir: str) -> dict | None:
    """The best checkpoint's info (step, fid, protocol), None without one."""
    if not os.path.isdir(os.path.join(workdir, BEST_DIR)):
        return None
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, BEST_DIR), max_to_keep=1, async_save=False)
    try:
        return ckpt.info()
    finally:
        ckpt.close()
