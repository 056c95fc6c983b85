"""TASAD's coarse stage (CAS): the segmenter on the whole image.

Trained with MSE + (1 - SSIM) against the pseudo-anomaly mask; the map is the
raw network output; the image score the maximum of the 21x21 mean-filtered map.
"""

from __future__ import annotations

import functools

import jax

from tasad_jax import scoring, steps
from tasad_jax.methods import base


class TasadCas(base.CoarseMethod):
  """TASAD's CAS, the default coarse stage."""

  name = 'tasad_cas'
  label = 'CAS'

  def __init__(self, config):
    super().__init__(config)
    self.model = steps.create_model(config)
    self._step = functools.partial(
        steps.train_step, stage='cas',
        schedule=steps.learning_rate_schedule(config, steps.num_steps(config, 'cas')))

  def create_train_state(self, mesh) -> steps.TrainState:
    return steps.create_train_state(self.config, 'cas', mesh)

  def phases(self):
    return [(0, self._step)]

  def anomaly_map(self, variables, images: jax.Array) -> jax.Array:
    return self.model.apply(variables, images, train=False)

  def image_score(self, maps: jax.Array) -> jax.Array:
    return scoring.max_of_mean_filter(maps)
