"""DRAEM's pseudo-anomaly, its own kind `draem_perlin` (TensorFlow ops).

As the reference's data loader: Perlin noise of 2^a x 2^b lattice cells (a, b
uniform in 0..config.anomaly.perlin_max_exponent), rotated about the image's
centre by an angle uniform in +-`draem_noise_rotation` degrees (bilinear,
zeros outside), thresholded at `draem_threshold`; inside the mask the
colour-augmented texture is blended with opacity 1 - beta, beta uniform in
config.anomaly.perlin_beta_range. TASAD's `perlin` kind differs by its
threshold drawn uniformly and its unrotated noise. Every image of a stream
that draws from this kind, normal or not, is first rotated with probability
`draem_image_rotation_probability` (0.3) by up to +-`draem_image_rotation`
(90) degrees, zeros outside, as the reference's loader; the clean target is
the rotated image. `methods.draem` names this module for the kind; the
stream imports it when a config asks for it.
"""

from __future__ import annotations

import math

from tasad_jax.data import pseudo_anomalies, sample_ops
from tasad_jax.methods import draem
from tasad_jax.runtime.tf_host import tf


def check(params: pseudo_anomalies.AnomalyParams) -> None:
  """Raises ValueError naming a bad setting of the kind."""
  threshold = params.setting('draem_threshold')
  if not -1.5 < threshold < 1.5:
    raise ValueError('config.anomaly.draem_threshold: the noise lies in about '
                     f'[-1, 1]; got {threshold}')
  for name in ('draem_noise_rotation', 'draem_image_rotation'):
    if not 0 <= params.setting(name) <= 180:
      raise ValueError(f'config.anomaly.{name}: degrees in [0, 180]; got '
                       f'{params.setting(name)}')
  if not 0 <= params.setting('draem_image_rotation_probability') <= 1:
    raise ValueError('config.anomaly.draem_image_rotation_probability: a '
                     'probability in [0, 1]')


def rotate_image(image: tf.Tensor, seed: tf.Tensor,
                 params: pseudo_anomalies.AnomalyParams) -> tf.Tensor:
  """The normal image, rotated with probability `draem_image_rotation_probability`
  by an angle uniform in +-`draem_image_rotation` degrees (zeros outside), as
  the reference's loader does before the anomaly."""
  s = tf.random.experimental.stateless_split(seed, 2)
  limit = params.setting('draem_image_rotation') * math.pi / 180.0
  angle = sample_ops.uniform(s[1], -limit, limit)
  turn = (sample_ops.uniform(s[0], 0.0, 1.0)
          < params.setting('draem_image_rotation_probability'))
  return tf.cond(turn, lambda: sample_ops.rotate(image, angle), lambda: image)


def draem_perlin(image: tf.Tensor, source: tf.Tensor, seed: tf.Tensor,
                 params: pseudo_anomalies.AnomalyParams
                 ) -> tuple[tf.Tensor, tf.Tensor]:
  """(augmented image, mask float32 [H, W, 1]) of one sample."""
  s = tf.random.experimental.stateless_split(seed, 4)
  noise = pseudo_anomalies.random_perlin_noise(image.shape[0], image.shape[1],
                                               s[:2], params)
  limit = params.setting('draem_noise_rotation') * math.pi / 180.0
  angle = sample_ops.uniform(s[2], -limit, limit)
  noise = sample_ops.rotate(noise[..., None], angle)
  mask = tf.cast(noise > params.setting('draem_threshold'), tf.float32)
  beta = sample_ops.uniform(s[3], *params.perlin_beta_range)
  return pseudo_anomalies.blend(image, source, mask, beta), mask


@pseudo_anomalies.register_kind(draem.PERLIN_KIND, draem.PERLIN_SETTINGS,
                                check, rotate_image)
def draem_perlin_kind(image, source, segments, num_segments, seeds, params):
  """DRAEM's Perlin-masked texture as a kind."""
  del segments, num_segments
  return draem_perlin(image, source, seeds[1], params)
