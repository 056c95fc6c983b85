"""Colour augmentation of an anomaly source (TensorFlow ops on one sample).

`num_augmentations` of the `colour_ops` named in config.anomaly are applied,
distinct, in random order: TASAD's 4 (gamma, brightness, sharpness,
autocontrast) or DRAEM's 10 (imgaug's, adding hue and saturation, solarize,
posterize, invert, equalize and a rotation). Each op is f(x [H, W, 3] in
[0, 1], seed, params) with params the `pseudo_anomalies.AnomalyParams`.
"""

from __future__ import annotations

import math

from tasad_jax.data import sample_ops
from tasad_jax.runtime.tf_host import tf


def _gamma(x, seed, p):
  g = sample_ops.uniform(seed, *p.gamma_range, shape=[3])
  return tf.pow(tf.maximum(x, 1e-6), g)


def _brightness(x, seed, p):
  s = tf.random.experimental.stateless_split(seed, 2)
  return x * sample_ops.uniform(s[0], *p.brightness_multiply) + sample_ops.uniform(
      s[1], *p.brightness_add) / 255.0


def _sharpness(x, seed, p):
  """PIL's ImageEnhance.Sharpness: blend with a 3x3 smoothed copy."""
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  padded = tf.pad(x[None], [[0, 0], [1, 1], [1, 1], [0, 0]], mode='SYMMETRIC')
  smooth = tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], 'VALID')[0]
  return smooth + sample_ops.uniform(seed, *p.sharpness_range) * (x - smooth)


def _autocontrast(x, seed, p):
  del seed, p
  lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
  hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
  return tf.where(hi > lo, (x - lo) / tf.maximum(hi - lo, 1e-6), x)


def _hue_saturation(x, seed, p):
  """imgaug's AddToHueAndSaturation((-50, 50), per_channel=True): hue and
  saturation each shifted by its own value in [-50, 50] of 255."""
  del p
  shift = sample_ops.uniform(seed, -50.0, 50.0, shape=[2]) / 255.0
  hsv = tf.image.rgb_to_hsv(x)
  hue = tf.math.floormod(hsv[..., 0] + shift[0], 1.0)
  saturation = tf.clip_by_value(hsv[..., 1] + shift[1], 0.0, 1.0)
  return tf.image.hsv_to_rgb(tf.stack([hue, saturation, hsv[..., 2]], -1))


def _solarize(x, seed, p):
  """imgaug's Solarize(0.5, threshold=(32, 128)): half the time, values
  above a threshold in [32, 128] of 255 inverted."""
  del p
  s = tf.random.experimental.stateless_split(seed, 2)
  solarized = tf.where(x >= sample_ops.uniform(s[1], 32.0, 128.0) / 255.0, 1.0 - x, x)
  return tf.where(sample_ops.uniform(s[0], 0.0, 1.0) < 0.5, solarized, x)


def _posterize(x, seed, p):
  """imgaug's Posterize(): 1 to 8 bits kept of each 8-bit value."""
  del p
  step = tf.cast(tf.bitwise.left_shift(1, 8 - tf.cast(sample_ops.randint(seed, 8) + 1,
                                                      tf.int32)), tf.float32)
  return tf.floor(tf.round(x * 255.0) / step) * step / 255.0


def _invert(x, seed, p):
  del seed, p
  return 1.0 - x


def _equalize(x, seed, p):
  """PIL's ImageOps.equalize, per channel on 8-bit values."""
  del seed, p
  values = tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.int32)

  def channel(v):
    hist = tf.math.bincount(tf.reshape(v, [-1]), minlength=256, maxlength=256)
    last = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)[:, 0]))
    step = (tf.reduce_sum(hist) - last) // 255
    lut = (tf.cumsum(hist, exclusive=True) + step // 2) // tf.maximum(step, 1)
    lut = tf.minimum(lut, 255)
    return tf.where(step > 0, tf.gather(lut, v), v)

  out = tf.stack([channel(values[..., c]) for c in range(3)], axis=-1)
  return tf.cast(out, tf.float32) / 255.0


def _rotate45(x, seed, p):
  """imgaug's Affine(rotate=(-45, 45)) (zeros outside)."""
  del p
  return sample_ops.rotate(x, sample_ops.uniform(seed, -math.pi / 4, math.pi / 4))


# The colour ops a source may get, by name (`config.anomaly.colour_ops`);
# the first four are TASAD's, all ten DRAEM's (imgaug's).
COLOUR_OPS = {'gamma': _gamma, 'brightness': _brightness,
              'sharpness': _sharpness, 'autocontrast': _autocontrast,
              'hue_saturation': _hue_saturation, 'solarize': _solarize,
              'posterize': _posterize, 'invert': _invert,
              'equalize': _equalize, 'rotate': _rotate45}
TASAD_COLOUR_OPS = ('gamma', 'brightness', 'sharpness', 'autocontrast')
DRAEM_COLOUR_OPS = tuple(COLOUR_OPS)


def augment_source(source: tf.Tensor, seed: tf.Tensor,
                   params) -> tf.Tensor:
  """Applies `num_augmentations` of `colour_ops`, distinct, in random order."""
  ops = [COLOUR_OPS[name] for name in params.colour_ops]
  seeds = tf.random.experimental.stateless_split(seed, 1 + len(ops))
  order = tf.argsort(sample_ops.uniform(seeds[0], 0.0, 1.0, shape=[len(ops)]))
  x = source
  for k in range(params.num_augmentations):
    branches = [(lambda f=f, s=seeds[1 + i], x=x: f(x, s, params))
                for i, f in enumerate(ops)]
    x = tf.clip_by_value(tf.switch_case(tf.cast(order[k], tf.int32), branches),
                         0.0, 1.0)
  return x
