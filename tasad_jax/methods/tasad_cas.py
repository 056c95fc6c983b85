"""TASAD's coarse stage (CAS): the segmenter on the whole image.

Trained with MSE + (1 - SSIM) against the pseudo-anomaly mask by Adam (lr x0.2
at 80% and 90% of the steps); the map is the raw network output; the image
score the maximum of the 21x21 mean-filtered map. Not the paper's:
`config.model.cas_loss` with a logit term (focal, BCE, Dice) makes the map
the output's sigmoid (`core.losses.SegmentationLoss`). The segmenter's state and
step (`models.segmenter_stage`) are shared with TASAD's fine stage and
AnoSeg.
"""

from __future__ import annotations

import jax

from tasad_jax.core import stage
from tasad_jax.core.train_state import TrainState, network_variables
from tasad_jax.methods import base, registry
# Re-exported: plug-ins built on the segmenter imported them from here.
from tasad_jax.models.segmenter_stage import (  # pylint: disable=unused-import
    NETWORK, check_segmenter_config, schedule, segmentation_loss, segmenter,
    segmenter_images, segmenter_phase, segmenter_state)


@registry.register
class TasadCas(base.CoarseMethod):
  """TASAD's CAS, the default coarse stage."""

  method = 'tasad_cas'
  defaults = {}  # Its settings are config.model and config.train.

  def __init__(self, config):
    super().__init__(config)
    self.model = segmenter(config)
    self.loss = segmentation_loss(config, 'cas')

  def check_config(self) -> None:
    check_segmenter_config(self.config)

  def create_state(self, mesh) -> TrainState:
    return segmenter_state(self.config, self.init_key(), self.num_steps, mesh)

  def phases(self) -> list[stage.Phase]:
    return [stage.Phase(0, segmenter_phase(
        self.model, self.loss, 'augmented',
        schedule(self.config, self.num_steps)))]

  def summary_images(self, state, batch, context, mesh):
    return segmenter_images(self.model, state, batch['augmented'], batch['mask'],
                            mesh, self.loss.to_map)

  def anomaly_map(self, variables, images: jax.Array) -> jax.Array:
    return self.loss.to_map(self.model.apply(
        network_variables(variables, NETWORK), images, train=False))

  @classmethod
  def row_labels(cls) -> tuple[str, str]:
    return 'cas', 'tasad'
