"""Weak supervision: a few real defect images ('labelled anomalies').

`config.data.labelled_anomalies` names them:

* `''`: none (the default; every method is then unsupervised);
* `'test:N'`: N images per defect type taken from the category's test split,
  a seeded choice (`config.seed`), at most all but one of each type so that
  every type stays in the evaluation;
* any other string: a folder in MVTec layout holding `test/<type>/*` and
  `ground_truth/<type>/*_mask.*` (its `test/good` is ignored).

Training mixes them into every stage's pseudo-anomaly stream at
`config.data.labelled_rate` (`input_pipeline.train_dataset`) and records their
files in `<workdir>/labelled_anomalies.json`. Evaluation leaves out of the test
split every file that the workdir's record or the config names, and reports
how many (`labelled_anomalies_excluded` in metrics.json, a line under the
table). Files are compared by their real path.
"""

from __future__ import annotations

import json
import logging
import os
import zlib

import numpy as np

from tasad_jax.data import splits
from tasad_jax.runtime import fileio
from tasad_jax.data import mvtec
from tasad_jax.runtime.errors import UserInputError

RECORD = 'labelled_anomalies.json'
FROM_TEST = 'test:'


def spec(config) -> str:
  """config.data.labelled_anomalies ('' when none)."""
  return str(config.data.labelled_anomalies or '')


def check_config(config) -> None:
  """Raises UserInputError for a bad labelled_anomalies or labelled_rate."""
  s = spec(config)
  if s.startswith(FROM_TEST):
    count = s[len(FROM_TEST):]
    if not count.isdigit():
      raise UserInputError(f'config.data.labelled_anomalies: {s!r}; use '
                           "'test:N' with N a whole number, or a folder")
  elif s and not os.path.isdir(s):
    raise UserInputError(f'{s}: labelled anomalies folder '
                         '(config.data.labelled_anomalies) not found')
  rate = config.data.labelled_rate
  if not 0.0 <= rate <= 1.0:
    raise UserInputError('config.data.labelled_rate: must be in [0, 1], got '
                         f'{rate}')


def choose_from_test(split: dict, per_type: int, seed: int) -> np.ndarray:
  """Sorted indices of `per_type` defect images of each type in `split`.

  The choice of a type depends only on (seed, type name, its files), and
  takes at most all but one image of the type.
  """
  chosen = []
  labels, types = np.asarray(split['label']), np.asarray(split['defect_type'])
  for defect in sorted(set(types[labels > 0])):
    rows = np.flatnonzero((types == defect) & (labels > 0))
    count = min(per_type, len(rows) - 1)
    if count > 0:
      rng = np.random.default_rng([seed, 17, zlib.crc32(defect.encode())])
      chosen.extend(rng.choice(rows, count, replace=False))
  return np.sort(np.asarray(chosen, np.int64))


def _take(split: dict, rows: np.ndarray) -> dict:
  return {k: np.asarray(v)[rows] for k, v in split.items()}


def load(config, test_split: dict | None = None) -> dict | None:
  """The labelled anomalies as arrays ('image', 'mask', 'label', 'defect_type',
  'path', as `splits.load_split`), or None when none are configured.

  `test_split` is the category's loaded test split (loaded when needed).
  """
  check_config(config)
  s = spec(config)
  if not s:
    return None
  if s.startswith(FROM_TEST):
    if test_split is None:
      test_split = splits.load_split(config, 'test')
    rows = choose_from_test(test_split, int(s[len(FROM_TEST):]), config.seed)
    out = _take(test_split, rows)
  else:
    samples = [x for x in mvtec.scan_test(s) if x.label]
    if not samples:
      raise UserInputError(f'{s}: no defect images under test/<type>/ '
                           '(config.data.labelled_anomalies)')
    out = mvtec.load_samples(samples, config.data.image_size,
                             config.data.load_threads or None)
  if not len(out['label']):
    raise UserInputError(f'config.data.labelled_anomalies: {s!r} selects no '
                         'image (a defect type needs 2 images to give one)')
  return out


def _real(paths) -> list[str]:
  return sorted(_real_each(paths))


def record(config, workdir: str, loaded: dict | None) -> None:
  """Writes `<workdir>/labelled_anomalies.json` for what `load` gave
  training (nothing without labelled anomalies), so evaluation leaves them
  out."""
  if loaded is None:
    return
  logging.info('Weak supervision: %d labelled anomalies (%s) at rate %s',
               len(loaded['label']), spec(config), config.data.labelled_rate)
  fileio.write_json(os.path.join(workdir, RECORD), {
      'labelled_anomalies': spec(config),
      'labelled_rate': float(config.data.labelled_rate),
      'files': _real(loaded['path'])})


def recorded_files(workdir: str) -> list[str]:
  """The files a training run in `workdir` recorded (none: [])."""
  path = os.path.join(workdir, RECORD)
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      return list(json.load(f)['files'])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserInputError(f'{path}: unreadable ({e})') from None


def exclude(config, workdir: str, split: dict) -> tuple[dict, int]:
  """`split` without the labelled anomalies of the workdir's record and of
  `config`; returns (the rest, how many were left out)."""
  used = set(recorded_files(workdir))
  s = spec(config)
  if s.startswith(FROM_TEST):
    rows = choose_from_test(split, int(s[len(FROM_TEST):]), config.seed)
    used.update(_real(np.asarray(split['path'])[rows]))
  elif s:
    used.update(_real(x.path for x in mvtec.scan_test(s) if x.label))
  if not used:
    return split, 0
  keep = np.array([p not in used for p in _real_each(split['path'])], bool)
  return _take(split, np.flatnonzero(keep)), int((~keep).sum())


def _real_each(paths) -> list[str]:
  return [os.path.realpath(str(p)) for p in paths]


def note(report: dict) -> str:
  """The line printed under the table ('' when nothing was left out)."""
  n = report.get('labelled_anomalies_excluded', 0)
  return (f'{n} labelled anomalies used in training were left out of the test '
          'set' if n else '')
