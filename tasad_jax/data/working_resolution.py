"""Loading samples at their working resolution ('pad' and 'tile' resize modes).

Each image is resized to `tiling.Geometry.working_size` of its own size (the
long side at `image_size` for 'pad', `scale` times its size for 'tile'), so a
split holds images of different sizes: 1-D object arrays of uint8 arrays.
Masks are read at the evaluation resolution (`Geometry.eval_size`: the
working size, its long side capped at `config.eval.max_side`), with nearest
neighbour, as the 'squash' reader (`mvtec.load_samples`) does at S x S.
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import Sequence

import numpy as np

from tasad_jax.core import tiling
from tasad_jax.data import imageio
from tasad_jax.data.mvtec import Sample


def _load_one(sample: Sample, geometry: tiling.Geometry
              ) -> tuple[np.ndarray, np.ndarray]:
  image = imageio.read_image(sample.path)
  size = geometry.working_size(*image.shape[:2])
  mask_size = geometry.eval_size(*size)
  if sample.mask_path is None:  # A read-only view: no memory per image.
    mask = np.broadcast_to(np.zeros((1, 1), np.uint8), mask_size)
  else:
    mask = imageio.resize_mask(imageio.read_mask(sample.mask_path), mask_size)
  return imageio.resize_image(image, size), mask[..., None]


def load_samples(samples: Sequence[Sample], geometry: tiling.Geometry,
                 num_threads: int | None = None) -> dict[str, np.ndarray]:
  """Decodes samples at their working resolution.

  Returns:
    {'image': object [N] of uint8 [H_i, W_i, 3], 'mask': object [N] of uint8
     {0, 1} [h_i, w_i, 1] (the evaluation size), 'label': int32 [N],
     'defect_type': str [N], 'path': str [N]}.
  """
  with concurrent.futures.ThreadPoolExecutor(num_threads or os.cpu_count()) as ex:
    loaded = list(ex.map(lambda s: _load_one(s, geometry), samples))
  return {
      'image': tiling.ragged([image for image, _ in loaded]),
      'mask': tiling.ragged([mask for _, mask in loaded]),
      'label': np.array([s.label for s in samples], np.int32),
      'defect_type': np.array([s.defect_type for s in samples], dtype=object),
      'path': np.array([s.path for s in samples], dtype=object),
  }
