"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", EDM2,
Sec. 3 and App. C; the reference code is NVlabs/edm2 training/phema.py, whose math this follows).

A power-function EMA averages the params of steps 1..t with a density proportional to tau^gamma on [0, t]: its
profile p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1). Its width relative to t, sigma_rel, is a
function of gamma alone (`exp_to_std`, `std_to_exp`). Training tracks a few such EMAs (`update`, inside the
compiled step) and saves snapshots of them every so many steps (`write_snapshot`); afterwards the EMA of any
other sigma_rel is the combination of snapshots whose profiles fit its profile best in L2 (`solve_coefficients`),
and `reconstruct` builds its params:

    python -m ddpm_jax ema --workdir runs/x --sigma-rel 0.07      # runs/x/posthoc_ema/sigma_rel_0.07_step_N.npz
    python -m ddpm_jax sample --workdir runs/x --sigma-rel 0.07   # samples from it (evaluate takes it too)

Time is counted in optimizer steps (EDM2 counts images; with a constant batch the two differ by a factor that
sigma_rel, a ratio, does not see). The EMA after step t is a sum over steps i <= t of theta_i weighted by the
profile's integral over (i - 1, i], so the continuous-time inner products below are exact for it.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.checkpoint import pack, unpack
from ddpm_jax.files import atomic_write
from ddpm_jax.validation import check_number

SNAPSHOT_DIR = "posthoc_ema"  # under the workdir: snapshots/<step>.npz and the reconstructions
# sigma_rel in (0, MAX_SIGMA_REL): reconstruct_phema.py's bound (sigma_rel = 1/sqrt(12) ~ 0.2887 is gamma = 0,
# the flat profile; above, gamma < 0 weighs the earliest params most).
MAX_SIGMA_REL = 0.289
# A reconstruction is refused when its profile is off by more than this (relative L2 norm, `solve_coefficients`).
MAX_PROFILE_ERROR = 0.1


# ---------------------------------------------------------------- the power-function profile


def exp_to_std(gamma):
    """sigma_rel of the power-function profile of exponent gamma (EDM2 eq. 123): sqrt((g + 1) / ((g + 2)^2 (g + 3))),
    float64."""
    gamma = np.float64(gamma)
    return np.sqrt((gamma + 1) / (gamma + 2) ** 2 / (gamma + 3))


def std_to_exp(sigma_rel):
    """The exponent gamma of sigma_rel (EDM2 eq. 126, Algorithm 2): the largest real root of
    g^3 + 7 g^2 + (16 - s^-2) g + (12 - s^-2), s = sigma_rel; float64 of sigma_rel's shape."""
    sigma_rel = np.float64(sigma_rel)
    inv = sigma_rel.reshape(-1) ** -2
    return np.float64([np.roots([1, 7, 16 - c, 12 - c]).real.max() for c in inv]).reshape(sigma_rel.shape)


def check_sigma_rel(name: str, value) -> None:
    """ValueError unless `value` is a number in (0, MAX_SIGMA_REL)."""
    check_number(name, value, 0.0, MAX_SIGMA_REL, low_open=True, high_open=True)


def update(emas: Sequence[Any], params, t, gammas: Sequence[float]) -> tuple:
    """The power-function EMAs of exponents `gammas` after step t (int32 [], >= 1; the params of that step `params`):
    ema <- beta ema + (1 - beta) params with beta = (1 - 1/t)^(gamma + 1) (EDM2 eq. 127). beta and 1 - beta are
    computed as exp and -expm1 of (gamma + 1) log1p(-1/t), accurate in float32 for large t; at t = 1 the EMA is the
    params. Pure, for the compiled train step."""
    log_ratio = jnp.log1p(-1.0 / jnp.asarray(t, jnp.float32))
    new = []
    for ema, gamma in zip(emas, gammas):
        beta, weight = jnp.exp((gamma + 1.0) * log_ratio), -jnp.expm1((gamma + 1.0) * log_ratio)
        new.append(jax.tree_util.tree_map(lambda e, p: beta * e + weight * p, ema, params))
    return tuple(new)


def profile_inner_products(a_step, a_sigma_rel, b_step, b_sigma_rel):
    """<p_a, p_b> = integral over tau of the two power-function profiles (EDM2 eq. 151, Algorithm 3):
    (ga + 1)(gb + 1) min(ta, tb)^(ga + gb + 1) / ((ga + gb + 1) ta^(ga + 1) tb^(gb + 1)), broadcast, float64."""
    a_step, b_step = np.float64(a_step), np.float64(b_step)
    a_exp, b_exp = std_to_exp(a_sigma_rel), std_to_exp(b_sigma_rel)
    ratio_exp = np.where(a_step < b_step, b_exp, -a_exp)
    num = (a_exp + 1) * (b_exp + 1) * (a_step / b_step) ** ratio_exp
    return num / ((a_exp + b_exp + 1) * np.maximum(a_step, b_step))


def solve_coefficients(in_steps, in_sigma_rels, out_step, out_sigma_rels):
    """(coefficients [in, out], profile errors [out]) of the least-squares reconstruction of the EMAs
    (out_step, out_sigma_rels) from the EMAs (in_steps, in_sigma_rels) (EDM2 Algorithm 3): solve A x = b for the
    inner products A = <p_in, p_in>, b = <p_in, p_out>, then scale each column to sum to 1. The error of a column
    is ||sum_i x_i p_i - p_out|| / ||p_out||, the relative L2 distance between the profiles."""
    in_steps, in_sigma_rels = (np.float64(x).reshape(-1) for x in np.broadcast_arrays(in_steps, in_sigma_rels))
    out_step, out_sigma_rels = (np.float64(x).reshape(-1) for x in np.broadcast_arrays(out_step, out_sigma_rels))
    gram = profile_inner_products(in_steps[:, None], in_sigma_rels[:, None], in_steps[None], in_sigma_rels[None])
    cross = profile_inner_products(in_steps[:, None], in_sigma_rels[:, None], out_step[None], out_sigma_rels[None])
    x = np.linalg.solve(gram, cross)
    x = x / np.sum(x, axis=0)
    norm2 = profile_inner_products(out_step, out_sigma_rels, out_step, out_sigma_rels)
    residual2 = np.einsum("io,ij,jo->o", x, gram, x) - 2 * np.sum(x * cross, axis=0) + norm2
    return x, np.sqrt(np.maximum(residual2, 0.0) / norm2)


def supported_range(in_steps, in_sigma_rels, out_step, max_error: float = MAX_PROFILE_ERROR):
    """(lowest, highest) sigma_rel that the EMAs (in_steps, in_sigma_rels) reconstruct at out_step within
    `max_error` (`solve_coefficients`), on a log grid of 400 values in (0.001, MAX_SIGMA_REL); None if none."""
    grid = np.geomspace(1e-3, MAX_SIGMA_REL, 402)[1:-1]
    _, errors = solve_coefficients(in_steps, in_sigma_rels, out_step, grid)
    good = grid[errors <= max_error]
    return (float(good.min()), float(good.max())) if len(good) else None


# ---------------------------------------------------------------- snapshots and reconstructions


class Snapshot(NamedTuple):
    """A snapshot file of the power-function EMAs at a step (`write_snapshot`)."""

    step: int
    path: str


def snapshot_path(workdir: str, step: int) -> str:
    return os.path.join(workdir, SNAPSHOT_DIR, "snapshots", f"{step:09d}.npz")


def reconstruction_path(workdir: str, sigma_rel: float, step: int) -> str:
    return os.path.join(workdir, SNAPSHOT_DIR, f"sigma_rel_{sigma_rel:g}_step_{step}.npz")


def _write_tree(path: str, tree, **meta) -> None:
    """`tree`'s arrays packed (`checkpoint.pack`) with `meta` (arrays, or a dict as JSON) into one .npz, atomically."""
    buffers, layout = pack(tree)
    with atomic_write(path, "wb") as f:
        np.savez(f, layout=np.array(json.dumps(layout)), **{f"buffer_{k}": v for k, v in buffers.items()}, **meta)


def _read_tree(path: str) -> tuple[Any, dict]:
    """(tree as nested dicts, the other arrays) of a file `_write_tree` wrote."""
    with np.load(path, allow_pickle=False) as f:
        buffers = {k.removeprefix("buffer_"): f[k] for k in f.files if k.startswith("buffer_")}
        meta = {k: f[k] for k in f.files if k != "layout" and not k.startswith("buffer_")}
        return unpack(buffers, json.loads(str(f["layout"]))), meta


def write_snapshot(workdir: str, step: int, sigma_rels: Sequence[float], emas: Sequence[Any]) -> str:
    """Save the power-function EMAs `emas` (host arrays) of `sigma_rels` at `step` as one .npz, atomically; returns
    its path (WORKDIR/posthoc_ema/snapshots/<step>.npz). Snapshots are kept: a rerun of the step overwrites its own."""
    path = snapshot_path(workdir, step)
    _write_tree(path, list(emas), step=np.int64(step), sigma_rels=np.float64(sigma_rels))
    return path


def snapshots(workdir: str) -> list[Snapshot]:
    """The snapshots in a workdir, by step."""
    found = []
    for path in glob.glob(os.path.join(workdir, SNAPSHOT_DIR, "snapshots", "*.npz")):
        if re.fullmatch(r"\d{9}\.npz", os.path.basename(path)):
            found.append(Snapshot(int(os.path.basename(path)[:9]), path))
    return sorted(found)


def reconstruct(workdir: str, sigma_rel: float, *, step: int | None = None,
                max_error: float | None = None) -> tuple[Any, dict]:
    """(params, info) of the power-function EMA of `sigma_rel` at `step` (default: the newest snapshot's; it must be
    a snapshot's step), the least-squares combination (`solve_coefficients`) of the EMAs in every snapshot up to
    `step`, accumulated in float64. ValueError when there is no snapshot, or when the snapshots cannot
    reconstruct `sigma_rel` within `max_error` (None: MAX_PROFILE_ERROR; the message gives the range they can).
    info: sigma_rel, step, profile_error, and per input EMA its snapshot step, sigma_rel and coefficient."""
    check_sigma_rel("sigma_rel", sigma_rel)
    max_error = MAX_PROFILE_ERROR if max_error is None else max_error
    check_number("max_error", max_error, 0.0, low_open=True)
    found = snapshots(workdir)
    if not found:
        raise ValueError(f"no post-hoc EMA snapshots in {os.path.join(workdir, SNAPSHOT_DIR, 'snapshots')}: train "
                         "with config.train.posthoc_ema = dict(sigma_rels=(0.05, 0.1), snapshot_every=N) to write "
                         "them (a run trained without it cannot be reconstructed).")
    steps = [s.step for s in found]
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ValueError(f"no post-hoc EMA snapshot of step {step} in {workdir!r}: a reconstruction is made at a "
                         f"snapshot's step; steps there: {', '.join(map(str, steps))}.")
    found = [s for s in found if s.step <= step]
    sigma_rels = []
    for s in found:
        with np.load(s.path, allow_pickle=False) as f:
            sigma_rels.append(np.asarray(f["sigma_rels"], np.float64))
    in_steps = np.concatenate([np.full(len(r), s.step) for s, r in zip(found, sigma_rels)])
    in_sigmas = np.concatenate(sigma_rels)
    coefficients, errors = solve_coefficients(in_steps, in_sigmas, step, sigma_rel)
    if errors[0] > max_error:
        span = supported_range(in_steps, in_sigmas, step, max_error)
        where = (f"they give sigma_rel in [{span[0]:.3f}, {span[1]:.3f}]" if span else "they give none")
        raise ValueError(
            f"sigma_rel {sigma_rel} is outside what the post-hoc EMA snapshots of {workdir!r} support: the "
            f"{len(found)} snapshot(s) up to step {step} (of sigma_rels {sorted(set(in_sigmas.tolist()))}) fit its "
            f"EMA profile with a relative L2 error of {errors[0]:.3f}, above the {max_error} accepted; {where}. Pick "
            "one there, or snapshot more often (config.train.posthoc_ema.snapshot_every).")
    total, i = None, 0
    for s, rels in zip(found, sigma_rels):  # one snapshot in memory at a time
        emas, _ = _read_tree(s.path)
        for j in range(len(rels)):
            c = coefficients[i, 0]
            term = jax.tree_util.tree_map(lambda x: c * np.float64(x), emas[str(j)])
            total = term if total is None else jax.tree_util.tree_map(np.add, total, term)
            i += 1
    params = jax.tree_util.tree_map(lambda x, like: x.astype(like.dtype), total, emas["0"])
    info = dict(sigma_rel=float(sigma_rel), step=int(step), profile_error=float(errors[0]),
                inputs=[dict(step=int(t), sigma_rel=float(r), coefficient=float(c))
                        for t, r, c in zip(in_steps, in_sigmas, coefficients[:, 0])])
    return params, info


def export(workdir: str, sigma_rel: float, *, step: int | None = None,
           max_error: float | None = None) -> tuple[str, dict]:
    """`reconstruct` and write the params to `reconstruction_path` (atomically), where `load_reconstruction` (and
    so `sample --sigma-rel`, `evaluate --sigma-rel`) finds them. Returns (path, info)."""
    params, info = reconstruct(workdir, sigma_rel, step=step, max_error=max_error)
    path = reconstruction_path(workdir, sigma_rel, info["step"])
    _write_tree(path, params, info=np.array(json.dumps(info)))
    return path, info


def load_reconstruction(workdir: str, sigma_rel: float, step: int | None = None) -> tuple[Any, int]:
    """(params, step) written by `export` for `sigma_rel` at `step` (default: the newest snapshot's step).
    FileNotFoundError naming the `ema` command when it was not made."""
    check_sigma_rel("sigma_rel", sigma_rel)
    found = snapshots(workdir)
    if not found:
        raise FileNotFoundError(f"no post-hoc EMA snapshots in {workdir!r}: the run was not trained with "
                                "config.train.posthoc_ema, so it has no sigma_rel to choose.")
    at = found[-1].step if step is None else step
    path = reconstruction_path(workdir, sigma_rel, at)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no post-hoc EMA of sigma_rel {sigma_rel} at step {at} in {workdir!r} ({path}): "
                                f"make it with `python -m ddpm_jax ema --workdir {workdir} --sigma-rel {sigma_rel}"
                                f"{'' if step is None else f' --step {step}'}`.")
    params, _ = _read_tree(path)
    return params, at
