"""Per-sample TensorFlow primitives of the pseudo-anomaly generators:
stateless draws (a sample is a pure function of its seed) and a rotation
about the centre."""

from __future__ import annotations

from tasad_jax.runtime.tf_host import tf


def uniform(seed, lo, hi, shape=()):
  """Floats uniform in [lo, hi), stateless."""
  return tf.random.stateless_uniform(shape, seed, lo, hi, dtype=tf.float32)


def randint(seed, n, shape=()):
  """Integers uniform in [0, n), n a scalar tensor or int."""
  return tf.random.stateless_uniform(shape, seed, 0, tf.cast(n, tf.int64),
                                     dtype=tf.int64)


def rotate(x: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
  """x [H, W, C] rotated by `angle` radians about its centre (bilinear,
  zeros outside)."""
  height, width = x.shape[0], x.shape[1]
  cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
  c, s = tf.cos(angle), tf.sin(angle)
  # Output (x, y) reads input (c (x - cx) - s (y - cy) + cx, s (x - cx) + c (y - cy) + cy).
  transform = tf.stack([c, -s, cx - c * cx + s * cy,
                        s, c, cy - s * cx - c * cy, 0.0, 0.0])[None]
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=x[None], transforms=transform,
      output_shape=tf.constant([height, width], tf.int32),
      fill_value=tf.constant(0.0), interpolation='BILINEAR',
      fill_mode='CONSTANT')[0]
