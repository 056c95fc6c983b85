"""The embedded default dataset: a small MVTec-layout category made offline.

Normal images are crops of scikit-image's bundled brick photograph, tinted and
lit a little differently each time. Test defects are drawn by this module alone
(scratches, cracks, holes, stains), with exact masks: a pixel is changed if and
only if it is in the mask. Nothing here is shared with the training
pseudo-anomalies (`tasad_jax.data.pseudo_anomalies`), so a model that scores well on these
defects has learnt something beyond reproducing its own training distribution.

The category is built on first use into a cache directory, `$TASAD_JAX_CACHE`
(default `~/.cache/tasad_jax`), atomically, and is deterministic given its seed.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
from scipy import ndimage
from skimage import data as skdata
from skimage import draw

from tasad_jax.data import drawing
from tasad_jax.data import mvtec

CATEGORY = 'brick'
DEFECT_TYPES = ('scratch', 'crack', 'hole', 'stain')
VERSION = 1
_BRICK_TINT = np.array([1.0, 0.64, 0.50])


def cache_dir() -> str:
  """Where built datasets and source caches live (`$TASAD_JAX_CACHE`)."""
  default = os.path.join(
      os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')),
      'tasad_jax')
  return os.environ.get('TASAD_JAX_CACHE') or default


def _normal(rng: np.random.Generator, size: int) -> np.ndarray:
  """A normal sample: a tinted, jittered crop of the brick wall, float RGB 0..255."""
  texture = skdata.brick().astype(np.float64)
  crop = int(texture.shape[0] * rng.uniform(0.45, 0.55))
  y, x = rng.integers(0, texture.shape[0] - crop + 1, size=2)
  patch = texture[y:y + crop, x:x + crop]
  if rng.random() < 0.5:
    patch = patch[:, ::-1]
  patch = ndimage.zoom(patch, size / crop, order=1)[:size, :size]
  gain, offset = rng.uniform(0.9, 1.1), rng.uniform(-8, 8)
  tint = _BRICK_TINT * rng.uniform(0.96, 1.04, size=3)
  rgb = (patch[..., None] * gain + offset) * tint + 25.0
  rgb += rng.normal(0.0, 1.5, size=rgb.shape)
  return np.clip(rgb, 0, 255)


def _thick(mask: np.ndarray, width: int) -> np.ndarray:
  if width <= 1:
    return mask
  return ndimage.binary_dilation(mask, iterations=width // 2) if width > 2 else (
      mask | np.roll(mask, 1, axis=0) | np.roll(mask, 1, axis=1))


def _scratch(rng, size):
  """A light, thin curved scratch."""
  mask = np.zeros((size, size), bool)
  p = rng.uniform(0.1, 0.9, size=(3, 2)) * size
  length = rng.uniform(0.25, 0.6) * size
  direction = rng.uniform(0, 2 * np.pi)
  p[2] = p[0] + length * np.array([np.cos(direction), np.sin(direction)])
  p = np.clip(p, 2, size - 3).astype(int)
  rr, cc = draw.bezier_curve(p[0, 0], p[0, 1], p[1, 0], p[1, 1], p[2, 0],
                             p[2, 1], weight=1.0, shape=mask.shape)
  mask[rr, cc] = True
  mask = _thick(mask, int(rng.integers(2, 5)))
  colour = rng.uniform(215, 250) * np.array([1.0, 0.97, 0.92])
  return mask, lambda img: 0.15 * img + 0.85 * colour


def _crack(rng, size):
  """A dark, jagged crack with a branch or two."""
  mask = np.zeros((size, size), bool)
  starts = [rng.uniform(0.2, 0.8, size=2) * size]
  for branch in range(int(rng.integers(1, 4))):
    pos = starts[-1] if branch == 0 else starts[int(rng.integers(len(starts)))]
    heading = rng.uniform(0, 2 * np.pi)
    starts += drawing.random_walk(mask, rng, pos, heading,
                                  int(rng.integers(8, 20)), 0.6,
                                  lambda: rng.uniform(3, 8), 1, size - 2)
  mask = _thick(mask, int(rng.integers(2, 4)))
  depth = rng.uniform(0.15, 0.35)
  return mask, lambda img: img * depth


def _hole(rng, size):
  """A dark elliptic hole, deeper at its centre."""
  mask = np.zeros((size, size), bool)
  r0, c0 = rng.uniform(0.15, 0.85, size=2) * size
  ry, rx = rng.uniform(0.025, 0.07, size=2) * size
  rr, cc = draw.ellipse(r0, c0, ry, rx, shape=mask.shape,
                        rotation=rng.uniform(0, np.pi))
  mask[rr, cc] = True
  yy, xx = np.mgrid[:size, :size]
  radius = np.sqrt(((yy - r0) / ry) ** 2 + ((xx - c0) / rx) ** 2)
  shade = (12.0 + 45.0 * np.clip(radius, 0, 1))[..., None]
  return mask, lambda img: shade + 0.1 * img


def _stain(rng, size):
  """An irregular discoloured blob (oil, water, dirt)."""
  mask = np.zeros((size, size), bool)
  extent = int(size * rng.uniform(0.12, 0.3))
  noise = ndimage.gaussian_filter(rng.normal(size=(extent, extent)),
                                  sigma=extent / 6)
  yy, xx = np.mgrid[:extent, :extent] - (extent - 1) / 2
  falloff = 1 - np.sqrt(yy**2 + xx**2) / (extent / 2)
  blob = (noise / (noise.std() + 1e-9) * 0.35 + falloff) > 0.45
  y, x = rng.integers(0, size - extent, size=2)
  mask[y:y + extent, x:x + extent] = blob
  tint = rng.uniform([0.35, 0.45, 0.25], [0.6, 0.7, 0.45])
  return mask, lambda img: img * tint + 10.0


_DEFECTS = {'scratch': _scratch, 'crack': _crack, 'hole': _hole,
            'stain': _stain}


def make_sample(seed: int, split: str, index: int, defect: str | None = None,
                size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Draws one sample deterministically.

  Returns:
    (normal, image, mask): the defect-free image, the image with the defect
    (equal to `normal` when `defect` is None), both uint8 [size, size, 3], and
    the uint8 {0, 1} mask [size, size] of exactly the changed pixels.
  """
  key = [seed, VERSION, sum(map(ord, split)), index,
         DEFECT_TYPES.index(defect) + 1 if defect else 0]
  rng = np.random.default_rng(key)
  normal = _normal(rng, size).round().astype(np.uint8)
  if defect is None:
    return normal, normal, np.zeros((size, size), np.uint8)
  while True:
    mask, paint = _DEFECTS[defect](rng, size)
    if mask.sum() >= 12:
      break
  painted = np.clip(paint(normal.astype(np.float64)), 0, 255).round()
  image = np.where(mask[..., None], painted, normal).astype(np.uint8)
  changed = np.any(image != normal, axis=-1)
  return normal, image, changed.astype(np.uint8)


def build(dest: str, seed: int = 0, num_train: int = 200, num_test_good: int = 40,
          num_per_defect: int = 20, size: int = 256) -> str:
  """Writes the category in MVTec layout under `dest/brick`; returns `dest`."""
  base = os.path.join(dest, CATEGORY)
  folders = [('train', 'good', None, num_train), ('test', 'good', None, num_test_good)]
  folders += [('test', d, d, num_per_defect) for d in DEFECT_TYPES]
  for split, folder, defect, count in folders:
    os.makedirs(os.path.join(base, split, folder), exist_ok=True)
    for i in range(count):
      _, image, mask = make_sample(seed, f'{split}/{folder}', i, defect, size)
      mvtec.write_sample(base, split, folder, f'{i:03d}', image,
                         mask if defect else None)
  return dest


def embedded_root(seed: int = 0) -> str:
  """Returns the root of the embedded dataset, building it on first use."""
  root = os.path.join(cache_dir(), f'embedded_v{VERSION}_seed{seed}')
  done = os.path.join(root, '.complete')
  if os.path.exists(done):
    return root
  os.makedirs(cache_dir(), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.embedded-', dir=cache_dir())
  try:
    build(tmp, seed=seed)
    open(os.path.join(tmp, '.complete'), 'w').close()
    if os.path.exists(done):  # Another process finished first: keep its build.
      return root
    if os.path.exists(root):  # An incomplete build left behind: replace it.
      shutil.rmtree(root, ignore_errors=True)
    try:
      os.rename(tmp, root)
    except OSError:  # Another process finished first.
      if not os.path.exists(done):
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return root
