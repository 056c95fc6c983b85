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
from tasad_jax.models.segmenter import NORMS, Segmenter
from tasad_jax.runtime.errors import UserInputError

NETWORK = 'segmenter'


def _norm(config) -> tuple[str, int]:
  """(norm, norm_groups) of config.model."""
  return config.model.norm, int(config.model.norm_groups)


def segmenter(config) -> Segmenter:
  """The TASAD segmenter of `config.model`."""
  norm, groups = _norm(config)
  return Segmenter(width=config.model.width,
                          dtype=jnp.dtype(config.model.dtype), norm=norm,
                          norm_groups=groups)


def segmentation_loss(config, stage_name: str) -> losses.SegmentationLoss:
  """The loss of stage 'cas' or 'fas' (`config.model.<stage>_loss`, its
  weights and the focal term's settings), which also says how the
  segmenter's output becomes the map (`SegmentationLoss.to_map`)."""
  m = config.model
  field = f'{stage_name}_loss'
  try:
    return losses.SegmentationLoss(
        tuple(m[field]), tuple(float(w) for w in m[f'{field}_weights']),
        float(m.focal_gamma), float(m.focal_alpha))
  except ValueError as e:
    what, message = e.args if len(e.args) == 2 else ('terms', str(e))
    name = {'terms': field, 'weights': f'{field}_weights'}.get(what, what)
    raise UserInputError(f'config.model.{name}: {message}') from None
  except TypeError as e:
    raise UserInputError(f'config.model.{field}: {e}') from None


def check_segmenter_config(config) -> None:
  """The segmenter pools twice: the image size must divide by 4."""
  size = config.data.image_size
  if not isinstance(size, int) or size % 4:
    raise UserInputError(f'config.data.image_size: {size!r} must be a multiple '
                         'of 4 (two 2x poolings of the segmenter)')
  if config.model.width < 1:
    raise UserInputError('config.model.width: must be >= 1')
  norm, groups = _norm(config)
  if norm not in NORMS:
    raise UserInputError(f'config.model.norm: {norm!r} must be one of '
                         f'{NORMS}')
  if groups < 1:
    raise UserInputError('config.model.norm_groups: must be >= 1')
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
