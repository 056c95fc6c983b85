"""`train.py --inspect_data`: what each stage's stream draws from, a batch
summary, the stream's rate and a preview PNG of the pseudo-anomalies."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from tasad_jax.data import layouts, pipeline, splits
from tasad_jax.runtime.errors import UserInputError


def batch_summary(batch: dict[str, Any]) -> str:
  """A few lines describing a train batch: shapes, ranges, anomaly statistics."""
  lines = []
  for key in ('image', 'augmented', 'mask', 'label', 'real'):
    v = np.asarray(batch[key])
    lines.append(f'  {key:10s} {str(v.dtype):8s} {str(v.shape):20s} '
                 f'min {v.min():.3f}  max {v.max():.3f}  mean {v.mean():.3f}')
  labels = np.asarray(batch['label'])
  area = np.asarray(batch['mask']).mean(axis=(1, 2, 3))
  lines.append(f'  anomalous {labels.sum()}/{len(labels)}; mask area of '
               f'anomalous samples {100 * area[labels > 0].mean() if labels.any() else 0:.1f}%')
  return '\n'.join(lines)


def preview(batch: dict[str, Any], path: str, rows: int = 8) -> None:
  """Writes a PNG with rows of (image, augmented, mask) for a visual check."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  n = min(rows, len(batch['image']))
  tiles = []
  for i in range(n):
    mask = np.repeat(np.asarray(batch['mask'][i]), 3, axis=-1)
    tiles.append(np.concatenate(
        [batch['image'][i], batch['augmented'][i], mask], axis=1))
  grid = (np.concatenate(tiles, axis=0) * 255).round().astype(np.uint8)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  Image.fromarray(grid).save(path)
  logging.info('Wrote %s', path)


def inspect_data(config, workdir: str | None, num_batches: int = 20) -> None:
  """Builds both stages' streams, prints what they hold and a batch summary.

  A quick check of a new dataset before training: counts per split and defect
  type, sources per stage, a summary of one batch, the stream's images/s, and a
  preview PNG in `workdir` (when given) to look at the pseudo-anomalies.
  """
  import time  # pylint: disable=g-import-not-at-top
  if workdir and os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserInputError(f'{workdir}: workdir exists and is not a folder')
  category = layouts.scan(config)
  print(f'Category {category.name!r} at {category.root}: '
        f'{len(category.train)} train images, {len(category.test)} test images')
  for defect in ('good',) + category.defect_types:
    n = sum(s.defect_type == defect for s in category.test)
    print(f'  test/{defect}: {n}')
  train_images = splits.load_split(config, 'train')['image']
  cas = pipeline.load_train_data(config, 'cas', train_images)
  fas = pipeline.load_train_data(config, 'fas', train_images, cas.sources)
  batch_size = config.train.batch_size
  for stage, data in (('cas', cas), ('fas', fas)):
    print(f'Stage {stage}: {len(data.images)} normal images, '
          f'{len(data.pool)} anomaly sources ({config.anomaly.source})')
    it = pipeline.train_dataset(data, config, stage, batch_size=batch_size,
                       process_index=0, process_count=1).as_numpy_iterator()
    batch = next(it)
    start = time.perf_counter()
    for _ in range(num_batches):
      next(it)
    rate = num_batches * batch_size / (time.perf_counter() - start)
    print(batch_summary(batch))
    print(f'  stream: {rate:.0f} images/s at {config.data.image_size}x'
          f'{config.data.image_size}')
    if workdir:
      path = os.path.join(workdir, f'data_preview_{stage}.png')
      preview(batch, path)
      print(f'  preview: {path}')
