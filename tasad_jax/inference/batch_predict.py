"""Predicting a folder or glob of image files, streaming, for `predict.py`.

Files are read, scored and written a batch at a time, so memory stays bounded
whatever the number of images. Per image: a row of `scores.csv` (path, score,
decision, error), a binary mask PNG and a heat-map overlay PNG; at the end,
`index.html` lists them by score (see `report.write_predict_index`). A file
that cannot be read becomes an error row and the run goes on.
"""

from __future__ import annotations

import csv
import glob
import os
import sys
import time
from typing import Iterator

import numpy as np
from PIL import Image

from tasad_jax.inference import predictor as predictor_lib
from tasad_jax.reporting import html_report, heatmaps
from tasad_jax.data import imageio
from tasad_jax.runtime.errors import UserInputError


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


def _output_name(path: str, root: str) -> str:
  rel = os.path.relpath(path, root) if root else os.path.basename(path)
  return os.path.splitext(rel)[0].replace(os.sep, '__')


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
  for start in range(0, len(items), size):
    yield items[start:start + size]


def predict_files(workdir: str, pattern: str, output: str,
                  batch_size: int = 16, restore_step: int = 0) -> dict:
  """Scores every image of `pattern`; returns counts of scored and failed."""
  paths = list_inputs(pattern)
  if os.path.exists(output) and not os.path.isdir(output):
    raise UserInputError(f'{output}: output exists and is not a folder')
  model = predictor_lib.load(workdir, restore_step)
  root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
  for sub in ('masks', 'heatmaps'):
    os.makedirs(os.path.join(output, sub), exist_ok=True)
  partial = os.path.join(output, 'scores.csv.partial')
  done = failed = 0
  start = time.perf_counter()
  with open(partial, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['path', 'score', 'decision', 'error'])
    for chunk in _chunks(paths, batch_size):
      images, good = [], []
      for path in chunk:
        try:
          images.append(imageio.read_image(path))
          good.append(path)
        except UserInputError as e:
          writer.writerow([path, '', '', str(e)])
          failed += 1
      if good:
        result = model.predict(images)
        for i, path in enumerate(good):
          name = _output_name(os.path.abspath(path), root)
          heat = result['anomaly_maps'][i]
          decision = '' if result['decisions'] is None else int(result['decisions'][i])
          writer.writerow([path, f'{result["scores"][i]:.6f}', decision, ''])
          if result['masks'] is not None:
            Image.fromarray(result['masks'][i].astype(np.uint8) * 255).save(
                os.path.join(output, 'masks', name + '.png'))
          scale = max(model.thresholds.get('pixel', heat.max()) * 2, 1e-6)
          Image.fromarray(heatmaps.overlay(images[i] / 255.0, heat / scale)).save(
              os.path.join(output, 'heatmaps', name + '.png'))
      done += len(chunk)
      f.flush()
      rate = done / (time.perf_counter() - start)
      sys.stderr.write(f'\r{done}/{len(paths)} images  {rate:.1f}/s')
      sys.stderr.flush()
  sys.stderr.write('\n')
  os.replace(partial, os.path.join(output, 'scores.csv'))
  html_report.write_predict_index(
      output, lambda p: _output_name(os.path.abspath(p), root))
  return {'images': len(paths), 'scored': len(paths) - failed, 'failed': failed}
