"""The config schema: every field checked in one pass, before anything runs.

Each entry point calls `check` once, right after its flags are parsed (and,
in training, once the job's devices are known), so a bad field is refused
before a file is written or a network is built. Problems are reported one
line per section that has one (`error: config.<field>: ...`), so a config
with a bad data field and a bad training field names both. The checks of a
stage's own fields stay with the stage (`Stage.check_config`, a method's
`config.coarse.<name>` section); this module is the one place that runs them.
"""

from __future__ import annotations

import math
from typing import Callable

from tasad_jax.core import names, scoring, tiling, train_state
from tasad_jax.data import layouts, weak_labels
from tasad_jax.fine import fas, stages
from tasad_jax.runtime import distributed
from tasad_jax.runtime.errors import UserInputError

TRAIN, EVALUATE, PREDICT = 'train', 'evaluate', 'predict'


def _need(ok: bool, field: str, message: str) -> None:
  if not ok:
    raise UserInputError(f'config.{field}: {message}')


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def geometry(config) -> None:
  """The image size and resize mode: how images meet the network."""
  d = config.data
  _need(_is_int(d.image_size) and d.image_size >= 16, 'data.image_size',
        f'{d.image_size!r} must be an integer >= 16')
  tiling.Geometry.from_config(config).check()


def data(config) -> None:
  """config.data: the reader, layout, resize mode and weak labels."""
  d = config.data
  geometry(config)
  _need(d.loader in ('folder', 'tfds'), 'data.loader',
        f"{d.loader!r} must be 'folder' or 'tfds'")
  layouts.check_config(config)
  mode = tiling.Geometry.from_config(config).mode
  if mode != 'squash':
    _need(d.loader == 'folder', 'data.loader',
          f"{d.loader!r} reads squashed images only; use loader='folder' with "
          f'resize={mode!r}')
    _need(not d.labelled_anomalies, 'data.labelled_anomalies',
          f"not supported with resize={mode!r} yet; use resize='squash'")
  weak_labels.check_config(config)


def anomaly(config) -> None:
  """config.anomaly: the pseudo-anomaly kinds and their ranges. Imports the
  tf.data stream (the kinds are TensorFlow ops), so training only."""
  a = config.anomaly
  _need(0.0 <= a.normal_probability <= 1.0, 'anomaly.normal_probability',
        'must be in [0, 1]')
  _need(len(a.saim_n_segments) and all(int(n) >= 1 for n in a.saim_n_segments),
        'anomaly.saim_n_segments', 'must be positive')
  _need(all(r in (0, 90, 180, 270) for r in a.saim_rotations),
        'anomaly.saim_rotations', 'multiples of 90 only')
  from tasad_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  pipeline.anomaly_params(config)


def augment(config) -> None:
  """config.data.augment: the train stream's flips and rotations. Imports the
  tf.data stream, so training only."""
  from tasad_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  pipeline.check_augment(config.data.augment)


def model(config) -> None:
  """config.model, config.refine and the coarse method's section: both
  stages are built and check their own fields."""
  try:
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    jnp.dtype(config.model.dtype)
  except TypeError:
    raise UserInputError(f'config.model.dtype: unknown dtype '
                         f'{config.model.dtype!r}') from None
  _need(config.model.fine_score in fas.SCORE_SOURCES, 'model.fine_score',
        f'{config.model.fine_score!r} is not one of '
        f'{", ".join(fas.SCORE_SOURCES)}')
  scoring.window_for(config.model.score_window, config.data.image_size)
  for name in names.STAGES:
    stages.build_stage(config, name)


def devices(config) -> None:
  """config.train.batch_size against the job's devices."""
  t = config.train
  import jax  # pylint: disable=g-import-not-at-top
  count = jax.device_count()
  _need(_is_int(t.batch_size) and t.batch_size >= 1
        and t.batch_size % count == 0, 'train.batch_size',
        f'{t.batch_size} is not divisible by the {count} devices')


def train(config) -> None:
  """config.train and config.stages (also read by inference: the stages'
  states are built with their optimisers)."""
  t = config.train
  kind, warmup = train_state.schedule_fields(t)
  _need(kind in train_state.SCHEDULES, 'train.lr_schedule',
        f'{kind!r} must be one of {train_state.SCHEDULES}')
  _need(0.0 <= warmup < 1.0, 'train.lr_warmup',
        'must be a fraction of the steps in [0, 1)')
  for field in ('checkpoint_every', 'log_every', 'max_checkpoints'):
    _need(_is_int(t[field]) and t[field] >= 1, f'train.{field}',
          f'{t[field]!r} must be an integer >= 1')
  _need(_is_int(t.image_every) and t.image_every >= 0, 'train.image_every',
        f'{t.image_every!r} must be an integer >= 0 (0 = never)')
  ema = t.ema_decay
  _need(isinstance(ema, (int, float)) and not isinstance(ema, bool)
        and 0.0 <= ema < 1.0, 'train.ema_decay',
        f'{ema!r} must be a number in [0, 1) (0 = no moving average)')
  _need(len(config.stages) >= 1, 'stages', f'empty; use {names.STAGES}')
  for name in config.stages:  # The stages themselves: `model`.
    _need(name in stages.STAGES, 'stages',
          f'unknown stage {name!r}; use {tuple(stages.STAGES)}')
    steps = t[f'{name}_steps']
    _need(_is_int(steps) and steps >= 1, f'train.{name}_steps',
          f'{steps!r} must be an integer >= 1')


def evaluation(config) -> None:
  """config.eval and config.threshold."""
  e, t = config.eval, config.threshold
  _need(_is_int(e.batch_size) and e.batch_size >= 1, 'eval.batch_size',
        f'{e.batch_size!r} must be an integer >= 1')
  _need(_is_int(e.num_visualizations) and e.num_visualizations >= 0,
        'eval.num_visualizations', 'must be an integer >= 0')
  _need(isinstance(e.while_training, bool), 'eval.while_training',
        'must be True or False')
  _need(0.0 < e.aupro_fpr_limit <= 1.0, 'eval.aupro_fpr_limit',
        f'{e.aupro_fpr_limit} must be in (0, 1]')
  _need(0.0 <= t.holdout_fraction < 1.0, 'threshold.holdout_fraction',
        f'{t.holdout_fraction} must be in [0, 1)')
  _need(0.0 < t.target_false_alarm_rate < 1.0 and
        math.isfinite(t.target_false_alarm_rate),
        'threshold.target_false_alarm_rate',
        f'{t.target_false_alarm_rate} must be in (0, 1)')


SECTIONS: dict[str, tuple[Callable, ...]] = {
    TRAIN: (distributed.check_config, data, augment, anomaly, model, devices,
            train, evaluation),
    EVALUATE: (distributed.check_config, data, model, train, evaluation),
    PREDICT: (geometry, model, train, evaluation),
}


def problems(config, purpose: str = TRAIN) -> list[str]:
  """One line per section of `config` with a bad field, for `purpose`."""
  found: dict[str, str] = {}  # The field (or file) named -> its line.
  for section in SECTIONS[purpose]:
    try:
      section(config)
    except UserInputError as e:
      found.setdefault(str(e).split(':', 1)[0], str(e))
    except (TypeError, ValueError, AttributeError, KeyError) as e:
      if not found:  # Else most likely a consequence of a problem found.
        found['config'] = f'config: {type(e).__name__}: {e}'
  return list(found.values())


def check(config, purpose: str = TRAIN) -> None:
  """Raises UserInputError (one line per problem) unless `config` is valid
  for `purpose` ('train', 'evaluate' or 'predict')."""
  found = problems(config, purpose)
  if found:
    raise UserInputError('\n'.join(found))
