"""The pictures a diffusion tutorial asks its reader to look at: sample grids, the forward process under
several schedules, a reverse-process trajectory, and the schedules themselves.

Images are NHWC float in [-1, 1] with C = 1 (grayscale) or 3 (RGB); numpy or jax arrays both work. Grids
keep the channel count: a grayscale batch gives a [H', W', 1] grid and a grayscale PNG ("L"), an RGB batch a
[H', W', 3] grid and an RGB PNG. Nothing here is compiled or differentiated: these are host-side numpy
functions, called on results that have already been computed. Every image is a PNG under a .png name, written
atomically (`files.atomic_write`): a killed process leaves no truncated image behind.

Plots use matplotlib's object API (`matplotlib.figure.Figure` rendered by the Agg canvas), never pyplot, so
importing this module selects no backend, needs no display and leaves no global figure state behind.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax import diffusion, schedules
from ddpm_jax.data import to_float, to_uint8
from ddpm_jax.files import atomic_write
from ddpm_jax.reverse_loop import Trajectory

# A schedule to draw: a name accepted by `schedules.get_betas`, or a (label, betas [T]) pair for anything else
# (e.g. ("linear, zero terminal SNR", get_betas("linear", T, zero_terminal_snr=True))).
ScheduleSpec = Union[str, tuple]

_CHANNELS = (1, 3)


# ---------------------------------------------------------------- checks


def _check_images(images, ndim: int, what: str, layout: str) -> np.ndarray:
    """`images` as a numpy array after checking its rank and its channel count (last axis 1 or 3)."""
    arr = np.asarray(images)
    if arr.ndim != ndim:
        hint = " (a missing axis? add a channel axis of size 1, or a leading batch axis)"
        hint = hint if arr.ndim == ndim - 1 else ""
        raise ValueError(f"{what} must be a {ndim}-D array {layout}, got shape {arr.shape}{hint}.")
    if arr.shape[-1] not in _CHANNELS:
        raise ValueError(
            f"{what} must have 1 (grayscale) or 3 (RGB) channels on the last axis {layout}, got shape {arr.shape}."
        )
    if any(d == 0 for d in arr.shape):
        raise ValueError(f"{what} must not be empty, got shape {arr.shape}.")
    return arr


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_png_path(path) -> Path:
    """`path` as a Path; ValueError unless it ends in .png, the only format written here."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{str(path)!r}: images are written as PNG only; give a path ending in .png.")
    return path


def _write_png(path, write) -> Path:
    """`write(f)` into a binary file that becomes `path` (a .png; parent directories are created) only once it
    is complete (`files.atomic_write`): a kill mid-write leaves no truncated image under that name."""
    path = check_png_path(path)
    with atomic_write(path, "wb") as f:
        write(f)
    return path


# ---------------------------------------------------------------- grids


def make_grid(images, nrow: int | None = None, padding: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile a batch into one image, row-major, as torchvision's `make_grid` does.

    Args:
      images: [N, H, W, C] float in [-1, 1] (or uint8), C = 1 or 3.
      nrow: images per grid row (torchvision's meaning: the number of columns); default ceil(sqrt(N)),
        at most N. The grid has ceil(N / nrow) rows; cells past the N-th are filled with `pad_value`.
      padding: pixels of `pad_value` between tiles and around the border.
      pad_value: the padding's value in image units [-1, 1]; default 1.0 (white), which keeps MNIST-style
        white-on-black tiles apart.
    Returns:
      uint8 [rows * (H + padding) + padding, ncols * (W + padding) + padding, C]; tile k's top-left pixel is
      at (padding + (k // ncols) * (H + padding), padding + (k % ncols) * (W + padding)).
    """
    tiles = to_uint8(_check_images(images, 4, "images", "[N, H, W, C]"))
    n, h, w, c = tiles.shape
    ncols = min(_check_int(nrow, "nrow", 1), n) if nrow is not None else math.ceil(math.sqrt(n))
    padding = _check_int(padding, "padding", 0)
    if not isinstance(pad_value, (int, float, np.number)) or not -1.0 <= float(pad_value) <= 1.0:
        raise ValueError(f"pad_value must be a number in [-1, 1] (image units), got {pad_value!r}.")
    rows = math.ceil(n / ncols)
    grid = np.full(
        (rows * (h + padding) + padding, ncols * (w + padding) + padding, c),
        to_uint8(np.float64(pad_value)),
        dtype=np.uint8,
    )
    for k in range(n):
        r, col = divmod(k, ncols)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = tiles[k]
    return grid


def save_png(image, path, upscale: int = 1) -> Path:
    """Write a uint8 [H, W, C] image (C = 1 or 3) as a PNG, each pixel an `upscale` x `upscale` block.

    `path` must end in .png; the parent directories are created and the file appears only once complete.
    Returns the path.
    """
    from PIL import Image

    arr = _check_images(image, 3, "image", "[H, W, C]")
    if arr.dtype != np.uint8:
        raise ValueError(f"save_png expects a uint8 image (see to_uint8 / make_grid), got dtype {arr.dtype}.")
    upscale = _check_int(upscale, "upscale", 1)
    if upscale > 1:  # nearest neighbour, exactly: every pixel becomes a block
        arr = np.repeat(np.repeat(arr, upscale, axis=0), upscale, axis=1)
    pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)  # uint8: [H, W] -> "L", [H, W, 3] -> "RGB"
    return _write_png(path, lambda f: pil.save(f, format="PNG"))


def read_images(path, image_shape: Sequence[int]) -> np.ndarray:
    """Images of a file as float32 [N, H, W, C] in [-1, 1], for img2img and inpainting.

    A PNG/JPEG (one image; converted to grayscale or RGB to match C) or an .npz whose "images" are uint8 or float
    in [-1, 1] ([N, H, W, C] or [H, W, C]). The size must be `image_shape` (H, W, C): nothing is resized.
    """
    path = str(path)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as f:
            if "images" not in f:
                raise ValueError(f"{path} holds {sorted(f.files)}; expected an array 'images'.")
            arr = np.asarray(f["images"])
        arr = to_float(arr) if arr.dtype == np.uint8 else arr.astype(np.float32)
    else:
        from PIL import Image

        with Image.open(path) as image:
            arr = to_float(np.asarray(image.convert("L" if image_shape[-1] == 1 else "RGB")))
    arr = arr.reshape(arr.shape + (1,)) if arr.ndim == 2 else arr
    arr = arr[None] if arr.ndim == 3 else arr
    if tuple(arr.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{path} holds images of shape {tuple(arr.shape[1:])}; the model takes {tuple(image_shape)} "
                         "(H, W, C): resize or crop it first.")
    if not np.all(np.abs(arr) <= 1.0):
        nan, inf, finite = int(np.isnan(arr).sum()), int(np.isinf(arr).sum()), arr[np.isfinite(arr)]
        bad = " and ".join(([f"NaN ({nan} of {arr.size} values)"] if nan else [])
                           + ([f"inf ({inf} of {arr.size} values)"] if inf else []))
        span = f"min {finite.min():g}, max {finite.max():g}" if finite.size else ""
        found = (f"it holds {bad}" + (f"; the finite values: {span}" if span else "")) if bad else f"found {span}"
        hint = " (pixels in 0..255 go as uint8)" if finite.size and finite.max() > 1 else ""
        raise ValueError(f"{path}: float images must be in [-1, 1]; {found}{hint}.")
    return arr


def read_mask(path, image_shape: Sequence[int]) -> np.ndarray:
    """An inpainting mask as float32 [N, H, W, 1] of 0 (keep) and 1 (generate): a PNG whose white pixels (> 127)
    are generated, as in Stable Diffusion's inpainting, or an .npz "mask" with values in [0, 1]."""
    path = str(path)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as f:
            if "mask" not in f:
                raise ValueError(f"{path} holds {sorted(f.files)}; expected an array 'mask' (1 = generate).")
            mask = np.asarray(f["mask"], np.float32)
    else:
        from PIL import Image

        with Image.open(path) as image:
            mask = (np.asarray(image.convert("L")) > 127).astype(np.float32)
    mask = mask.reshape(mask.shape + (1,)) if mask.ndim == 2 else mask
    mask = mask[None] if mask.ndim == 3 else mask
    if tuple(mask.shape[1:3]) != tuple(image_shape[:2]) or mask.shape[-1] not in (1, image_shape[-1]):
        channels = "1 channel" if image_shape[-1] == 1 else f"1 or {image_shape[-1]} channels"
        raise ValueError(f"{path}: the mask has shape {tuple(mask.shape[1:])}; expected {tuple(image_shape[:2])} "
                         f"with {channels} (the images are {tuple(image_shape)}).")
    if np.any((mask < 0) | (mask > 1)):
        raise ValueError(f"{path}: mask values must be in [0, 1] (1 = generate, 0 = keep).")
    return mask


def save_grid(
    images, path, nrow: int | None = None, upscale: int = 1, padding: int = 1, pad_value: float = 1.0
) -> Path:
    """`make_grid(images, nrow, padding, pad_value)` written as a PNG with Pillow.

    Args:
      images: [N, H, W, C] float in [-1, 1] (or uint8), C = 1 (grayscale PNG) or 3 (RGB PNG).
      path: the file to write; parent directories are created.
      upscale: integer nearest-neighbour magnification of the whole grid (padding included), so tiny
        images stay readable: 8 x 8 digits want upscale=8 or so. The PNG is upscale * the grid's size.
    Returns:
      `path` as a pathlib.Path.
    """
    return save_png(make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value), path, upscale=upscale)


# ---------------------------------------------------------------- the forward process


def _resolve_schedules(specs: Sequence[ScheduleSpec], num_timesteps: int, options: dict) -> list:
    """[(label, betas float64 [T])] for names (through get_betas, with `options`) and (label, betas) pairs."""
    if isinstance(specs, str) or len(specs) == 0:
        raise ValueError(f"schedules must be a non-empty sequence of names or (label, betas) pairs, got {specs!r}.")
    resolved = []
    for spec in specs:
        if isinstance(spec, str):
            resolved.append((spec, schedules.get_betas(spec, num_timesteps, **options)))
            continue
        if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)):
            raise ValueError(
                f"each schedule must be a name ({', '.join(schedules.SCHEDULE_NAMES)}) or a (label, betas) pair, "
                f"got {spec!r}."
            )
        label, betas = spec[0], np.asarray(spec[1], dtype=np.float64)
        if betas.shape != (num_timesteps,):
            raise ValueError(f"schedule {label!r}: betas must have shape ({num_timesteps},), got {betas.shape}.")
        resolved.append((label, betas))
    return resolved


def default_timesteps(num_timesteps: int, num_columns: int = 8) -> np.ndarray:
    """`num_columns` evenly spaced timesteps from 0 to T - 1, both included: int32 [num_columns]."""
    num_columns = _check_int(num_columns, "num_columns", 2)
    return np.round(np.linspace(0, num_timesteps - 1, num_columns)).astype(np.int32)


def _forward_tiles(x0, schedule_names, num_timesteps, ts, seed, num_columns, options):
    """x_t for every (schedule, t): float32 [R, K, H, W, C], with the row labels and ts [K]."""
    x0 = _check_images(x0, 3, "x0", "[H, W, C] (one image)")
    if not np.issubdtype(x0.dtype, np.floating):
        raise ValueError(f"x0 must be a float image in [-1, 1], got dtype {x0.dtype}.")
    x0 = x0.astype(np.float32)
    num_timesteps = _check_int(num_timesteps, "num_timesteps", 2)
    ts = default_timesteps(num_timesteps, num_columns) if ts is None else np.asarray(ts)
    if ts.ndim != 1 or ts.size == 0 or not np.issubdtype(ts.dtype, np.integer):
        raise ValueError(f"ts must be a non-empty 1-D sequence of integer timesteps, got {ts!r}.")
    if ts.min() < 0 or ts.max() >= num_timesteps:
        raise ValueError(f"ts must lie in [0, {num_timesteps - 1}] (0-based timesteps), got {ts.tolist()}.")
    ts = ts.astype(np.int32)
    named = _resolve_schedules(schedule_names, num_timesteps, options)
    noise = jax.random.normal(jax.random.PRNGKey(seed), x0.shape, jnp.float32)  # shared by every row
    batch = jnp.broadcast_to(jnp.asarray(x0), (len(ts),) + x0.shape)
    noise = jnp.broadcast_to(noise, batch.shape)
    rows = [
        np.asarray(diffusion.q_sample(schedules.make_schedule(betas), batch, jnp.asarray(ts), noise))
        for _, betas in named
    ]
    return np.stack(rows), [label for label, _ in named], ts


def forward_process_strip(
    x0,
    schedule_names: Sequence[ScheduleSpec] = ("linear", "cosine"),
    num_timesteps: int = 1000,
    ts=None,
    seed: int = 0,
    *,
    num_columns: int = 8,
    padding: int = 1,
    pad_value: float = 1.0,
    **options,
) -> np.ndarray:
    """The forward process q(x_t | x_0) of one image under several schedules, as one uint8 grid.

    Row r is schedule r, column k is x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise at t = ts[k], with the
    same noise in every row and column, so rows differ only by their schedule (Nichol & Dhariwal fig. 3).

    Args:
      x0: one image [H, W, C] in [-1, 1], C = 1 or 3.
      schedule_names: names for `schedules.get_betas`, or (label, betas [T]) pairs.
      num_timesteps: T.
      ts: int timesteps in [0, T) for the columns; default `num_columns` evenly spaced ones, 0 and T - 1
        included.
      seed: seed of the noise (jax.random.PRNGKey(seed)).
      padding, pad_value: as in `make_grid`.
      **options: keyword options passed to `get_betas` for every named schedule (e.g. zero_terminal_snr=True).
    Returns:
      uint8 [R * (H + padding) + padding, K * (W + padding) + padding, C], R schedules, K timesteps.
    """
    tiles, _, ts = _forward_tiles(x0, schedule_names, num_timesteps, ts, seed, num_columns, options)
    r, k = tiles.shape[:2]
    return make_grid(tiles.reshape((r * k,) + tiles.shape[2:]), nrow=k, padding=padding, pad_value=pad_value)


def _show_grid(ax, grid, tile_hw, padding, col_labels, row_labels, title=None):
    """imshow a uint8 grid on `ax`, with a tick label at the centre of every tile row and column."""
    h, w = tile_hw
    gray = grid.shape[-1] == 1
    ax.imshow(grid[..., 0] if gray else grid, cmap="gray" if gray else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_xticks([padding + k * (w + padding) + (w - 1) / 2 for k in range(len(col_labels))])
    ax.set_xticklabels(col_labels, rotation=90 if len(col_labels) > 10 else 0, fontsize=8)
    ax.set_yticks([padding + r * (h + padding) + (h - 1) / 2 for r in range(len(row_labels))])
    ax.set_yticklabels(row_labels, fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)


def _figure(width_in: float, height_in: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def save_forward_process_strip(
    x0,
    path,
    schedule_names: Sequence[ScheduleSpec] = ("linear", "cosine"),
    num_timesteps: int = 1000,
    ts=None,
    seed: int = 0,
    *,
    num_columns: int = 8,
    tile_inches: float = 0.9,
    dpi: int = 100,
    **options,
) -> Path:
    """`forward_process_strip` drawn with matplotlib: rows labelled by schedule, columns by "t=...". PNG.

    Args: as `forward_process_strip`, plus `path` (parent directories are created), `tile_inches` (the size
    of one tile on the figure) and `dpi`. Returns `path` as a pathlib.Path.
    """
    padding = 1
    tiles, labels, ts = _forward_tiles(x0, schedule_names, num_timesteps, ts, seed, num_columns, options)
    r, k, h, w = tiles.shape[:4]
    grid = make_grid(tiles.reshape((r * k,) + tiles.shape[2:]), nrow=k, padding=padding)
    fig, (ax,) = _figure(1.5 + k * tile_inches, 0.8 + r * tile_inches)
    _show_grid(ax, grid, (h, w), padding, [f"t={int(t)}" for t in ts], labels)
    ax.set_title(f"forward process q(x_t | x_0), T = {num_timesteps}")
    fig.tight_layout()
    return _write_png(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


# ---------------------------------------------------------------- the reverse process


def reverse_process_panels(trajectory: Trajectory, max_samples: int = 8, padding: int = 1):
    """The two grids of a reverse-process trajectory: (x_t grid, pred_x0 grid), each uint8 [H', W', C].

    Args:
      trajectory: a `sampling.Trajectory` with x_t and pred_x0 [K, B, H, W, C] and t [K] (noisiest first),
        as samplers return with trajectory_steps=K.
      max_samples: draw the first min(B, max_samples) samples.
    Returns:
      Two grids of rows = samples, columns = saved steps: [S * (H + padding) + padding,
      K * (W + padding) + padding, C] with S = min(B, max_samples).
    """
    x_t = _check_images(trajectory.x_t, 5, "trajectory.x_t", "[K, B, H, W, C]")
    pred = _check_images(trajectory.pred_x0, 5, "trajectory.pred_x0", "[K, B, H, W, C]")
    if pred.shape != x_t.shape:
        raise ValueError(f"trajectory.pred_x0 {pred.shape} and trajectory.x_t {x_t.shape} must have one shape.")
    t = np.asarray(trajectory.t)
    if t.shape != x_t.shape[:1]:
        raise ValueError(f"trajectory.t must have shape [K] = ({x_t.shape[0]},), got {t.shape}.")
    s = min(_check_int(max_samples, "max_samples", 1), x_t.shape[1])
    k = x_t.shape[0]

    def panel(arr):  # [K, B, ...] -> samples as rows, steps as columns
        rows = np.swapaxes(arr[:, :s], 0, 1)
        return make_grid(rows.reshape((s * k,) + arr.shape[2:]), nrow=k, padding=padding)

    return panel(x_t), panel(pred)


def reverse_process_strip(
    trajectory: Trajectory, path, max_samples: int = 8, *, tile_inches: float = 0.7, dpi: int = 100
) -> Path:
    """A reverse-process trajectory as a PNG: two panels, x_t and the predicted x_0, side by side.

    In each panel row i is sample i and column k is saved step k, titled with its timestep t[k] (noisiest
    on the left). See `reverse_process_panels` for the shapes accepted. Parent directories are created;
    returns `path` as a pathlib.Path.
    """
    padding = 1
    x_grid, pred_grid = reverse_process_panels(trajectory, max_samples, padding)
    k, b, h, w = np.shape(trajectory.x_t)[:4]
    s = min(max_samples, b)
    col_labels = [f"t={int(t)}" for t in np.asarray(trajectory.t)]
    row_labels = [str(i) for i in range(s)]
    fig, axes = _figure(2 * (0.8 + k * tile_inches), 1.0 + s * tile_inches, ncols=2)
    _show_grid(axes[0], x_grid, (h, w), padding, col_labels, row_labels, title="x_t")
    _show_grid(axes[1], pred_grid, (h, w), padding, col_labels, row_labels, title="predicted x_0")
    axes[0].set_ylabel("sample")
    fig.tight_layout()
    return _write_png(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


# ---------------------------------------------------------------- schedules


def plot_schedules(
    path,
    names: Sequence[ScheduleSpec] = schedules.SCHEDULE_NAMES,
    num_timesteps: int = 1000,
    *,
    show_zero_terminal_snr: bool = True,
    dpi: int = 100,
    **options,
) -> Path:
    """alpha_bar_t and log-SNR_t against t for several schedules, two subplots with a legend. PNG.

    Args:
      path: the file to write; parent directories are created.
      names: names for `schedules.get_betas`, or (label, betas [T]) pairs.
      num_timesteps: T.
      show_zero_terminal_snr: when "linear" is among `names`, also draw its zero-terminal-SNR rescaling
        (Lin et al. 2024) dashed. Its log-SNR is -inf at t = T - 1; matplotlib leaves that point out.
      **options: keyword options passed to `get_betas` for every named schedule.
    Returns:
      `path` as a pathlib.Path.
    """
    num_timesteps = _check_int(num_timesteps, "num_timesteps", 2)
    curves = [(label, betas, "-") for label, betas in _resolve_schedules(names, num_timesteps, options)]
    if show_zero_terminal_snr and "linear" in names and not options.get("zero_terminal_snr", False):
        betas = schedules.get_betas("linear", num_timesteps, zero_terminal_snr=True, **options)
        curves.append(("linear, zero terminal SNR", betas, "--"))
    fig, (ax_abar, ax_snr) = _figure(11, 4, ncols=2)
    t = np.arange(num_timesteps)
    for label, betas, style in curves:
        sched = schedules.make_schedule(betas)
        ax_abar.plot(t, np.asarray(sched.alphas_cumprod), style, label=label)
        ax_snr.plot(t, np.asarray(sched.log_snr), style, label=label)
    ax_abar.set(xlabel="t", ylabel=r"$\bar\alpha_t$", title=r"$\bar\alpha_t$ (signal fraction)", ylim=(-0.02, 1.02))
    ax_snr.set(xlabel="t", ylabel=r"$\log \mathrm{SNR}_t$", title=r"log-SNR $= \log \bar\alpha_t / (1 - \bar\alpha_t)$")
    for ax in (ax_abar, ax_snr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _write_png(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def save_fan_charts(path, context, target, samples, *, windows: Sequence[int] = (0,), dpi: int = 100) -> Path:
    """Fan charts of forecasts, one panel per window in `windows`: the context, the target (dashed), the median
    of the samples and their central 50% and 90% intervals (shaded). context [N, L, C], target [N, H, C],
    samples [N, S, H, C] (the first variable is drawn). PNG; returns `path` as a pathlib.Path."""
    context, target, samples = (np.asarray(a, np.float64) for a in (context, target, samples))
    length, horizon = context.shape[1], target.shape[1]
    fig, axes = _figure(4.2 * len(windows), 3.2, ncols=len(windows))
    past, future = np.arange(length), np.arange(length, length + horizon)
    for ax, i in zip(axes, windows):
        q05, q25, q50, q75, q95 = np.quantile(samples[i, :, :, 0], [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        ax.fill_between(future, q05, q95, color="tab:blue", alpha=0.2, lw=0, label="90% interval")
        ax.fill_between(future, q25, q75, color="tab:blue", alpha=0.4, lw=0, label="50% interval")
        ax.plot(past, context[i, :, 0], color="black", lw=1.2, label="context")
        ax.plot(future, target[i, :, 0], color="black", lw=1.2, ls="--", label="target")
        ax.plot(future, q50, color="tab:blue", lw=1.5, label="median")
        ax.set(title=f"window {i}", xlabel="step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _write_png(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


__all__ = [
    "make_grid",
    "save_png",
    "save_grid",
    "default_timesteps",
    "forward_process_strip",
    "save_forward_process_strip",
    "reverse_process_panels",
    "reverse_process_strip",
    "plot_schedules",
    "save_fan_charts",
]
