"""Decision thresholds from normal images alone.

Production lines rarely have labelled defects when a model is deployed, so the
thresholds come from a held-out slice of the normal training images (never
trained on): the image-score threshold is the (1 - target rate) quantile of
their image scores, the pixel threshold the same quantile of their map values.
With a 1% target, about 1 normal image in 100 is flagged. They are stored in
`<workdir>/thresholds.json` (those of the final stage at the top level, and
under 'per_method' those of the coarse stage alone and of coarse + FAS);
evaluation reports the F1-optimal thresholds of the
test set beside them.
"""

from __future__ import annotations

import json
import os

import numpy as np

from tasad_jax.core import names
from tasad_jax.runtime import fileio
from tasad_jax.core import metrics
from tasad_jax.runtime.errors import UserInputError

FILE = 'thresholds.json'


def from_normal(image_scores: np.ndarray, maps: np.ndarray,
                target_rate: float) -> dict:
  """Thresholds that flag `target_rate` of the normal images and pixels."""
  q = 1.0 - target_rate

  def quantile(values):  # An array, or one map per image of any size.
    values = metrics.pooled(values, np.float64)
    values = values[np.isfinite(values)]
    return float(np.quantile(values, q)) if values.size else float('nan')

  return {'image': quantile(image_scores),
          'pixel': quantile(maps),
          'target_false_alarm_rate': float(target_rate),
          'num_images': int(len(image_scores))}


def per_method(outputs: dict, target_rate: float) -> dict:
  """{'cas': ..., 'tasad'?: ...}: `from_normal` thresholds of each stage's
  maps and scores in inference outputs ('<method>_map', '<method>_score')."""
  return {m: from_normal(outputs[f'{m}_score'], outputs[f'{m}_map'], target_rate)
          for m in names.present(outputs)}


def for_output(trained: dict | None, method: str) -> dict:
  """{'image', 'pixel', ...}: the thresholds of output `method` ('cas' or
  'tasad') in a thresholds.json dict; {} when it holds none for it (never
  another output's: a coarse score against coarse+FAS thresholds would
  decide wrongly without a word)."""
  if not trained:
    return {}
  if method in trained.get('per_method', {}):
    return dict(trained['per_method'][method])
  if trained.get('method', names.TWO_STAGE) == method:  # Before per_method.
    return {k: trained[k] for k in ('image', 'pixel') if k in trained}
  return {}


def pixel_threshold(trained: dict | None, method: str) -> float | None:
  """The normal-data pixel threshold of output `method` ('cas' or 'tasad')
  in a thresholds.json dict, or None when it holds none for that method."""
  return for_output(trained, method).get('pixel')


def decide(maps: list[np.ndarray], scores: np.ndarray, values: dict) -> dict:
  """The predictor's outputs of per-image maps and scores: maps [N, H, W]
  when all have one size (a list otherwise; one image's map is a view, not a
  copy), and the decisions and masks of the image and pixel thresholds in
  `values` (`for_output`; None without them)."""
  same = len({m.shape for m in maps}) == 1
  pack = ((lambda v: v[0][None] if len(v) == 1 else np.stack(v)) if same
          else (lambda v: v))
  image_t, pixel_t = values.get('image'), values.get('pixel')
  return {
      'anomaly_maps': pack(maps),
      'scores': scores,
      'decisions': None if image_t is None else scores > image_t,
      'masks': None if pixel_t is None else pack([m > pixel_t for m in maps]),
  }


def save(workdir: str, values: dict) -> None:
  fileio.write_json(os.path.join(workdir, FILE), values)


def load(workdir: str) -> dict | None:
  """A workdir's thresholds.json (None without one); a damaged one raises
  UserInputError naming the file."""
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      values = json.load(f)
    for entry in [values] + list(values.get('per_method', {}).values()):
      for key in ('image', 'pixel'):
        if key in entry:
          float(entry[key])
  except (OSError, ValueError, TypeError, AttributeError) as e:
    raise UserInputError(f'{path}: unreadable thresholds ({e}); delete it or '
                         'retrain to make it again') from None
  return values

