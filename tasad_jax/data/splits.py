"""A category's train and test splits in host memory, as NumPy arrays.

The one reader of a split for training, evaluation, thresholds and the
synthetic validation split; no TensorFlow unless `config.data.loader='tfds'`.
"""

from __future__ import annotations

import numpy as np

from tasad_jax.core import tiling
from tasad_jax.data import layouts, mvtec, working_resolution


def load_split(config, split: str) -> dict[str, np.ndarray]:
  """Loads 'train' or 'test' of the configured category into host memory:
  arrays [N, S, S, 3] for 'squash', object arrays of images at their working
  resolution for 'pad' and 'tile' (`data.working_resolution`)."""
  if config.data.loader == 'tfds':
    from tasad_jax.data import tfds_mvtec  # pylint: disable=g-import-not-at-top
    return tfds_mvtec.load_split(config, split)
  category = layouts.scan(config)
  samples = category.train if split == 'train' else category.test
  geometry = tiling.Geometry.from_config(config)
  if geometry.mode != 'squash':  # Images of their own sizes, object arrays.
    return working_resolution.load_samples(samples, geometry,
                                           config.data.load_threads or None)
  return mvtec.load_samples(samples, config.data.image_size,
                            config.data.load_threads or None)
