"""TASAD's fine stage (FAS) on top of any coarse method.

The fine stage is a second segmenter trained, with the coarse stage frozen, on
the superpixel crop that the coarse map selects (`tasad_jax.fine.selection`): MSE
against the pseudo-anomaly mask, Adam with the coarse stage's schedule. Its
checkpoints live under `<workdir>/checkpoints/fas`.

`FineInput` is the one place the fine stage's input is made: inside jitted
programs (`refine.fas_inputs_device`: histogram filter, median, JAX SLIC,
crop) or, with `config.refine.on_device=False`, on the host (scikit-image SLIC
per image, as TASAD's code does). Training, inference, export and the
benchmarks all go through it. `FineStage.image_score` is the one place the
two-stage image score is chosen (`config.model.fine_score`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from tasad_jax.runtime import checkpointing
from tasad_jax.core import sharding, stage
from tasad_jax import methods
from tasad_jax.fine import selection
from tasad_jax.runtime.errors import UserInputError
from tasad_jax.models import segmenter_stage
from tasad_jax.core.train_state import TrainState

# config.model.fine_score: what the two-stage model's image score is.
SCORE_SOURCES = ('combined', 'coarse')


def refine_params(config, training: bool) -> selection.RefineParams:
  """The FAS-input thresholds of training or of test (config.refine)."""
  r = config.refine
  return selection.RefineParams(
      histogram_fraction=r.train_histogram_fraction if training else r.test_histogram_fraction,
      seed_threshold=r.train_seed_threshold if training else r.test_seed_threshold,
      n_segments=r.n_segments, compactness=r.compactness, sigma=r.sigma)


def check_refine(r) -> None:
  """Raises UserInputError naming the first bad field of config.refine."""
  bad = None
  if not isinstance(r.n_segments, int) or r.n_segments < 1:
    bad = ('n_segments', 'must be an integer >= 1')
  elif not r.compactness > 0:
    bad = ('compactness', 'must be > 0')
  elif not r.sigma >= 0:
    bad = ('sigma', 'must be >= 0')
  for phase in ('train', 'test'):
    if bad is None and not 0 < r[f'{phase}_histogram_fraction'] <= 1:
      bad = (f'{phase}_histogram_fraction', 'must be in (0, 1]')
    if bad is None and not 0 <= r[f'{phase}_seed_threshold'] <= 255:
      bad = (f'{phase}_seed_threshold', 'must be in 0..255')
  if bad:
    raise UserInputError(f'config.refine.{bad[0]}: {bad[1]}, got '
                         f'{r[bad[0]]!r}')


class FineInput:
  """Coarse stage -> fine-stage input, on device or on the host."""

  def __init__(self, coarse: methods.CoarseMethod, params: selection.RefineParams,
               on_device: bool, unroll: bool = False):
    self.coarse, self.params, self.on_device = coarse, params, on_device
    self.unroll = unroll  # SLIC's loop written out, for exported programs.
    self.tile_pixels = int(coarse.config.data.image_size) ** 2

  def params_for(self, pixels: int) -> selection.RefineParams:
    """The params of an image of `pixels`: a tile's, or with more or fewer
    pixels SLIC's segments scaled to keep a tile's superpixel size."""
    if pixels == self.tile_pixels:
      return self.params
    return selection.scaled(self.params, pixels, self.tile_pixels)

  def superpixels(self, images: jax.Array) -> jax.Array:
    """SLIC's assignment (`slic.assign`) of images [N, H, W, 3], with the
    segments of their size (`params_for`), jit-able: what `device` and
    `device_in_boxes` compute when not given one."""
    from tasad_jax.fine import slic  # pylint: disable=g-import-not-at-top
    p = self.params_for(images.shape[1] * images.shape[2])
    return slic.assign(images, p.n_segments, p.compactness, p.sigma,
                       unroll=self.unroll)

  def device(self, coarse_variables: Any, images: jax.Array,
             choice: jax.Array | None = None
             ) -> tuple[dict[str, jax.Array], jax.Array]:
    """(coarse outputs, FAS input) of images [N, S, S, 3], jit-able; with
    the superpixels `choice` (`superpixels`) when given.

    The coarse stage is frozen: no gradient flows into it.
    """
    outputs = jax.lax.stop_gradient(self.coarse.outputs(coarse_variables, images))
    return outputs, selection.fas_inputs_device(
        outputs['map'], images, self.params, choice, unroll=self.unroll)[0]

  def device_in_boxes(self, coarse_maps: jax.Array, images: jax.Array,
                      boxes: jax.Array, choice: jax.Array | None = None
                      ) -> jax.Array:
    """FAS inputs [N, H, W, 3] of images on padded canvases [N, H, W, 3]
    with their coarse maps [N, H, W, 1] and boxes [N, 4], jit-able; with
    the superpixels `choice` (`superpixels`) when given."""
    params = self.params_for(images.shape[1] * images.shape[2])
    return selection.fas_inputs_device(coarse_maps, images, params, choice,
                                       boxes=boxes, unroll=self.unroll)[0]

  def seeded_in_boxes(self, coarse_maps: jax.Array, boxes: jax.Array
                      ) -> jax.Array:
    """Whether each image [N] has a seed in its box, jit-able: the images
    without one get a blank FAS input (`device_in_boxes`)."""
    return selection.seeds_device(coarse_maps[..., 0], self.params,
                                  boxes).any(axis=(1, 2))

  def host(self, coarse_maps: np.ndarray, images: np.ndarray) -> np.ndarray:
    """FAS inputs [N, S, S, 3] of numpy coarse maps and images (scikit-image)."""
    return selection.fas_inputs(coarse_maps, images, self.params)

  def host_in_boxes(self, coarse_maps: np.ndarray, images: np.ndarray,
                    boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAS inputs [N, H, W, 3], seeded [N]) of numpy canvases: each image
    cropped to its box, its input made there (`host`, SLIC's segments for its
    area) and put back on a blank canvas."""
    out = np.zeros(images.shape, np.float32)
    seeded = np.zeros(len(images), bool)
    for i, (top, left, h, w) in enumerate(np.asarray(boxes)):
      crop = np.s_[top:top + h, left:left + w]
      params = self.params_for(int(h * w))
      seed_map = selection.seeds(coarse_maps[i][crop][..., 0], params)
      seeded[i] = seed_map.any()
      if seeded[i]:
        region = selection.keep_superpixels(
            seed_map, selection.superpixels(images[i][crop], params))
        out[i][crop] = selection.crop(images[i][crop], region)
    return out, seeded

  @functools.cached_property
  def _device_input(self):
    return jax.jit(lambda v, x: self.device(v, x)[1])

  def __call__(self, coarse_variables: Any, images: np.ndarray, mesh
               ) -> np.ndarray:
    """FAS inputs of this process's numpy images, the configured way."""
    x = sharding.to_global({'x': images}, mesh)['x']
    if self.on_device:
      return sharding.to_local(self._device_input(coarse_variables, x))
    maps = sharding.to_local(self._coarse_map(mesh)(coarse_variables, x))
    return self.host(maps, images)

  @functools.lru_cache(maxsize=4)
  def _coarse_map(self, mesh):
    return stage.make_predict(self.coarse.anomaly_map, mesh)


class FineStage(stage.Stage):
  """TASAD's FAS around a frozen coarse method (the context of every step)."""

  name = 'fas'
  seed_index = 1

  def __init__(self, config, coarse: methods.CoarseMethod | None = None):
    super().__init__(config)
    self.coarse = coarse if coarse is not None else methods.get(config)
    self.model = segmenter_stage.segmenter(config)
    self.loss = segmenter_stage.segmentation_loss(config, 'fas')
    self.input = FineInput(self.coarse, refine_params(config, training=True),
                           bool(config.refine.on_device))
    self.score_source = config.model.fine_score
    if self.score_source not in SCORE_SOURCES:
      raise UserInputError(
          f'config.model.fine_score: {self.score_source!r} is not one of '
          f'{", ".join(SCORE_SOURCES)}')

  @property
  def input_multiple(self) -> int:
    """Whole-image canvas sides: a multiple of this (2 ** its poolings)."""
    return segmenter_stage.multiple(self.config)

  def check_config(self) -> None:
    segmenter_stage.check_segmenter_config(self.config)
    check_refine(self.config.refine)

  def create_state(self, mesh) -> TrainState:
    return segmenter_stage.segmenter_state(self.config, self.init_key(),
                                     self.num_steps, mesh)

  def context(self, workdir: str, mesh) -> Any:
    """The frozen coarse stage's inference variables from its checkpoint."""
    return restore_inference_variables(self.coarse, workdir, mesh)

  def batch_keys(self) -> tuple[str, ...]:
    return ('augmented', 'mask') if self.input.on_device else ('fas_input', 'mask')

  def prepare_batch(self, batch, context, mesh):
    if self.input.on_device:
      return batch
    return dict(batch, fas_input=self.input(context, batch['augmented'], mesh))

  def phases(self) -> list[stage.Phase]:
    fit = segmenter_stage.segmenter_phase(
        self.model, self.loss, 'fas_input',
        segmenter_stage.schedule(self.config, self.num_steps))
    if not self.input.on_device:
      return [stage.Phase(0, fit)]

    def step(state, batch, rng, context):
      fas_input = self.input.device(context, batch['augmented'])[1]
      return fit(state, dict(batch, fas_input=fas_input), rng, context)
    return [stage.Phase(0, step)]

  def summary_images(self, state, batch, context, mesh):
    inputs = batch.get('fas_input')
    if inputs is None:
      inputs = self.input(context, batch['augmented'], mesh)
    return segmenter_stage.segmenter_images(
        self.model, state, inputs, batch['mask'], mesh, self.loss.to_map)

  def inference_variables(self, state: TrainState) -> dict:
    return state.network(segmenter_stage.NETWORK)

  def apply(self, variables: dict, fas_input: jax.Array) -> jax.Array:
    """Eval-mode fine maps [N, S, S, 1] of FAS inputs, jit-able (the
    output's sigmoid with a logit loss, `config.model.fas_loss`)."""
    return self.loss.to_map(self.model.apply(variables, fas_input,
                                             train=False))

  def image_score(self, tasad_map: jax.Array, coarse_outputs: dict,
                  coarse_score: jax.Array, valid: jax.Array | None = None
                  ) -> jax.Array:
    """The image score of the two-stage model, jit-able: the coarse method's
    score of the coarse+FAS map (the paper), or with `fine_score='coarse'`
    the coarse stage's own score, where FAS sharpens maps at the cost of
    image-level ranking (it can fire on a normal image's edges)."""
    if self.score_source == 'coarse':
      return coarse_score
    return self.coarse.image_score(tasad_map, coarse_outputs, valid)


def restore_inference_variables(trained: stage.Stage, workdir: str, mesh,
                                step: int | None = None) -> Any:
  """A trained stage's inference variables from its checkpoint in `workdir`
  (of the parameters' moving average when it keeps one: `trained_variables`)."""
  state = checkpointing.restore(workdir, trained.name,
                                trained.abstract_state(mesh), step)
  return trained.trained_variables(state)
