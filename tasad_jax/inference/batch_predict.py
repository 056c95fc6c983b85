"""Predicting a folder or glob of image files, streaming, for `predict.py`.

Files are read, scored and written a few at a time (at most `batch_size`
images and `max_batch_pixels` pixels), so memory stays bounded whatever the
number or size of the images. Per image: a row of `scores.csv` (path, score,
decision, error), a binary mask PNG and a heat-map overlay PNG, named after
the input's path below the inputs' common folder, extension kept
(`a/b.png` -> `masks/a/b.png.png`), so no two inputs share an output; at the
end, `index.html` lists them by score (`predictions_page`). A file that
cannot be read becomes an error row and the run goes on.

The output folder is built beside `output` and swapped in when complete
(`fileio.atomic_dir`): a stopped or failed run leaves the previous output, if
any, as it was and no half-filled folder.
"""

from __future__ import annotations

import csv
import glob
import os
import sys
import time
from typing import Any, Callable, Iterator

from absl import logging
import numpy as np

from tasad_jax.data import imageio
from tasad_jax.reporting import heatmaps, predictions_page
from tasad_jax.runtime import fileio
from tasad_jax.runtime.errors import UserInputError

RESULTS = 'scores.csv'
# Pixels of the images scored together: one 8000 x 8000 image, or many small.
MAX_BATCH_PIXELS = 1 << 26


def list_inputs(pattern: str) -> list[str]:
  """Image files named by a file, a folder (recursively) or a glob."""
  if os.path.isdir(pattern):
    found = [os.path.join(d, f) for d, _, files in os.walk(pattern)
             for f in files if imageio.is_image_file(f)]
  elif os.path.isfile(pattern):
    found = [pattern]
  else:
    found = [p for p in glob.glob(pattern, recursive=True)
             if os.path.isfile(p) and imageio.is_image_file(p)]
  if not found:
    raise UserInputError(f'{pattern}: no image files (--input)')
  return sorted(found)


def output_namer(paths: list[str]):
  """path -> its outputs' name: the path below the inputs' common folder,
  extension kept (distinct paths, distinct names)."""
  root = os.path.commonpath([os.path.dirname(os.path.abspath(p))
                             for p in paths])
  return lambda path: os.path.relpath(os.path.abspath(path), root)


def check_output(output: str) -> None:
  """Refuses an output that is a file, a folder of something else, or in a
  place that cannot be written, before any work."""
  fileio.check_writable(output, folder=True, what='--output')
  if os.path.isdir(output) and os.listdir(output) and not os.path.exists(
      os.path.join(output, RESULTS)):
    raise UserInputError(f'{output}: --output is a folder of other files '
                         f'(no {RESULTS}); give a new or empty folder')


def _batches(paths: list[str], size: int, max_pixels: int
             ) -> Iterator[list[tuple[str, np.ndarray | str]]]:
  """(path, image or error message) in batches of at most `size` images and
  `max_pixels` pixels (one image always fits)."""
  batch, pixels = [], 0
  for path in paths:
    try:
      image = imageio.read_image(path)
    except UserInputError as e:
      batch.append((path, str(e)))
      continue
    if batch and (len(batch) >= size or pixels + image.shape[0] * image.shape[1]
                  > max_pixels):
      yield batch
      batch, pixels = [], 0
    batch.append((path, image))
    pixels += image.shape[0] * image.shape[1]
  if batch:
    yield batch


def _save_png(path: str, shape, bands) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  heatmaps.write_png(path, shape[0], shape[1], 3 if len(shape) > 2 else 1,
                     bands)


def predict_files(workdir: str, pattern: str, output: str,
                  batch_size: int = 16, restore_step: int = 0,
                  max_batch_pixels: int = MAX_BATCH_PIXELS,
                  loader: Callable[[], Any] | None = None) -> dict:
  """Scores every image of `pattern` into the folder `output`; returns the
  counts of images, scored and failed.

  The model is the predictor of `workdir`, or what `loader` returns, called
  once the inputs and output are checked: anything with the predictor's
  `predict`, `thresholds` and `warnings` (an exported file's runner).
  """
  if batch_size < 1:
    raise UserInputError(f'--batch_size: {batch_size} must be >= 1')
  paths = list_inputs(pattern)
  check_output(output)
  if loader is None:
    from tasad_jax.inference import predictor  # pylint: disable=g-import-not-at-top
    model = predictor.load(workdir, restore_step)
  else:
    model = loader()
  for line in model.warnings:
    sys.stderr.write(f'warning: {line}\n')
  name_of = output_namer(paths)
  pixel_t = model.thresholds.get('pixel')

  def build(folder: str) -> dict:
    done = failed = 0
    start = time.perf_counter()
    with open(os.path.join(folder, RESULTS), 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['path', 'score', 'decision', 'error'])
      for batch in _batches(paths, batch_size, max_batch_pixels):
        images = [x for _, x in batch if not isinstance(x, str)]
        result = model.predict(images) if images else None
        i = -1
        for path, image in batch:
          if isinstance(image, str):
            writer.writerow([path, '', '', image])
            failed += 1
            continue
          i += 1
          heat, name = result['anomaly_maps'][i], name_of(path)
          decision = ('' if result['decisions'] is None
                      else int(result['decisions'][i]))
          writer.writerow([path, f'{result["scores"][i]:.6f}', decision, ''])
          if result['masks'] is not None:
            mask = result['masks'][i]
            _save_png(os.path.join(folder, 'masks', name + '.png'), mask.shape,
                      (mask[y:y + heatmaps.ROWS].astype(np.uint8) * 255
                       for y in range(0, len(mask), heatmaps.ROWS)))
          scale = max((heat.max() if pixel_t is None else pixel_t) * 2, 1e-6)
          _save_png(os.path.join(folder, 'heatmaps', name + '.png'),
                    image.shape, heatmaps.overlay_bands(image, heat,
                                                        scale=1.0 / scale))
        done += len(batch)
        rate = done / (time.perf_counter() - start)
        sys.stderr.write(f'\r{done}/{len(paths)} images  {rate:.1f}/s')
        sys.stderr.flush()
    sys.stderr.write('\n')
    predictions_page.write_predict_index(folder, name_of)
    logging.info('Scored %d images, %d unreadable', done - failed, failed)
    return {'images': len(paths), 'scored': len(paths) - failed,
            'failed': failed}

  return fileio.atomic_dir(output, build)
