"""TASAD's segmenter as a trainable network: its state, its phase, its images.

The coarse stage (`methods.tasad_cas`), the fine stage (`fine.fas`) and
AnoSeg's segmentation net train the same segmenter (`models.segmenter`) with
Adam under `config.train`'s schedule, each against its own input and loss;
this module is that shared piece, so none of them imports another.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tasad_jax.core import losses, sharding, stage
from tasad_jax.core.train_state import (Optimizer, TrainState, all_finite,
                                        finish_step, lr_schedule)
from tasad_jax.models.segmenter import LEVELS, NORMS, SKIPS, Segmenter
from tasad_jax.runtime.errors import UserInputError

NETWORK = 'segmenter'


def _norm(config) -> tuple[str, int]:
  """(norm, norm_groups) of config.model."""
  return config.model.norm, int(config.model.norm_groups)


def widths(config):
  """config.model.widths as a tuple (a saved config holds a list); any
  other value as it is, for `check_segmenter_config` to refuse."""
  value = config.model.widths
  return tuple(value) if isinstance(value, (list, tuple)) else value


def segmenter(config) -> Segmenter:
  """The TASAD segmenter of `config.model`."""
  norm, groups = _norm(config)
  m = config.model
  return Segmenter(width=m.width, dtype=jnp.dtype(m.dtype), norm=norm,
                   norm_groups=groups, skip=m.skip, levels=m.levels,
                   widths=widths(config))


def multiple(config) -> int:
  """What the segmenter's input sides must be a multiple of: 2 ** levels."""
  return 2 ** int(config.model.levels)


def segmentation_loss(config, stage_name: str) -> losses.SegmentationLoss:
  """The loss of stage 'cas' or 'fas' (`config.model.<stage>_loss`, its
  weights and the focal term's settings), which also says how the
  segmenter's output becomes the map (`SegmentationLoss.to_map`)."""
  m = config.model
  field = f'{stage_name}_loss'
  values = []
  for name, read, kind in (
      (field, tuple, 'a tuple of term names'),
      (f'{field}_weights', _floats, 'a tuple of numbers'),
      ('focal_gamma', float, 'a number'), ('focal_alpha', float, 'a number')):
    try:
      values.append(read(m[name]))
    except (TypeError, ValueError):
      raise UserInputError(
          f'config.model.{name}: {m[name]!r} is not {kind}') from None
  try:
    return losses.SegmentationLoss(*values)
  except ValueError as e:  # (what, message): what names the field.
    what, message = e.args
    name = {'terms': field, 'weights': f'{field}_weights'}.get(what, what)
    raise UserInputError(f'config.model.{name}: {message}') from None


def _floats(values) -> tuple[float, ...]:
  return tuple(float(v) for v in values)


def check_segmenter_config(config) -> None:
  """config.model's segmenter fields; the image size must divide by
  2 ** levels (its 2x poolings)."""
  m = config.model
  if not (isinstance(m.levels, int) and not isinstance(m.levels, bool)
          and m.levels in LEVELS):
    raise UserInputError(f'config.model.levels: {m.levels!r} must be one of '
                         f'{LEVELS} (2x poolings; the paper has 2)')
  size = config.data.image_size
  if not isinstance(size, int) or size % multiple(config):
    raise UserInputError(
        f'config.data.image_size: {size!r} must be a multiple of '
        f'{multiple(config)} (2^levels: the segmenter pools '
        f'config.model.levels={m.levels} times)')
  if config.model.width < 1:
    raise UserInputError('config.model.width: must be >= 1')
  norm, groups = _norm(config)
  if norm not in NORMS:
    raise UserInputError(f'config.model.norm: {norm!r} must be one of '
                         f'{NORMS}')
  if groups < 1:
    raise UserInputError('config.model.norm_groups: must be >= 1')
  if m.skip not in SKIPS:
    raise UserInputError(f'config.model.skip: {m.skip!r} must be one of '
                         f'{SKIPS}')
  given = m.widths
  if not (isinstance(given, (tuple, list)) and all(
      isinstance(c, int) and not isinstance(c, bool) and c >= 1
      for c in given)) or (given and len(given) != m.levels + 1):
    raise UserInputError(
        f'config.model.widths: {given!r} must be () (width * 2^level) or '
        f'{m.levels + 1} integers >= 1, one per level (config.model.levels='
        f'{m.levels})')
  for name in ('cas', 'fas'):
    segmentation_loss(config, name)


def schedule(config, steps: int) -> optax.Schedule:
  """Adam's lr of config.train over `steps` (`train_state.lr_schedule`)."""
  return lr_schedule(config.train, config.train.learning_rate, steps)


def segmenter_state(config, key: jax.Array, steps: int, mesh) -> TrainState:
  """A segmenter with Adam, initialised from `key`, replicated over `mesh`."""
  model = segmenter(config)
  size = config.data.image_size
  variables = stage.jit_init(lambda k: model.init(
      k, jnp.zeros((1, size, size, 3)), train=False))(key)
  state = TrainState.create(
      networks={NETWORK: variables},
      optimizers=[Optimizer('adam', (NETWORK,), optax.adam(schedule(config, steps)))])
  return jax.device_put(state, sharding.replicated(mesh))


def segmenter_phase(model: Segmenter, loss_fn: Callable, input_key: str,
                    lr: optax.Schedule) -> stage.PhaseFn:
  """One Adam step of the segmenter on `batch[input_key]` against the mask."""

  def step(state: TrainState, batch, rng, context):
    del rng, context
    # BatchNorm's statistics; none with GroupNorm (config.model.norm).
    stats = ({'batch_stats': state.batch_stats[NETWORK]}
             if NETWORK in state.batch_stats else {})

    def compute_loss(params):
      prediction, updates = model.apply(
          {'params': params, **stats}, batch[input_key],
          train=True, mutable=list(stats))
      loss, parts = loss_fn(prediction, batch['mask'])
      return loss, (updates.get('batch_stats'), parts)

    (loss, (new_stats, parts)), grads = jax.value_and_grad(
        compute_loss, has_aux=True)(state.params[NETWORK])
    finite = all_finite(loss, grads)
    updated = state.apply_gradients(
        'adam', {NETWORK: grads}, {NETWORK: new_stats} if stats else None)
    return (finish_step(state, updated, finite),
            {'loss': loss, 'learning_rate': lr(state.step), **parts}, finite)

  return step


@functools.lru_cache(maxsize=8)
def _forward(model: Segmenter, mesh) -> Callable:
  return stage.make_predict(functools.partial(model.apply, train=False), mesh)


def segmenter_images(model: Segmenter, state: TrainState,
                     inputs: np.ndarray, mask: np.ndarray, mesh,
                     to_map: Callable = lambda x: x) -> dict:
  """Input, mask and eval-mode map (`to_map` of the output) of up to 4
  samples (this process's)."""
  prediction = to_map(sharding.to_local(_forward(model, mesh)(
      state.network(NETWORK), sharding.to_global({'x': inputs}, mesh)['x'])))
  n = min(4, len(mask))
  return {'input': np.asarray(inputs[:n]), 'mask': np.asarray(mask[:n]),
          'prediction': np.clip(prediction[:n], 0.0, 1.0)}
