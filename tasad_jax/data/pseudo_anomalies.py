"""Pseudo-anomalies (SAIM and Perlin) as TensorFlow graph ops for `tf.data`.

Every training sample is left normal with probability `normal_probability`;
otherwise an anomaly source is colour-augmented (`num_augmentations` of the
`colour_ops`, distinct, in random order: 3 of TASAD's 4, or of DRAEM's 10)
and pasted with one method drawn uniformly from `methods`:

* SAIM, superpixel anomaly insertion (TASAD): the source, rotated by 0, 90 or
  180 degrees, is cut along its SLIC superpixels; 10% of the segments (at least
  one, without replacement) replace the image.
* Perlin (DRAEM): a Perlin noise map thresholded at t ~ U[0, 1) selects the
  region, where the source is blended with opacity 1 - beta, beta ~ U[0, 0.8).

A method may own kinds of its own (AnoSeg's `anoseg_hard`, in
`tasad_jax.methods.anoseg_hard`): their modules register them with
`register_kind`, with the defaults of their settings (fields of
config.anomaly, read with `AnomalyParams.setting`) and a check of them, and
are imported when a config names them (`data.kind_modules`).

`coarse_methods`, when set, replaces `methods` in the coarse stage's stream
(e.g. AnoSeg's hard augmentation for the coarse stage, SAIM + Perlin for the
fine stage).

All randomness is stateless and comes from one seed per sample, so a sample is a
pure function of (seed, index): the stream is reproducible, resumable and
independent of the number of hosts. Differences from the reference code: the
SLIC maps are precomputed on the un-augmented source and rotated with it, and
the brightness op scales all three channels rather than imgaug's luminance.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from tasad_jax.data import kind_modules, sample_ops
from tasad_jax.data.colour_ops import (COLOUR_OPS, TASAD_COLOUR_OPS,
                                       augment_source)
from tasad_jax.runtime.tf_host import tf

# Pseudo-anomaly kinds by name (`config.anomaly.methods`): each is
# fn(image, source, segments, num_segments, seeds, params) -> (augmented, mask),
# TensorFlow graph ops on one sample: image [H, W, 3], source [H, W, 3] (already
# colour-augmented), the source's SLIC maps [K, H, W] and their largest labels
# [K], seeds [2, 2] (two stateless seeds), mask [H, W, 1].
KINDS: dict[str, Callable] = {}
# A kind's own settings (fields of config.anomaly) with their defaults, and
# fn(params) raising ValueError naming a bad one.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {}
KIND_CHECKS: dict[str, Callable] = {}
# A kind's preparation of the normal image, fn(image, seed, params) -> image:
# applied to every sample of a stream that draws from the kind, normal ones
# too, before the anomaly (DRAEM rotates some normal images).
KIND_PREPARES: dict[str, Callable] = {}


def register_kind(name: str, defaults: dict[str, Any] | None = None,
                  check: Callable | None = None,
                  prepare: Callable | None = None
                  ) -> Callable[[Callable], Callable]:
  """Decorator: adds a pseudo-anomaly kind under `name`, with the defaults
  of its own settings, their check and its preparation of the image."""
  def add(fn: Callable) -> Callable:
    KINDS[name] = fn
    KIND_DEFAULTS[name] = dict(defaults or {})
    if prepare is not None:
      KIND_PREPARES[name] = prepare
    if check is not None:
      KIND_CHECKS[name] = check
    return fn
  return add


@dataclasses.dataclass(frozen=True)
class AnomalyParams:
  """Parameters of the pseudo-anomaly generator (see configs/default.py)."""
  methods: tuple[str, ...] = ('saim', 'perlin')
  normal_probability: float = 0.5
  num_augmentations: int = 3
  colour_ops: tuple[str, ...] = TASAD_COLOUR_OPS
  gamma_range: tuple[float, float] = (0.5, 2.0)
  brightness_multiply: tuple[float, float] = (0.8, 1.2)
  brightness_add: tuple[float, float] = (-30.0, 30.0)
  sharpness_range: tuple[float, float] = (0.0, 2.0)
  saim_fraction: float = 0.1
  saim_rotations: tuple[int, ...] = (0, 90, 180)
  perlin_max_exponent: int = 5
  perlin_threshold_range: tuple[float, float] = (0.0, 1.0)
  perlin_beta_range: tuple[float, float] = (0.0, 0.8)
  coarse_methods: tuple[str, ...] = ()
  # The other fields of config.anomaly, (name, value) pairs: the settings of
  # kinds defined elsewhere (`setting`).
  settings: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    kind_modules.load(tuple(self.methods) + tuple(self.coarse_methods))
    unknown = set(self.methods) - set(KINDS)
    if unknown or not self.methods:
      raise ValueError(f'config.anomaly.methods: {tuple(self.methods)} must be '
                       f'a non-empty subset of {tuple(sorted(KINDS))}')
    if (not set(self.colour_ops) <= set(COLOUR_OPS)
        or len(set(self.colour_ops)) != len(self.colour_ops)):
      raise ValueError(f'config.anomaly.colour_ops: {tuple(self.colour_ops)} '
                       f'must be distinct names of {tuple(COLOUR_OPS)}')
    if not 0 <= self.num_augmentations <= len(self.colour_ops):
      raise ValueError('config.anomaly.num_augmentations: must be in '
                       f'0..{len(self.colour_ops)} (the colour_ops given)')
    if set(self.coarse_methods) - set(KINDS):
      raise ValueError(f'config.anomaly.coarse_methods: '
                       f'{tuple(self.coarse_methods)} must be a subset of '
                       f'{tuple(sorted(KINDS))} (empty: methods)')
    for kind in set(self.methods) | set(self.coarse_methods):
      if kind in KIND_CHECKS:
        KIND_CHECKS[kind](self)

  def setting(self, name: str) -> Any:
    """A kind's own setting: its config.anomaly value, else its default."""
    given = dict(self.settings)
    if name in given:
      return given[name]
    for defaults in KIND_DEFAULTS.values():
      if name in defaults:
        return defaults[name]
    raise KeyError(f'config.anomaly.{name}: no kind declares this setting')

  def for_stage(self, stage: str) -> 'AnomalyParams':
    """These parameters with the kinds of `stage` ('cas': `coarse_methods`
    when set, else `methods`; 'fas': `methods`)."""
    if stage == 'cas' and self.coarse_methods:
      return dataclasses.replace(self, methods=tuple(self.coarse_methods))
    return self


# ---- SAIM -----------------------------------------------------------------


@register_kind('saim')
def saim_kind(image, source, segments, num_segments, seeds, params):
  """SAIM at one of the source's segment counts, drawn with seeds[0]."""
  k = sample_ops.randint(seeds[0], segments.shape[0])
  return saim(image, source, tf.gather(segments, k), tf.gather(num_segments, k),
              seeds[1], params)


def saim(image: tf.Tensor, source: tf.Tensor, segments: tf.Tensor,
         num_segments: tf.Tensor, seed: tf.Tensor,
         params: AnomalyParams) -> tuple[tf.Tensor, tf.Tensor]:
  """Superpixel anomaly insertion.

  Args:
    image: float32 [H, W, 3] normal image.
    source: float32 [H, W, 3] augmented source.
    segments: int [H, W] SLIC labels of the source, 1..num_segments.
    num_segments: scalar, the largest label.
    seed: [2] stateless seed.
    params: generator parameters.

  Returns:
    (augmented image, mask float32 [H, W, 1]).
  """
  s = tf.random.experimental.stateless_split(seed, 2)
  rotations = tf.constant([r // 90 for r in params.saim_rotations], tf.int32)
  k = tf.gather(rotations, sample_ops.randint(s[0], len(params.saim_rotations)))
  source = tf.image.rot90(source, k)
  segments = tf.image.rot90(tf.cast(segments, tf.int32)[..., None], k)[..., 0]
  count = tf.cast(num_segments, tf.int32)
  num_chosen = tf.maximum(
      1, tf.cast(tf.floor(params.saim_fraction * tf.cast(count, tf.float32)),
                 tf.int32))
  order = tf.argsort(sample_ops.uniform(s[1], 0.0, 1.0, shape=[count]))
  chosen = order[:num_chosen] + 1
  table = tf.scatter_nd(chosen[:, None], tf.ones([num_chosen]), [count + 1])
  mask = tf.gather(table, segments)[..., None]
  return mask * source + (1.0 - mask) * image, mask


# ---- Perlin ---------------------------------------------------------------


def _fade(t):
  return ((6.0 * t - 15.0) * t + 10.0) * t * t * t


def perlin_noise(height: int, width: int, res_y: tf.Tensor, res_x: tf.Tensor,
                 seed: tf.Tensor) -> tf.Tensor:
  """2-D gradient (Perlin) noise with res_y x res_x lattice cells, [H, W]."""
  res_y = tf.cast(res_y, tf.int32)
  res_x = tf.cast(res_x, tf.int32)
  angles = sample_ops.uniform(seed, 0.0, 2.0 * math.pi, shape=tf.stack([res_y + 1, res_x + 1]))
  grads = tf.stack([tf.cos(angles), tf.sin(angles)], axis=-1)
  ys = tf.range(height, dtype=tf.float32) * tf.cast(res_y, tf.float32) / height
  xs = tf.range(width, dtype=tf.float32) * tf.cast(res_x, tf.float32) / width
  cy, cx = tf.cast(tf.floor(ys), tf.int32), tf.cast(tf.floor(xs), tf.int32)
  fy, fx = ys - tf.floor(ys), xs - tf.floor(xs)
  fy2, fx2 = tf.meshgrid(fy, fx, indexing='ij')

  def corner(dy, dx):
    iy, ix = tf.meshgrid(cy + dy, cx + dx, indexing='ij')
    g = tf.gather_nd(grads, tf.stack([iy, ix], axis=-1))
    return (fy2 - dy) * g[..., 0] + (fx2 - dx) * g[..., 1]

  ty, tx = _fade(fy2), _fade(fx2)
  top = corner(0, 0) + ty * (corner(1, 0) - corner(0, 0))
  bottom = corner(0, 1) + ty * (corner(1, 1) - corner(0, 1))
  return math.sqrt(2.0) * (top + tx * (bottom - top))


@register_kind('perlin')
def perlin_kind(image, source, segments, num_segments, seeds, params):
  """DRAEM's Perlin-masked blend as a kind: (augmented, mask)."""
  del segments, num_segments
  return perlin(image, source, seeds[1], params)[:2]


def perlin(image: tf.Tensor, source: tf.Tensor, seed: tf.Tensor,
           params: AnomalyParams) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """DRAEM's Perlin-masked blend; returns (augmented, mask [H, W, 1], beta)."""
  s = tf.random.experimental.stateless_split(seed, 4)
  noise = random_perlin_noise(image.shape[0], image.shape[1], s[:2], params)
  threshold = sample_ops.uniform(s[2], *params.perlin_threshold_range)
  mask = tf.cast(noise > threshold, tf.float32)[..., None]
  beta = sample_ops.uniform(s[3], *params.perlin_beta_range)
  return blend(image, source, mask, beta), mask, beta


def random_perlin_noise(height: int, width: int, seeds: tf.Tensor,
                        params: AnomalyParams) -> tf.Tensor:
  """Perlin noise [H, W] of 2^a x 2^b lattice cells, a and b uniform in
  0..perlin_max_exponent (drawn with seeds[0]; the gradients with seeds[1])."""
  exps = sample_ops.randint(seeds[0], params.perlin_max_exponent + 1, shape=[2])
  res = tf.bitwise.left_shift(tf.ones([2], tf.int64), exps)
  return perlin_noise(height, width, res[0], res[1], seeds[1])


def blend(image: tf.Tensor, source: tf.Tensor, mask: tf.Tensor,
          beta: tf.Tensor) -> tf.Tensor:
  """The source inside the mask with opacity 1 - beta, the image elsewhere."""
  return image * (1.0 - mask) + (1.0 - beta) * source * mask + beta * image * mask


# ---- One training sample --------------------------------------------------


def synthesize(image: tf.Tensor, source: tf.Tensor, segments: tf.Tensor,
               num_segments: tf.Tensor, seed: tf.Tensor,
               params: AnomalyParams) -> dict[str, tf.Tensor]:
  """Makes one training sample from a normal image and a source.

  Args:
    image: float32 [H, W, 3] in [0, 1].
    source: float32 [H, W, 3] in [0, 1], the source resized to the image size.
    segments: int [K, H, W], the source's SLIC maps at K segment counts.
    num_segments: int [K], their largest labels.
    seed: [2] stateless seed of this sample.
    params: generator parameters.

  Returns:
    {'image', 'augmented': float32 [H, W, 3], 'mask': float32 [H, W, 1],
     'label': int32 scalar (1 iff the mask has a pixel)}.
  """
  for i, name in enumerate(sorted(set(params.methods) & set(KIND_PREPARES))):
    image = KIND_PREPARES[name](
        image, tf.random.experimental.stateless_fold_in(seed, 1000 + i), params)
  s = tf.random.experimental.stateless_split(seed, 5)
  anomalous = sample_ops.uniform(s[0], 0.0, 1.0) >= params.normal_probability

  def make_anomaly():
    augmented_source = augment_source(source, s[1], params)
    seeds = tf.stack([s[3], s[4]])
    branches = [lambda fn=KINDS[name]: fn(image, augmented_source, segments,
                                          num_segments, seeds, params)
                for name in params.methods]
    method = tf.cast(sample_ops.randint(s[2], len(branches)), tf.int32)
    return tf.switch_case(method, branches)

  def keep_normal():
    return image, tf.zeros_like(image[..., :1])

  augmented, mask = tf.cond(anomalous, make_anomaly, keep_normal)
  return {
      'image': image,
      'augmented': tf.clip_by_value(augmented, 0.0, 1.0),
      'mask': mask,
      'label': tf.cast(tf.reduce_max(mask) > 0, tf.int32),
  }
