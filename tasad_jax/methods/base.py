"""What a coarse method provides, so that the fine stage, evaluation,
thresholds, predict and export work on any of them.

A coarse method is a `Stage` named 'cas' (its checkpoints live under
`<workdir>/checkpoints/cas`): it trains on the pseudo-anomaly stream of the
coarse stage (keys 'image', 'augmented', 'mask', 'label') and maps images
[N, S, S, 3] in [0, 1] to anomaly maps [N, S, S, 1] whose anomalous pixels are
near 1 and normal pixels near 0: the scale the fine stage's histogram filter
expects (|map| x 255 as 8 bits).

To add a method, write one module:

    @registry.register
    class MyMethod(base.CoarseMethod):
      method = 'mine'
      defaults = {'lr': 1e-3}  # Becomes config.coarse.mine.
      def create_state(self, mesh): ...
      def phases(self): ...
      def anomaly_map(self, variables, images): ...

and import it from `tasad_jax/methods/__init__.py`, or name its module in
`config.coarse.plugins`.
"""

from __future__ import annotations

import abc
from typing import Any

import jax

from tasad_jax.core import scoring, stage


class CoarseMethod(stage.Stage):
  """A coarse stage: model(s), train state and phases, maps and scores."""

  name = 'cas'  # The stage: checkpoint and log folder.
  seed_index = 0
  method: str = ''  # Registered name, config.coarse.name.
  defaults: dict = {}  # Settings under config.coarse.<method>.
  # Pseudo-anomaly kinds of its own: kind name -> the module registering it
  # (`data.pseudo_anomalies.register_kind`), imported only by the stream.
  pseudo_anomaly_kinds: dict[str, str] = {}
  anomaly_defaults: dict = {}  # Those kinds' settings, fields of config.anomaly.
  # Image sides a whole-image input must be a multiple of (the networks'
  # total downsampling; `whole_image` pads to it).
  input_multiple: int = 32

  @property
  def settings(self):
    """This method's config section, config.coarse.<method>."""
    return self.config.coarse[self.method]

  @property
  def score_window(self) -> int:
    """The mean filter's window of map-max image scores (pixels)."""
    return scoring.window_for(
        int(self.config.model.score_window),
        int(self.config.data.image_size))

  @abc.abstractmethod
  def anomaly_map(self, variables: Any, images: jax.Array) -> jax.Array:
    """Eval-mode maps [N, S, S, 1] float32 of images [N, S, S, 3], jit-able."""

  def outputs(self, variables: Any, images: jax.Array) -> dict[str, jax.Array]:
    """{'map': [N, S, S, 1]} plus whatever `image_score` needs, jit-able.

    A method that scores by more than its map (e.g. a reconstruction error)
    adds those arrays here, each with the batch as its first axis.
    """
    return {'map': self.anomaly_map(variables, images)}

  def image_score(self, maps: jax.Array, outputs: dict[str, jax.Array],
                  valid: jax.Array | None = None) -> jax.Array:
    """Image scores [N] of maps [N, H, W, 1] (the coarse maps, or coarse +
    fine maps), given this method's `outputs` of the same images; `valid`
    [N, H, W] marks the image's pixels on a padded canvas (`core.scoring`)."""
    del outputs
    return scoring.max_of_mean_filter(maps, self.score_window, valid)

  def scores_from_map(self) -> bool:
    """Whether `image_score` reads the map alone (no other `outputs`): then
    a padded or tiled image is scored on its whole stitched map, otherwise by
    the highest score of its tiles (`tasad_jax.inference.whole_image`)."""
    return True

  def score_reduction(self) -> scoring.Reduction | None:
    """`image_score` of a map alone as a reduction over row bands, so that
    a map too large for one program is scored band by band; None when the
    score needs more than the map (`scores_from_map`), or when a method
    overrides `image_score` and not this (its maps are then scored whole)."""
    if type(self).image_score is not CoarseMethod.image_score:
      return None
    return scoring.mean_filter_reduction(self.score_window)

  def whole_image(self) -> bool:
    """Whether the maps of an image of any size, run through the networks
    once, match those of its S x S tiles up to the networks' border effects:
    fully convolutional networks with no image-wide operation (no
    coordinates, no normalisation over the map). Then a 'tile' model
    infers whole images (`tasad_jax.inference.whole_image`)."""
    return True

  @classmethod
  def row_labels(cls) -> tuple[str, str]:
    """Table rows of the coarse stage alone and with the fine stage."""
    return cls.method, f'{cls.method}+fas'
