"""SLIC superpixels in JAX: batched, jit-able, a fixed number of iterations.

Follows scikit-image's `slic` (n_segments, compactness, sigma, max_num_iter
10, start_label 1) step by step: the image is min-max scaled to [0, 1],
converted to CIELAB, smoothed with a Gaussian (sigma, truncated at 4 sigma,
mirrored borders), and clustered by k-means on (L, a, b) / compactness and
(y, x) / step from centres on scikit-image's regular grid, whose colours start
at zero (so the first assignment is by position alone).

Where it differs, for speed on accelerators: each pixel is compared with the 9
centres of its own and the neighbouring grid cells (scikit-image searches a
2-step window around every centre, which is slightly wider), the number of
iterations is fixed (no early stop), and connectivity is not enforced: a label
is the set of pixels nearest to one centre, which is compact but may, rarely,
hold a detached fragment; scikit-image relabels such fragments and merges those
under half a segment's size into a neighbour.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from skimage.util import regular_grid

_XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                          [0.212671, 0.715160, 0.072169],
                          [0.019334, 0.119193, 0.950227]], np.float32)
_D65 = np.array([0.95047, 1.0, 1.08883], np.float32)


def rgb_to_lab(rgb: jax.Array) -> jax.Array:
  """sRGB in [0, 1] [..., 3] to CIELAB (D65), as skimage.color.rgb2lab."""
  linear = jnp.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
  xyz = linear @ jnp.asarray(_XYZ_FROM_RGB.T) / jnp.asarray(_D65)
  f = jnp.where(xyz > 0.008856, jnp.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
  return jnp.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]),
                    200.0 * (f[..., 1] - f[..., 2])], axis=-1)


def pad_hw(x: jax.Array, r, mode: str) -> jax.Array:
  """Pads axes 1 and 2 by `r` pixels on each side, or by ((top, bottom),
  (left, right)): 'symmetric' (scipy's 'reflect') or 'edge'.

  Built from slices and concatenation, which keep the batch axis's sharding
  under explicit mesh axes (jnp.pad's edge mode does not) and which every
  exporter (ONNX, TFLite) takes.
  """
  widths = ((r, r), (r, r)) if isinstance(r, int) else r
  for axis, (low, high) in zip((1, 2), widths):
    n = x.shape[axis]
    take = lambda a, b: jax.lax.slice_in_dim(x, a, b, axis=axis)
    if mode == 'edge':
      parts = [take(0, 1)] * low + [x] + [take(n - 1, n)] * high
    else:
      parts = [jnp.flip(take(0, low), axis=axis), x,
               jnp.flip(take(n - high, n), axis=axis)]
    x = jnp.concatenate(parts, axis=axis)
  return x


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
  """Separable Gaussian over H and W of [N, H, W, C], scipy's 'reflect' mode."""
  if sigma <= 0:
    return x
  radius = int(4.0 * sigma + 0.5)
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps = jnp.asarray(taps / taps.sum(), x.dtype)
  x = pad_hw(x, radius, 'symmetric')
  h, w = x.shape[1] - 2 * radius, x.shape[2] - 2 * radius
  x = sum(taps[i] * x[:, i:i + h] for i in range(2 * radius + 1))
  return sum(taps[i] * x[:, :, i:i + w] for i in range(2 * radius + 1))


@functools.lru_cache(maxsize=32)
def _layout(height: int, width: int, n_segments: int):
  """scikit-image's grid of initial centres, and each pixel's home cell.

  A pixel's home cell is the grid cell whose initial centre is nearest; the
  pixels of a cell form a block (cells at the borders are larger), stored in a
  padded [cells_y, rows, cells_x, cols] layout so that every iteration is dense
  array work, without gathers.
  """
  slices = regular_grid((1, height, width), n_segments)
  axes = []
  for size, sl in ((height, slices[1]), (width, slices[2])):
    centres = np.arange(size)[sl]
    step = sl.step or 1
    home = np.clip(np.round((np.arange(size) - centres[0]) / step), 0,
                   len(centres) - 1).astype(int)
    length = np.bincount(home).max()
    index = np.zeros((len(centres), length), np.int32)
    valid = np.zeros((len(centres), length), bool)
    for cell in range(len(centres)):
      members = np.flatnonzero(home == cell)
      index[cell, :len(members)] = members
      index[cell, len(members):] = members[-1]
      valid[cell, :len(members)] = True
    offset = np.arange(size) - index[home, 0]
    axes.append((centres, step, index, valid, home, offset))
  step = float(max(axes[0][1], axes[1][1], slices[0].step or 1))
  return axes, step


_SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _neighbours(grid: jax.Array) -> jax.Array:
  """[N, GY, GX, F] -> the 3x3 neighbourhood of each cell, [N, GY, GX, 9, F]."""
  gy, gx = grid.shape[1], grid.shape[2]
  padded = jnp.pad(grid, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.stack([padded[:, 1 + dy:1 + dy + gy, 1 + dx:1 + dx + gx]
                    for dy, dx in _SHIFTS], axis=3)


def _scatter_to_centres(per_candidate: jax.Array) -> jax.Array:
  """Inverse of `_neighbours`: adds [N, GY, GX, 9, F] into the cells [N, GY, GX, F].

  Nine pads and adds, in the order of `_SHIFTS` (a scatter-add's result to
  the bit), not a scatter: exporters to ONNX and TFLite take these.
  """
  _, gy, gx, _, _ = per_candidate.shape
  out = jnp.zeros_like(per_candidate[:, :, :, 0])
  for k, (dy, dx) in enumerate(_SHIFTS):
    # Candidate k of cell (y, x) is cell (y + dy, x + dx); none lies outside.
    shifted = jnp.pad(per_candidate[:, :, :, k],
                      ((0, 0), (1 + dy, 1 - dy), (1 + dx, 1 - dx), (0, 0)))
    out = out + shifted[:, 1:1 + gy, 1:1 + gx]
  return out


def assign(images: jax.Array, n_segments: int = 250, compactness: float = 8.0,
           sigma: float = 1.0, num_iterations: int = 10, unroll: bool = False
           ) -> jax.Array:
  """SLIC's final assignment of RGB images [N, H, W, 3], in block layout: for
  each pixel of cell block [N, GY, LY, GX, LX] the index (into `_SHIFTS`) of
  the neighbouring cell whose centre it joined (`labels` and `regions` read
  it). Shapes and parameters are static; jit-able.

  `unroll` writes the iterations out instead of a `fori_loop` (the same
  arithmetic), for exporters that cannot take the loop (ONNX).
  """
  n, height, width, _ = images.shape
  (ys, _, row_idx, row_ok, _, _), (xs, _, col_idx, col_ok, _, _) = _layout(
      height, width, n_segments)[0]
  step = _layout(height, width, n_segments)[1]
  gy, gx = len(ys), len(xs)
  x = images.astype(jnp.float32)
  lo = x.min(axis=(1, 2, 3), keepdims=True)
  hi = x.max(axis=(1, 2, 3), keepdims=True)
  x = (x - lo) / jnp.where(hi > lo, hi - lo, 1.0)
  lab = gaussian_blur(rgb_to_lab(x), sigma) / compactness
  yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
  pos = jnp.asarray(np.stack([yy, xx], -1).astype(np.float32) / step)
  features = jnp.concatenate(
      [lab, jnp.broadcast_to(pos, (n, height, width, 2))], axis=-1)
  # Pixels in block layout [N, GY, LY, GX, LX, 5] (a static gather, once).
  blocks = to_blocks(features, n_segments)
  valid = jnp.asarray(row_ok[:, :, None, None] & col_ok[None, None])
  gyy, gxx = np.meshgrid(np.arange(gy), np.arange(gx), indexing='ij')
  candidate_ok = jnp.asarray(np.stack(
      [(gyy + dy >= 0) & (gyy + dy < gy) & (gxx + dx >= 0) & (gxx + dx < gx)
       for dy, dx in _SHIFTS], axis=-1))
  centres = jnp.concatenate([
      jnp.zeros((n, gy, gx, 3)),
      jnp.broadcast_to(jnp.asarray(np.stack(np.meshgrid(ys, xs, indexing='ij'),
                                            -1).astype(np.float32) / step),
                       (n, gy, gx, 2))], axis=-1)

  def choose(centres):
    near = _neighbours(centres)  # [N, GY, GX, 9, 5]
    # Squared distances [N, GY, LY, GX, LX, 9] with N and GY as one axis:
    # no rank-7 tensor, which TFLite refuses.
    rows = (n * gy,)
    diff = (blocks.reshape(rows + blocks.shape[2:5] + (1, 5))
            - near.reshape(rows + (1, gx, 1, 9, 5)))
    dist = jnp.sum(jnp.square(diff), axis=-1).reshape(
        (n, gy) + blocks.shape[2:5] + (9,))
    dist = jnp.where(candidate_ok[:, None, :, None], dist, jnp.inf)
    return jnp.argmin(dist, axis=-1)

  def update(_, centres):
    choice = choose(centres)
    onehot = (jax.nn.one_hot(choice, 9, dtype=jnp.float32)
              * valid[None, ..., None])
    sums = jnp.einsum('nyaxbk,nyaxbf->nyxkf', onehot, blocks)
    counts = jnp.einsum('nyaxbk->nyxk', onehot)[..., None]
    sums, counts = _scatter_to_centres(sums), _scatter_to_centres(counts)
    return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), centres)

  if unroll:
    for i in range(num_iterations):
      centres = update(i, centres)
  else:
    centres = jax.lax.fori_loop(0, num_iterations, update, centres)
  return choose(centres).astype(jnp.int32)


def to_blocks(pixels: jax.Array, n_segments: int) -> jax.Array:
  """Per-pixel values [N, H, W, ...] in block layout [N, GY, LY, GX, LX, ...]
  (padding positions repeat a cell's last row or column)."""
  (_, _, row_idx, _, _, _), (_, _, col_idx, _, _, _) = _layout(
      pixels.shape[1], pixels.shape[2], n_segments)[0]
  return pixels[:, row_idx][:, :, :, col_idx]


def _from_blocks(blocks: jax.Array, height: int, width: int, n_segments: int
                 ) -> jax.Array:
  """Inverse of `to_blocks`: [N, GY, LY, GX, LX] -> [N, H, W]."""
  (_, _, _, _, home_y, off_y), (_, _, _, _, home_x, off_x) = _layout(
      height, width, n_segments)[0]
  return blocks[:, home_y[:, None], off_y[:, None], home_x[None, :],
                off_x[None, :]]


def labels(choice: jax.Array, height: int, width: int, n_segments: int
           ) -> jax.Array:
  """Superpixel labels (from 1) [N, H, W] of an `assign` result: the index
  of the chosen cell, row-major over the grid."""
  (ys, *_), (xs, *_) = _layout(height, width, n_segments)[0]
  gy, gx = len(ys), len(xs)
  shift = jnp.asarray(np.array(_SHIFTS, np.int32))
  cell_y = jnp.asarray(np.arange(gy, dtype=np.int32))[:, None, None, None]
  cell_x = jnp.asarray(np.arange(gx, dtype=np.int32))[None, None, :, None]
  label_blocks = (cell_y + shift[choice, 0]) * gx + cell_x + shift[choice, 1]
  return _from_blocks(label_blocks, height, width, n_segments) + 1


def regions(choice: jax.Array, seed_map: jax.Array, n_segments: int
            ) -> jax.Array:
  """The pixels [N, H, W] of every superpixel of an `assign` result that
  holds a seed of `seed_map` [N, H, W] (bool).

  Equal to looking each pixel's label up in a table of the seeded labels,
  but dense: each cell counts the seeds of the pixels that chose it, from
  its 3x3 neighbourhood of blocks, and each pixel reads its chosen cell's
  count. No scatter or data-dependent gather, so it exports.
  """
  _, height, width = seed_map.shape
  (_, _, _, row_ok, _, _), (_, _, _, col_ok, _, _) = _layout(
      height, width, n_segments)[0]
  valid = jnp.asarray(row_ok[:, :, None, None] & col_ok[None, None])
  seeds = to_blocks(seed_map, n_segments) & valid  # [N, GY, LY, GX, LX]
  picks = choice[..., None] == jnp.arange(9, dtype=choice.dtype)
  hits = jnp.sum(picks & seeds[..., None], axis=(2, 4), dtype=jnp.int32)
  seeded = _scatter_to_centres(hits[..., None])  # [N, GY, GX, 1]
  near = _neighbours(seeded)[..., 0]  # [N, GY, GX, 9]: each candidate's count.
  chosen = jnp.sum(jnp.where(picks, near[:, :, None, :, None], 0), axis=-1)
  return _from_blocks(chosen > 0, height, width, n_segments)


def slic(images: jax.Array, n_segments: int = 250, compactness: float = 8.0,
         sigma: float = 1.0, num_iterations: int = 10, unroll: bool = False
         ) -> jax.Array:
  """Superpixel labels (from 1) of RGB images [N, H, W, 3] -> int32 [N, H, W].

  Shapes and parameters are static; the function is jit-able.
  """
  choice = assign(images, n_segments, compactness, sigma, num_iterations,
                  unroll)
  return labels(choice, images.shape[1], images.shape[2], n_segments)
