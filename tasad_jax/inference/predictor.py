"""Using a trained model: `tasad_jax.load(workdir).predict(images)`.

The predictor restores the CAS and FAS checkpoints and the thresholds of a
training workdir, takes images of any size (uint8 or float, HWC or NHWC, grey,
RGB or RGBA), resizes them as training did (`config.data.resize`: squashed,
padded or tiled, `tasad_jax.core.tiling`), runs the jitted two-stage program, and
returns anomaly maps at each input's own size, image scores and decisions.
No TensorFlow is needed.
"""

from __future__ import annotations

from typing import Sequence

import ml_collections
import numpy as np

from absl import logging

from tasad_jax.config import saved, schema
from tasad_jax.core import names
from tasad_jax.inference import (two_stage, thresholds,
                                 whole_image)
from tasad_jax.core import sharding, tiling
from tasad_jax.data import imageio


class Predictor:
  """A trained TASAD model with its thresholds, ready for new images."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    schema.check(config, schema.PREDICT)
    self.geometry = tiling.Geometry.from_config(config)
    self.runner = two_stage.TwoStage.from_workdir(config, workdir,
                                                  sharding.make_mesh())
    self.method = self.runner.method
    # The thresholds of the output that is scored, never another's.
    self.thresholds = thresholds.for_output(thresholds.load(workdir),
                                            self.method)
    self.warnings = []
    if self.runner.fas is None and names.FINE_STAGE in config.stages:
      self.warnings.append(
          f'{workdir}: no FAS checkpoint; scoring with the coarse stage '
          'alone' + (', with its own thresholds' if self.thresholds else
                     ' (no thresholds for it: no decisions or masks)'))
    for line in self.warnings:
      logging.warning(line)

  @property
  def image_size(self) -> int:
    return self.config.data.image_size

  def preprocess(self, images) -> tuple[np.ndarray | list, list[tuple[int, int]]]:
    """Images (a batch array or a list of arrays) -> the network's input
    (float [N, S, S, 3] for 'squash'; uint8 images at their working
    resolution for 'pad' and 'tile'), and the input sizes."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
      images = list(images)
    elif isinstance(images, np.ndarray):
      images = [images]
    rgb = [imageio.as_uint8_rgb(image) for image in images]
    sizes = [x.shape[:2] for x in rgb]
    if self.geometry.mode != 'squash':
      return whole_image.to_working(rgb, self.geometry), sizes
    batch = [imageio.resize_image(x, self.image_size) for x in rgb]
    return np.stack(batch).astype(np.float32) / 255.0, sizes

  def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> dict:
    """Anomaly maps, scores and decisions of a batch of images.

    Returns:
      {'anomaly_maps': [N, H, W] float32 (a list when sizes differ), 'scores':
       [N], 'decisions': bool [N] (score above the image threshold), 'masks':
       like anomaly_maps, bool (above the pixel threshold)}. Decisions and masks
       are None when the workdir has no thresholds.json.
    """
    x, sizes = self.preprocess(images)
    out = whole_image.run_images(self.runner, self.geometry, x,
                                 self.config.eval.batch_size,
                                 [m.shape[:2] for m in x], [self.method])
    maps = [imageio.resize_map(m, h, w)
            for m, (h, w) in zip(out[f'{self.method}_map'], sizes)]
    scores = out[f'{self.method}_score'].astype(np.float32)
    return thresholds.decide(maps, scores, self.thresholds)


def load(workdir: str, restore_step: int = 0) -> Predictor:
  """The predictor of a training workdir (its config.json and checkpoints:
  the latest, or step `restore_step` of each stage)."""
  return Predictor(load_config(workdir, restore_step), workdir)


def load_config(workdir: str, restore_step: int = 0
                ) -> ml_collections.ConfigDict:
  """A training workdir's config.json (`config.saved`), set to restore
  `restore_step`."""
  return saved.load(workdir, restore_step)
