"""Decision thresholds from normal images alone.

Production lines rarely have labelled defects when a model is deployed, so the
thresholds come from a held-out slice of the normal training images (never
trained on): the image-score threshold is the (1 - target rate) quantile of
their image scores, the pixel threshold the same quantile of their map values.
With a 1% target, about 1 normal image in 100 is flagged. They are stored in
`<workdir>/thresholds.json`; evaluation reports the F1-optimal thresholds of the
test set beside them.
"""

from __future__ import annotations

import json
import os

import numpy as np

from tasad_jax import fileio

FILE = 'thresholds.json'


def split_holdout(images: np.ndarray, fraction: float, seed: int):
  """(train, held-out) parts of the normal images; at least one of each when
  there are two or more images and fraction > 0."""
  n = len(images)
  count = int(round(fraction * n))
  if fraction > 0 and n >= 2:
    count = min(max(count, 1), n - 1)
  else:
    count = 0
  order = np.random.default_rng([seed, 17]).permutation(n)
  held = np.sort(order[:count])
  keep = np.sort(order[count:])
  return images[keep], images[held]


def from_normal(image_scores: np.ndarray, maps: np.ndarray,
                target_rate: float) -> dict:
  """Thresholds that flag `target_rate` of the normal images and pixels."""
  q = 1.0 - target_rate

  def quantile(values):
    values = np.asarray(values, np.float64).ravel()
    values = values[np.isfinite(values)]
    return float(np.quantile(values, q)) if values.size else float('nan')

  return {'image': quantile(image_scores),
          'pixel': quantile(maps),
          'target_false_alarm_rate': float(target_rate),
          'num_images': int(len(image_scores))}


def save(workdir: str, values: dict) -> None:
  fileio.write_json(os.path.join(workdir, FILE), values)


def load(workdir: str) -> dict | None:
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)

