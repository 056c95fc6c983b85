"""AnoSeg's hard augmentation, its own pseudo-anomaly kind (TensorFlow ops).

A transformed copy of the normal image itself replaces it inside a random
rectangle; the source texture is not used. Its settings are fields of
config.anomaly (`anoseg.HARD_AUGMENTATION` gives their defaults and meaning);
`methods.anoseg` names this module for the kind, so the stream imports it
the first time a config asks for `anoseg_hard`.
"""

from __future__ import annotations

from tasad_jax.data import pseudo_anomalies, sample_ops
from tasad_jax.methods import anoseg
from tasad_jax.runtime.tf_host import tf

KIND = anoseg.HARD_AUGMENTATION_KIND


def check(params: pseudo_anomalies.AnomalyParams) -> None:
  """Raises ValueError naming a bad setting of the kind."""
  lo, hi = params.setting('anoseg_size_range')
  if not 0 < lo <= hi <= 1:
    raise ValueError('config.anomaly.anoseg_size_range: need 0 < lo <= hi <= 1,'
                     f' got {params.setting("anoseg_size_range")}')
  rotations = params.setting('anoseg_rotations')
  if any(r not in (0, 90, 180, 270) for r in rotations) or not rotations:
    raise ValueError('config.anomaly.anoseg_rotations: multiples of 90 only')


def _permute_quadrants(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """The four quadrants of x [H, W, C] (H, W even) in a random order."""
  h, w = x.shape[0] // 2, x.shape[1] // 2
  quads = tf.stack([x[:h, :w], x[:h, w:], x[h:, :w], x[h:, w:]])
  q = tf.gather(quads, tf.argsort(sample_ops.uniform(seed, 0.0, 1.0, shape=[4])))
  return tf.concat([tf.concat([q[0], q[1]], 1), tf.concat([q[2], q[3]], 1)], 0)


def _colour_jitter(x: tf.Tensor, seed: tf.Tensor,
                   params: pseudo_anomalies.AnomalyParams) -> tf.Tensor:
  """Strong brightness, contrast, saturation and hue jitter, clipped to [0, 1]."""
  s = tf.random.experimental.stateless_split(seed, 4)
  x = x + sample_ops.uniform(s[0], -params.setting('anoseg_brightness'), params.setting('anoseg_brightness'))
  mean = tf.reduce_mean(x, axis=[0, 1, 2], keepdims=True)
  x = (x - mean) * sample_ops.uniform(s[1], *params.setting('anoseg_contrast_range')) + mean
  grey = tf.reduce_mean(x, axis=-1, keepdims=True)
  x = (x - grey) * sample_ops.uniform(s[2], *params.setting('anoseg_saturation_range')) + grey
  x = tf.clip_by_value(x, 0.0, 1.0)
  return tf.image.adjust_hue(x, sample_ops.uniform(s[3], -params.setting('anoseg_hue'),
                                         params.setting('anoseg_hue')))


def anoseg_hard(image: tf.Tensor, seed: tf.Tensor,
                params: pseudo_anomalies.AnomalyParams) -> tuple[tf.Tensor, tf.Tensor]:
  """AnoSeg's hard augmentation: a transformed copy of the image in a box.

  The copy is rotated by one of `anoseg_rotations`, its quadrants permuted
  with probability `anoseg_permute_probability` and colour-jittered; it
  replaces the image inside a random axis-aligned rectangle whose sides are
  `anoseg_size_range` fractions of the image's; the mask is that rectangle.

  Args:
    image: float32 [H, W, 3] normal image, square (quadrants permuted only
      when H is even).
    seed: [2] stateless seed.
    params: generator parameters.

  Returns:
    (augmented image, mask float32 [H, W, 1]).
  """
  s = tf.random.experimental.stateless_split(seed, 6)
  height, width = image.shape[0], image.shape[1]
  rotations = tf.constant([r // 90 for r in params.setting('anoseg_rotations')], tf.int32)
  copy = tf.image.rot90(image, tf.gather(
      rotations, sample_ops.randint(s[0], len(params.setting('anoseg_rotations')))))
  if height % 2 == 0 and width % 2 == 0:  # Odd sizes: no permutation.
    copy = tf.cond(
        sample_ops.uniform(s[1], 0.0, 1.0) < params.setting('anoseg_permute_probability'),
        lambda: _permute_quadrants(copy, s[2]), lambda: copy)
  copy = _colour_jitter(copy, s[3], params)
  lo, hi = params.setting('anoseg_size_range')
  sides = tf.stack([height, width])
  size = tf.cast(tf.round(sample_ops.uniform(s[4], lo, hi, shape=[2]) * tf.cast(
      sides, tf.float32)), tf.int32)
  size = tf.clip_by_value(size, 1, sides)
  start = tf.cast(tf.floor(sample_ops.uniform(s[5], 0.0, 1.0, shape=[2]) * tf.cast(
      sides - size + 1, tf.float32)), tf.int32)
  start = tf.minimum(start, sides - size)
  ys, xs = tf.range(height)[:, None], tf.range(width)[None, :]
  inside = ((ys >= start[0]) & (ys < start[0] + size[0]) &
            (xs >= start[1]) & (xs < start[1] + size[1]))
  mask = tf.cast(inside, tf.float32)[..., None]
  return mask * copy + (1.0 - mask) * image, mask


@pseudo_anomalies.register_kind(KIND, anoseg.HARD_AUGMENTATION, check)
def anoseg_hard_kind(image, source, segments, num_segments, seeds, params):
  """AnoSeg's hard augmentation as a kind: uses the image, not the source."""
  del source, segments, num_segments
  return anoseg_hard(image, seeds[1], params)
