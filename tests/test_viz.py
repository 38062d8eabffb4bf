"""Visualization: exact uint8 mapping and grid layout, PNGs that Pillow reads back at the expected size,
forward strips checked by statistics, and clear errors for bad shapes. No model needed."""

import numpy as np
import pytest
from PIL import Image

from ddpm_jax import schedules, viz
from ddpm_jax.sampling import Trajectory


def _image(h=16, w=16, c=1, seed=0):
    """A structured image in [-1, 1]: a smooth gradient plus a bright square (not noise-like)."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    img = 0.6 * xx * yy
    img[h // 4 : h // 2, w // 4 : 3 * w // 4] = 0.9
    return np.repeat(img[..., None], c, axis=-1).astype(np.float32)


def _tile(grid, k, ncols, h, w, padding):
    r, col = divmod(k, ncols)
    y, x = padding + r * (h + padding), padding + col * (w + padding)
    return grid[y : y + h, x : x + w]


# ---------------------------------------------------------------- to_uint8


def test_to_uint8_exact_mapping():
    x = np.array([-1.0, 1.0, 0.0, -2.0, 3.0, 1 / 127.5 - 1, 0.5], np.float32)
    # round((x + 1) * 127.5), half to even: 0 -> 127.5 -> 128; clipped outside [-1, 1]
    np.testing.assert_array_equal(viz.to_uint8(x), [0, 255, 128, 0, 255, 1, 191])
    assert viz.to_uint8(x).dtype == np.uint8
    u = np.arange(256, dtype=np.uint8)
    assert viz.to_uint8(u) is u  # already converted: unchanged
    # Round trip of the 256 quantized levels is exact.
    levels = np.arange(256) / 127.5 - 1.0
    np.testing.assert_array_equal(viz.to_uint8(levels), np.arange(256))


def test_to_uint8_rejects_nonfinite_and_ints():
    with pytest.raises(ValueError, match="non-finite"):
        viz.to_uint8(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="dtype"):
        viz.to_uint8(np.array([1, 2], np.int32))


# ---------------------------------------------------------------- grids


@pytest.mark.parametrize(
    "n, nrow, padding, expect_rows, expect_cols",
    [(10, None, 1, 3, 4), (9, None, 2, 3, 3), (5, 2, 0, 3, 2), (3, 8, 1, 1, 3), (1, None, 1, 1, 1)],
)
def test_make_grid_shape(n, nrow, padding, expect_rows, expect_cols):
    h, w = 5, 7
    grid = viz.make_grid(np.zeros((n, h, w, 3), np.float32), nrow=nrow, padding=padding)
    assert grid.dtype == np.uint8
    assert grid.shape == (expect_rows * (h + padding) + padding, expect_cols * (w + padding) + padding, 3)


def test_make_grid_content_and_padding():
    n, h, w, p = 7, 4, 3, 2
    levels = np.linspace(-0.9, 0.9, n)
    images = np.broadcast_to(levels[:, None, None, None], (n, h, w, 1)).astype(np.float32).copy()
    images[:, 0, 0, 0] = -1.0  # mark the top-left corner of every tile
    grid = viz.make_grid(images, padding=p, pad_value=-1.0)  # ncols = ceil(sqrt(7)) = 3
    assert grid.shape == (3 * (h + p) + p, 3 * (w + p) + p, 1)  # grayscale stays one channel
    expected = viz.to_uint8(images)
    for k in range(n):
        np.testing.assert_array_equal(_tile(grid, k, 3, h, w, p), expected[k])
    # Padding (and the two empty cells after tile 6) hold pad_value.
    mask = np.ones(grid.shape[:2], bool)
    for k in range(n):
        r, col = divmod(k, 3)
        mask[p + r * (h + p) : p + r * (h + p) + h, p + col * (w + p) : p + col * (w + p) + w] = False
    assert np.all(grid[mask] == 0)
    # Default pad is white.
    assert viz.make_grid(images)[0, 0, 0] == 255


def test_make_grid_rgb_keeps_channels():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)
    grid = viz.make_grid(images, nrow=2, padding=0)
    np.testing.assert_array_equal(grid[:3, 3:6], viz.to_uint8(images[1]))
    np.testing.assert_array_equal(grid[3:, :3], viz.to_uint8(images[2]))


@pytest.mark.parametrize(
    "shape, match",
    [((8, 8, 1), "4-D"), ((2, 8, 8), "missing axis"), ((2, 8, 8, 2), "channels"), ((0, 8, 8, 1), "empty")],
)
def test_make_grid_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        viz.make_grid(np.zeros(shape, np.float32))


def test_make_grid_bad_arguments():
    x = np.zeros((4, 2, 2, 1), np.float32)
    with pytest.raises(ValueError, match="nrow"):
        viz.make_grid(x, nrow=0)
    with pytest.raises(ValueError, match="padding"):
        viz.make_grid(x, padding=-1)
    with pytest.raises(ValueError, match="pad_value"):
        viz.make_grid(x, pad_value=255)


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
@pytest.mark.parametrize("upscale", [1, 4])
def test_save_grid_png(tmp_path, channels, mode, upscale):
    images = np.random.default_rng(1).uniform(-1, 1, (5, 8, 8, channels)).astype(np.float32)
    path = viz.save_grid(images, tmp_path / "sub" / "dir" / "grid.png", nrow=3, upscale=upscale)
    assert path.exists() and path.parent.name == "dir"
    grid = viz.make_grid(images, nrow=3)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == mode
        assert im.size == (grid.shape[1] * upscale, grid.shape[0] * upscale)  # PIL size is (W, H)
        pixels = np.asarray(im)
    pixels = pixels.reshape(pixels.shape[:2] + (-1,))
    np.testing.assert_array_equal(pixels[::upscale, ::upscale], grid)  # lossless, nearest-neighbour
    if upscale > 1:
        np.testing.assert_array_equal(pixels[1::upscale, 1::upscale], grid)


def test_save_grid_bad_upscale(tmp_path):
    with pytest.raises(ValueError, match="upscale"):
        viz.save_grid(np.zeros((1, 2, 2, 1), np.float32), tmp_path / "x.png", upscale=0)


# ---------------------------------------------------------------- forward process


def test_forward_process_strip_rows_and_statistics():
    h = w = 16
    x0 = _image(h, w)
    names = ("linear", "cosine", "quadratic")
    grid = viz.forward_process_strip(x0, names, num_timesteps=1000, seed=0)
    k = 8
    assert grid.shape == (len(names) * (h + 1) + 1, k * (w + 1) + 1, 1)  # one row per schedule
    np.testing.assert_array_equal(viz.default_timesteps(1000), [0, 143, 285, 428, 571, 714, 856, 999])

    image = viz.to_uint8(x0).astype(np.float64).ravel()
    first_tiles, last_tiles = [], []
    for r in range(len(names)):
        first = _tile(grid, r * k, k, h, w, 1).astype(np.float64).ravel()
        last = _tile(grid, r * k + k - 1, k, h, w, 1).astype(np.float64).ravel()
        first_tiles.append(first)
        last_tiles.append(last)
        # t = 0: the image itself up to noise of std sqrt(beta_0) <= 0.01 (about 1.3 grey levels).
        assert np.abs(first - image).mean() < 3.0
        assert np.corrcoef(first, image)[0, 1] > 0.99
        # t = T - 1: the image is gone (alpha_bar < 1e-4), the tile is the noise.
        assert abs(np.corrcoef(last, image)[0, 1]) < 0.3
        # Standard-normal noise clipped to [-1, 1] has std ~0.72, i.e. ~92 grey levels, mean ~127.5.
        assert last.std() > 75 and abs(last.mean() - 127.5) < 20
    # The same noise in every row: the noise-dominated last columns agree across schedules.
    for last in last_tiles[1:]:
        assert np.corrcoef(last, last_tiles[0])[0, 1] > 0.98


def test_forward_process_strip_noise_level_tracks_alpha_bar():
    """Column-wise: the residual x_t - sqrt(abar) x0 has std sqrt(1 - abar) in image units."""
    x0 = _image(32, 32, c=3)
    ts = [0, 100, 300, 999]
    grid = viz.forward_process_strip(x0, ["linear"], 1000, ts=ts, seed=3, padding=0, pad_value=-1.0)
    assert grid.shape == (32, 4 * 32, 3)
    abar = np.cumprod(1 - schedules.get_betas("linear", 1000))
    # Use a column well inside [-1, 1] so clipping does not bias the estimate: t = 100 (abar ~ 0.9).
    tile = grid[:, 32:64].astype(np.float64) / 127.5 - 1.0
    residual = tile - np.sqrt(abar[100]) * x0
    assert residual.std() == pytest.approx(np.sqrt(1 - abar[100]), rel=0.15)


def test_forward_process_strip_custom_schedule_and_seed():
    x0 = _image(8, 8)
    betas = schedules.get_betas("linear", 50, zero_terminal_snr=True)
    grid_a = viz.forward_process_strip(x0, ["linear", ("ztsnr", betas)], num_timesteps=50, seed=0)
    grid_b = viz.forward_process_strip(x0, ["linear", ("ztsnr", betas)], num_timesteps=50, seed=0)
    grid_c = viz.forward_process_strip(x0, ["linear", ("ztsnr", betas)], num_timesteps=50, seed=1)
    np.testing.assert_array_equal(grid_a, grid_b)
    assert not np.array_equal(grid_a, grid_c)


def test_forward_process_strip_errors():
    x0 = _image(8, 8)
    with pytest.raises(ValueError, match="3-D"):
        viz.forward_process_strip(x0[None])
    with pytest.raises(ValueError, match="channels"):
        viz.forward_process_strip(np.zeros((8, 8, 4), np.float32))
    with pytest.raises(ValueError, match="ts must lie"):
        viz.forward_process_strip(x0, num_timesteps=100, ts=[0, 100])
    with pytest.raises(ValueError, match="Unknown schedule"):
        viz.forward_process_strip(x0, ["linear", "nope"])
    with pytest.raises(ValueError, match="shape"):
        viz.forward_process_strip(x0, [("mine", np.full(10, 0.1))], num_timesteps=100)


def test_save_forward_process_strip(tmp_path):
    path = viz.save_forward_process_strip(_image(8, 8, c=3), tmp_path / "a" / "forward.png", ("linear", "cosine"))
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100


# ---------------------------------------------------------------- reverse process


def _trajectory(k=5, b=3, h=8, w=8, c=1):
    rng = np.random.default_rng(0)
    x0 = np.stack([_image(h, w, c)] * b)
    t = np.linspace(999, 0, k).round().astype(np.int32)
    frac = (t / 999.0)[:, None, None, None, None]
    x_t = np.sqrt(1 - frac) * x0[None] + np.sqrt(frac) * rng.standard_normal((k, b, h, w, c))
    return Trajectory(x_t=x_t.astype(np.float32), pred_x0=np.broadcast_to(x0, x_t.shape).astype(np.float32), t=t)


def test_reverse_process_panels_layout():
    traj = _trajectory(k=5, b=3)
    x_grid, pred_grid = viz.reverse_process_panels(traj, max_samples=2)
    assert x_grid.shape == pred_grid.shape == (2 * 9 + 1, 5 * 9 + 1, 1)  # rows = samples, cols = steps
    # Row i, column k is sample i at saved step k.
    np.testing.assert_array_equal(_tile(x_grid, 1 * 5 + 3, 5, 8, 8, 1), viz.to_uint8(traj.x_t[3, 1]))
    np.testing.assert_array_equal(_tile(pred_grid, 4, 5, 8, 8, 1), viz.to_uint8(traj.pred_x0[4, 0]))


@pytest.mark.parametrize("c", [1, 3])
def test_reverse_process_strip_png(tmp_path, c):
    path = viz.reverse_process_strip(_trajectory(c=c), tmp_path / "rev" / "strip.png", max_samples=8)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 50


def test_reverse_process_strip_errors(tmp_path):
    traj = _trajectory()
    with pytest.raises(ValueError, match="5-D"):
        viz.reverse_process_strip(traj._replace(x_t=traj.x_t[0]), tmp_path / "x.png")
    with pytest.raises(ValueError, match="one shape"):
        viz.reverse_process_strip(traj._replace(pred_x0=traj.pred_x0[:, :2]), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"trajectory.t"):
        viz.reverse_process_strip(traj._replace(t=traj.t[:2]), tmp_path / "x.png")
    with pytest.raises(ValueError, match="channels"):
        viz.reverse_process_strip(traj._replace(x_t=np.repeat(traj.x_t, 2, -1)), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------- schedules


def test_plot_schedules(tmp_path):
    path = viz.plot_schedules(tmp_path / "plots" / "schedules.png", num_timesteps=200)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (1100, 400)
    # Options go to get_betas; a bad one names the schedule.
    viz.plot_schedules(tmp_path / "lin.png", names=("linear",), num_timesteps=100, beta_end=0.01)
    with pytest.raises(ValueError, match="Bad option"):
        viz.plot_schedules(tmp_path / "bad.png", names=("cosine",), beta_end=0.01)
