"""A validation split carved from the normal training images.

Settings (resize mode, sources, steps, ...) are chosen on this split, not on
the test split. Its images are the normal train images that training holds
out for the thresholds (`holdout.split_holdout` with the config's seed and
`threshold.holdout_fraction`: never trained on). Each is written as
`test/good/<name>.png` and, with synthetic defects, as `test/<kind>/<name>.png`
with an exact mask under `ground_truth/<kind>/`, at its native size in MVTec
layout; so any method in any resize mode evaluates on it with
`evaluate.py --config.data.root=<output>`.

The defects are drawn here with NumPy and scikit-image, not by the training
stream's generator (SAIM, Perlin): a setting that only learns to find its own
pseudo-anomalies is not rewarded. Kinds, sized by the image's short side s:

* `pore`: one to three discs of radius 0.8-2.5% of s (at least 1.5 pixels),
  darker or brighter, like blowholes;
* `crack`: a thin random-walk line (1 to 0.8% of s wide, 15-45% of s long),
  darker, like cracks;
* `blotch`: a smooth noise blob of 0.5-4% of the image, filled with a
  texture of the configured anomaly sources, like stains and breaks;
* `shade`: a large, low-contrast change of brightness: a smooth region of
  10-40% of the image made 6-15% darker or brighter, like uneven coating
  or a part out of tolerance: larger than a tile, so a model that sees
  tiles alone misses it.

`kinds` chooses among them (image i gets kinds[i % len(kinds)]; each image's
draws depend on its index alone, so the split of the first three kinds is
the one written before `shade` existed).

Deterministic in (config.seed, image index). The set is small (the hold-out is
10% of the train images): its figures carry sampling noise; compare settings
by clear margins.
"""

from __future__ import annotations

import os

import numpy as np
from skimage import draw, filters, morphology

from tasad_jax.data import drawing
from tasad_jax.runtime import fileio
from tasad_jax.data import holdout
from tasad_jax.data import imageio, layouts, mvtec, sources
from tasad_jax.runtime.errors import UserInputError

KINDS = ('pore', 'crack', 'blotch', 'shade')


def _shift(image: np.ndarray, mask: np.ndarray, rng, lo=0.25, hi=0.5,
           darker: bool | None = None) -> np.ndarray:
  """The image with `mask`'s pixels moved towards black or white."""
  out = image.astype(np.float32)
  amount = rng.uniform(lo, hi)
  darker = rng.random() < 0.7 if darker is None else darker
  target = 0.0 if darker else 255.0
  out[mask] += amount * (target - out[mask])
  return out


def pore(image: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
  h, w = image.shape[:2]
  s = min(h, w)
  mask = np.zeros((h, w), bool)
  for _ in range(rng.integers(1, 4)):
    r = max(1.5, rng.uniform(0.008, 0.025) * s)
    cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
    mask[draw.disk((cy, cx), r, shape=(h, w))] = True
  return _shift(image, mask, rng, 0.35, 0.7), mask


def crack(image: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
  h, w = image.shape[:2]
  s = min(h, w)
  length = rng.uniform(0.15, 0.45) * s
  steps = int(rng.integers(6, 15))
  start = (rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0.2 * w, 0.8 * w))
  line = np.zeros((h, w), bool)
  drawing.random_walk(line, rng, start, rng.uniform(0, 2 * np.pi), steps, 0.5,
                      lambda: length / steps, (0, 0), (h - 1, w - 1), round)
  width = max(1, int(round(rng.uniform(0.0, 0.008) * s)))  # 1 px up to 0.8%.
  mask = (morphology.dilation(line, morphology.disk(width // 2)) if width > 1
          else line)
  return _shift(image, mask, rng, 0.3, 0.6, darker=True), mask


def blotch(image: np.ndarray, rng, texture: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
  h, w = image.shape[:2]
  area = rng.uniform(0.005, 0.04) * h * w
  side = int(np.clip(np.sqrt(area) * 2.5, 8, min(h, w)))
  noise = filters.gaussian(rng.normal(size=(side, side)), sigma=side / 8)
  inside = np.zeros((side, side), bool)
  yy, xx = np.mgrid[:side, :side]
  window = ((yy - side / 2) ** 2 + (xx - side / 2) ** 2) <= (side / 2) ** 2
  values = np.where(window, noise, -np.inf)
  count = int(min(area, window.sum()))
  inside.flat[np.argsort(values, axis=None)[::-1][:count]] = True
  top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
  mask = np.zeros((h, w), bool)
  mask[top:top + side, left:left + side] = inside
  patch = imageio.resize_image(texture, (h, w)).astype(np.float32)
  if _is_grey(image):
    patch = np.repeat(patch.mean(-1, keepdims=True), 3, -1)
  beta = rng.uniform(0.5, 0.9)
  out = image.astype(np.float32)
  out[mask] = (1 - beta) * out[mask] + beta * patch[mask]
  return out, mask


def shade(image: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
  h, w = image.shape[:2]
  # Low-frequency noise at a coarse grid, upsampled: a few broad lobes.
  grid = rng.normal(size=(int(rng.integers(2, 5)), int(rng.integers(2, 5))))
  field = imageio.resize_map(grid.astype(np.float32), h, w)
  field = filters.gaussian(field, sigma=max(1.0, min(h, w) / 16))
  fraction = rng.uniform(0.10, 0.40)
  mask = field >= np.quantile(field, 1.0 - fraction)
  return _shift(image, mask, rng, 0.06, 0.15), mask


def _is_grey(image: np.ndarray) -> bool:
  return bool(np.all(image[..., 0] == image[..., 1]) and
              np.all(image[..., 1] == image[..., 2]))


def defect(image: np.ndarray, kind: str, rng, textures: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 image with a `kind` defect, its bool mask), the mask non-empty."""
  for _ in range(20):
    if kind == 'pore':
      out, mask = pore(image, rng)
    elif kind == 'crack':
      out, mask = crack(image, rng)
    elif kind == 'shade':
      out, mask = shade(image, rng)
    else:
      out, mask = blotch(image, rng, textures[rng.integers(len(textures))])
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    changed = np.any(out != image, axis=-1)
    if changed.any():
      return out, mask
  raise ValueError(f'no visible {kind} on a flat image')


def held_out(config) -> list:
  """The train samples training holds out for the thresholds."""
  train = layouts.scan(config).train
  _, held = holdout.holdout_indices(len(train),
                                       config.threshold.holdout_fraction,
                                       config.seed)
  return [train[i] for i in held]


def write_split(config, output: str, source: str = '',
                kinds: tuple[str, ...] = KINDS) -> dict[str, int]:
  """Writes the validation category `config.data.category` under `output`.

  `source` names the blotches' textures as `config.anomaly.source` does
  (default: that field's); `kinds` the defects, in turn over the images.

  Returns:
    {'good': n, <kind>: n, ...}, the number of test images of each kind.

  Raises:
    UserInputError: no normal image is held out (holdout_fraction 0, or a
      single train image).
  """
  kinds = tuple(kinds)
  if not kinds or any(k not in KINDS for k in kinds) or len(set(kinds)) < len(
      kinds):
    raise UserInputError(f'--kinds: {",".join(kinds)!r} must be distinct '
                         f'names of {",".join(KINDS)}')
  fileio.check_writable(output, folder=True, what='--output')
  samples = held_out(config)
  if not samples:
    raise UserInputError('config.threshold.holdout_fraction: no train image is '
                         'held out, so there is nothing to validate on')
  a = config.anomaly
  textures = sources.load_source_images(
      source or a.source, 256, seed=config.seed,
      builtin_variants=a.builtin_variants, tfds_data_dir=a.tfds_data_dir or None)
  category = config.data.category

  def build(base):
    counts = {'good': 0, **{k: 0 for k in kinds}}
    for i, sample in enumerate(samples):
      image = imageio.read_image(sample.path)
      for split in ('train', 'test'):
        mvtec.write_sample(base, split, 'good', f'{i:03d}', image)
      counts['good'] += 1
      kind = kinds[i % len(kinds)]
      rng = np.random.default_rng([config.seed, 23, i])
      bad, mask = defect(image, kind, rng, textures)
      mvtec.write_sample(base, 'test', kind, f'{i:03d}', bad, mask)
      counts[kind] += 1
    return counts

  return fileio.atomic_dir(os.path.join(output, category), build)
