"""The fine stage's input, made from the coarse map (host reference version).

Steps (method doc, "Fine stage"), for a coarse output c and its image x:

1. r = |c| * 255 as 8-bit, clipped to [0, 255] (the reference wraps around);
2. histogram filter: keep intensities whose count <= p * (largest count), set
   the others to 0 (p = 1 in training, 0.95 at test);
3. 3x3 median filter (edges replicated); seeds = pixels > v (0 / 30);
4. SLIC superpixels of x (250 segments, compactness 8, sigma 1); keep every
   superpixel holding a seed;
5. FAS input = x outside the kept superpixels set to 0, divided by
   (max + 0.005) when its maximum exceeds 1.

This runs per image with NumPy, SciPy and scikit-image, in threads.

A whole image of another size than the training tiles (`scaled`) keeps the
tiles' superpixel size: SLIC's segment count grows with the area. On a padded
canvas (`boxes`: the image's top, left, height, width) every step sees the
image alone, as if it were cropped: the histogram counts its pixels, the
median repeats its edge, seeds and the FAS input stop at its border.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import numpy as np
from scipy import ndimage
from skimage.segmentation import slic


@dataclasses.dataclass(frozen=True)
class RefineParams:
  """Thresholds of the fine-stage input (config.refine)."""
  histogram_fraction: float = 1.0  # p: 1 in training, 0.95 at test.
  seed_threshold: int = 0  # v: 0 in training, 30 at test.
  n_segments: int = 250
  compactness: float = 8.0
  sigma: float = 1.0


def scaled(params: RefineParams, pixels: int, tile_pixels: int
           ) -> RefineParams:
  """The params of an image of `pixels` whose superpixels keep the size they
  have on a training tile of `tile_pixels`."""
  n = max(1, int(round(params.n_segments * pixels / tile_pixels)))
  return dataclasses.replace(params, n_segments=n)


def seeds(coarse: np.ndarray, params: RefineParams) -> np.ndarray:
  """Steps 1-3: the boolean seed map [H, W] of a coarse map [H, W]."""
  r = np.nan_to_num(np.abs(coarse) * 255.0, nan=0.0, posinf=255.0)
  r = np.clip(r, 0, 255).astype(np.uint8)
  counts = np.bincount(r.ravel(), minlength=256)
  keep = counts <= params.histogram_fraction * counts.max()
  r = np.where(keep[r], r, 0).astype(np.uint8)
  r = ndimage.median_filter(r, size=3, mode='nearest')
  return r > params.seed_threshold


def superpixels(image: np.ndarray, params: RefineParams) -> np.ndarray:
  """SLIC labels [H, W] (from 1) of an image [H, W, 3] in [0, 1]."""
  return slic(image.astype(np.float64), n_segments=params.n_segments,
              compactness=params.compactness, sigma=params.sigma,
              start_label=1, channel_axis=-1)


def keep_superpixels(seed_map: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Step 4: the boolean region of every superpixel that holds a seed."""
  kept = np.zeros(labels.max() + 1, bool)
  kept[labels[seed_map]] = True
  return kept[labels]


def crop(image: np.ndarray, region: np.ndarray) -> np.ndarray:
  """Step 5: zero outside `region`, rescale when the maximum exceeds 1."""
  x = image * region[..., None]
  top = x.max(initial=0.0)
  return x / (top + 0.005) if top > 1.0 else x


def fas_input(coarse: np.ndarray, image: np.ndarray,
              params: RefineParams) -> tuple[np.ndarray, np.ndarray]:
  """The FAS input [H, W, 3] and kept region [H, W] for one image."""
  region = keep_superpixels(seeds(coarse, params), superpixels(image, params))
  return crop(image, region).astype(np.float32), region


def fas_inputs(coarse: np.ndarray, images: np.ndarray, params: RefineParams,
               num_threads: int | None = None) -> np.ndarray:
  """Batched `fas_input`: coarse [N, H, W, 1], images [N, H, W, 3] -> [N, H, W, 3]."""
  with concurrent.futures.ThreadPoolExecutor(num_threads or os.cpu_count()) as ex:
    out = list(ex.map(lambda i: fas_input(coarse[i, ..., 0], images[i], params)[0],
                      range(len(images))))
  return np.stack(out)


# ---- The same steps as jitted JAX, batched, for accelerators ---------------


def box_mask(boxes, height: int, width: int):
  """Boolean [N, height, width]: the pixels inside each box [N, 4] (top,
  left, height, width), jit-able."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  ys = jnp.arange(height)[None, :, None]
  xs = jnp.arange(width)[None, None, :]
  top, left, h, w = (boxes[:, i, None, None] for i in range(4))
  return (ys >= top) & (ys < top + h) & (xs >= left) & (xs < left + w)


def _median9(values: list):
  """The elementwise median of 9 arrays by a min/max network (Paeth's 19
  exchanges; a selection, so exactly the sort's middle value). Sorting
  networks export to ONNX and TFLite, where a sort of the last axis does not."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  p = list(values)
  for a, b in ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5),
               (7, 8), (0, 3), (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7),
               (4, 2), (6, 4), (4, 2)):
    p[a], p[b] = jnp.minimum(p[a], p[b]), jnp.maximum(p[a], p[b])
  return p[4]


def _window3(r, boxes):
  """The 3 x 3 neighbours of r [N, H, W], 9 arrays [N, H, W]: edges repeated
  at the canvas's border and, with `boxes` [N, 4], at each image's box
  (scipy's 'nearest' on the cropped image; pixels outside a box get
  values no one reads)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from tasad_jax.fine import slic as device_slic  # pylint: disable=g-import-not-at-top
  _, h, w = r.shape
  padded = device_slic.pad_hw(r, 1, 'edge')
  ys, xs = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
  out = []
  for dy in (-1, 0, 1):
    rows = padded[:, 1 + dy:1 + dy + h]
    if boxes is not None and dy:  # The box's own edge row instead.
      top, height = boxes[:, 0, None, None], boxes[:, 2, None, None]
      inside = (ys + dy >= top) & (ys + dy < top + height)
      rows = jnp.where(inside, rows, padded[:, 1:1 + h])
    for dx in (-1, 0, 1):
      cell = rows[:, :, 1 + dx:1 + dx + w]
      if boxes is not None and dx:
        left, width = boxes[:, 1, None, None], boxes[:, 3, None, None]
        inside = (xs + dx >= left) & (xs + dx < left + width)
        cell = jnp.where(inside, cell, rows[:, :, 1:1 + w])
      out.append(cell)
  return out


def _histogram(values, valid):
  """Counts [N, 256] of the int32 values [N, P] in 0..255 where `valid`.

  A one-hot matrix product: value v = 16 hi + lo, and the count of (hi, lo)
  is the product of the [P, 16] one-hots of hi (masked) and of lo, exact in
  float32 below 2**24 values (a count of comparisons with all 256 levels
  beyond). 32 comparisons a value instead of 256, and no scatter.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n, p = values.shape
  if p >= 2 ** 24:
    onehot = values[..., None] == jnp.arange(256, dtype=jnp.int32)
    return jnp.sum(onehot & valid[..., None], axis=1, dtype=jnp.int32)
  sixteen = jnp.arange(16, dtype=jnp.int32)
  high = jax.lax.div(values, 16)  # Values are >= 0: floor division.
  hi = ((high[..., None] == sixteen) & valid[..., None]).astype(jnp.float32)
  lo = ((values - 16 * high)[..., None] == sixteen).astype(jnp.float32)
  counts = jnp.einsum('nph,npl->nhl', hi, lo,
                      precision=jax.lax.Precision.HIGHEST)
  return counts.reshape(n, 256).astype(jnp.int32)


def seeds_device(coarse, params: RefineParams, boxes=None):
  """Steps 1-3 on device: coarse maps [N, H, W] -> boolean seeds [N, H, W],
  of the pixels in `boxes` [N, 4] only when given.

  Written without scatters, sorts or bool gathers (a histogram as a matrix
  product, an int32 table lookup, a median network), so that the program
  exports to ONNX and TFLite; the results are the same integers.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  r = jnp.clip(jnp.nan_to_num(jnp.abs(coarse) * 255.0, nan=0.0, posinf=255.0),
               0, 255).astype(jnp.int32)
  n, h, w = r.shape
  valid = (jnp.ones(r.shape, bool) if boxes is None
           else box_mask(boxes, h, w))
  counts = _histogram(r.reshape(n, -1), valid.reshape(n, -1))
  limit = params.histogram_fraction * counts.max(axis=1, keepdims=True)
  # Each pixel's count, looked up in the int32 table (a gather the exporters
  # take, unlike a bool one), is compared with the limit.
  kept = jnp.take_along_axis(counts, r.reshape(n, -1), axis=1) <= limit
  r = jnp.where(kept.reshape(r.shape), r, 0)
  median = _median9(_window3(r, boxes))
  return (median > params.seed_threshold) & valid


def fas_inputs_device(coarse, images, params: RefineParams, choice=None,
                      boxes=None, unroll: bool = False):
  """Steps 1-5 on device: coarse [N, H, W, 1], images [N, H, W, 3] in [0, 1].

  Args:
    coarse: the coarse stage's maps.
    images: the images the maps were computed from.
    params: thresholds and SLIC parameters.
    choice: the superpixels of `images` as `tasad_jax.fine.slic.assign`
      returns them, or None to compute them here (given, they let an
      exported program be checked with the superpixels of another runtime).
    boxes: [N, 4] (top, left, height, width) of each image on its padded
      canvas, or None for the whole canvas.
    unroll: SLIC's iterations written out (`slic.assign`), for ONNX.

  Returns:
    (FAS input [N, H, W, 3], kept region [N, H, W] bool).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from tasad_jax.fine import slic as device_slic  # pylint: disable=g-import-not-at-top
  seed_map = seeds_device(coarse[..., 0], params, boxes)
  if choice is None:
    choice = device_slic.assign(images, params.n_segments, params.compactness,
                                params.sigma, unroll=unroll)
  region = device_slic.regions(choice, seed_map, params.n_segments)
  if boxes is not None:
    region &= box_mask(boxes, *images.shape[1:3])
  x = images * region[..., None]
  top = x.max(axis=(1, 2, 3), keepdims=True)
  return jnp.where(top > 1.0, x / (top + 0.005), x), region
