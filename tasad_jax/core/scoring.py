"""Image scores from anomaly maps [N, H, W, 1], jit-able.

TASAD: the maximum of the map after a 21x21 mean filter (stride 1, zero
padding, always divided by 441), 21 pixels being the paper's window at 256²
(`config.model.score_window`; 0 scales it with the image size). DeSTSeg: the
mean of the T largest values.

Both take an optional `valid` mask [N, H, W]: the image's pixels on a padded
canvas (`tasad_jax.inference.whole_image`'s shape buckets). The score is then
that of the map cropped to them: the mean filter sees zeros outside them, as
at an image's border, and only their values are ranked.

A map too large for one program (a line-scan image scored by tiles) is
scored by row bands: each score is also a `Reduction`, a small summary of
each band (with `halo` rows of context above and below it) and a function of
the summaries that gives the whole map's score exactly (`banded`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tasad_jax.runtime.errors import UserInputError

SCORE_WINDOW = 21  # The paper's window, at 256 x 256.


def window_for(setting: int, image_size: int) -> int:
  """The mean filter's window: `setting` pixels, or with 0 the paper's 21
  pixels at 256² scaled to `image_size` (odd, at least 3: 11 at 128²)."""
  if setting < 0:
    raise UserInputError(f'config.model.score_window: {setting} must be >= 0')
  if setting:
    return int(setting)
  return max(3, int(round(SCORE_WINDOW * image_size / 256)) | 1)


def max_of_mean_filter(maps: jax.Array, window: int = SCORE_WINDOW,
                       valid: jax.Array | None = None,
                       centres: jax.Array | None = None) -> jax.Array:
  """Max of the `window`x`window` mean-filtered maps [N, H, W, 1] -> [N],
  over the `centres` [N, H, W] (default: `valid`) when given."""
  if valid is not None:
    maps = jnp.where(valid[..., None], maps, 0.0)
  means = _window_sums(maps, window) / (window * window)
  centres = valid if centres is None else centres
  if centres is not None:
    means = jnp.where(centres[..., None], means, -jnp.inf)
  return jnp.max(means, axis=(1, 2, 3))


def _window_sums(maps: jax.Array, window: int) -> jax.Array:
  """Sums over `window` x `window` (zero padding) of maps [N, H, W, 1].

  Separable: a column sum then a row sum, 2w additions a pixel, not w². Each
  sum adds the shifted copies in window order, which on XLA:CPU is
  `reduce_window`'s result to the bit and at its speed, and exports where
  `reduce_window` does not (OpenVINO takes no 6-D convolution).
  """
  low = (window - 1) // 2  # XLA's 'SAME' padding.
  for axis in (1, 2):
    n = maps.shape[axis]
    pads = [(0, 0)] * maps.ndim
    pads[axis] = (low, window - 1 - low)
    padded = jnp.pad(maps, pads)
    total = jnp.zeros_like(maps)
    for k in range(window):
      total = total + jax.lax.slice_in_dim(padded, k, k + n, axis=axis)
    maps = total
  return maps


def top_k_mean(maps: jax.Array, k: int, valid: jax.Array | None = None
               ) -> jax.Array:
  """Mean of the `k` largest values of each map [N, H, W, 1] -> [N] (of all
  its valid values when it has fewer)."""
  flat = maps.reshape(maps.shape[0], -1)
  if valid is None:
    return jnp.mean(jax.lax.top_k(flat, min(k, flat.shape[1]))[0], axis=1)
  return _mean_of_finite_top_k(
      jnp.where(valid.reshape(flat.shape), flat, -jnp.inf), k)


def _mean_of_finite_top_k(values: jax.Array, k: int) -> jax.Array:
  """Mean of the `k` largest finite values of each row [N, M] (of all its
  finite values when it has fewer; -inf marks a value that is not one)."""
  top = jax.lax.top_k(values, min(k, values.shape[1]))[0]
  count = jnp.isfinite(top).sum(axis=1)
  return (jnp.where(jnp.isfinite(top), top, 0.0).sum(axis=1)
          / jnp.maximum(count, 1))


@dataclasses.dataclass(frozen=True)
class Reduction:
  """An image score as a reduction over row bands of the map.

  Attributes:
    halo: rows of context a band needs above and below its own rows.
    part: (band [N, H, W, 1], valid [N, H, W]: the map's pixels in it,
      own [N, H, W]: the band's own rows of them) -> summary [N, P].
    finish: the summaries of all bands, joined [N, sum P] -> scores [N].
  """
  halo: int
  part: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
  finish: Callable[[jax.Array], jax.Array]


@functools.lru_cache(maxsize=None)  # One object per setting: `banded`'s jit key.
def mean_filter_reduction(window: int) -> Reduction:
  """`max_of_mean_filter` by bands: each band's maximum over its own rows."""
  return Reduction(
      window // 2,
      lambda maps, valid, own: max_of_mean_filter(maps, window, valid,
                                                  own)[:, None],
      lambda parts: parts.max(axis=1))


@functools.lru_cache(maxsize=None)
def top_k_reduction(k: int) -> Reduction:
  """`top_k_mean` by bands: each band's k largest values of its own rows."""
  def part(maps, valid, own):
    del valid
    flat = jnp.where(own, maps[..., 0], -jnp.inf).reshape(maps.shape[0], -1)
    return jax.lax.top_k(flat, min(k, flat.shape[1]))[0]
  return Reduction(0, part, lambda parts: _mean_of_finite_top_k(parts, k))


BAND_ROWS = 1024  # Rows of a band of `banded`.
BAND_WIDTH_STEP = 256  # Band widths are padded up to a multiple of this.


def banded(reduction: Reduction, whole_map: np.ndarray,
           rows: int = BAND_ROWS) -> float:
  """The score of one map [H, W] (host) by bands of `rows` rows: memory for
  a band, not for a filtered copy of the map; one program per padded
  width."""
  h, w = whole_map.shape
  rows = min(rows, -(-h // 64) * 64)  # A short map: one band of its height.
  halo = reduction.halo
  width = -(-w // BAND_WIDTH_STEP) * BAND_WIDTH_STEP
  parts = []
  for start in range(0, h, rows):
    top, bottom = max(0, start - halo), min(h, start + rows + halo)
    # A new buffer each band: the CPU backend may read it asynchronously.
    band = np.zeros((rows + 2 * halo, width), np.float32)
    offset = top - (start - halo)
    band[offset:offset + bottom - top, :w] = whole_map[top:bottom]
    limits = np.array([offset, offset + bottom - top, halo,
                       halo + min(rows, h - start), w], np.int32)
    parts.append(_band_part(reduction, band, limits))
  return float(reduction.finish(jnp.concatenate(parts, axis=1))[0])


@functools.partial(jax.jit, static_argnums=0)
def _band_part(reduction: Reduction, band: jax.Array, limits: jax.Array
               ) -> jax.Array:
  """`reduction.part` of one band [H, W] whose map rows are
  limits[0]:limits[1], own rows limits[2]:limits[3], columns :limits[4]."""
  ys = jnp.arange(band.shape[0])[:, None]
  cols = jnp.arange(band.shape[1])[None, :] < limits[4]
  valid = (ys >= limits[0]) & (ys < limits[1]) & cols
  own = (ys >= limits[2]) & (ys < limits[3]) & cols
  return reduction.part(band[None, ..., None], valid[None], own[None])
