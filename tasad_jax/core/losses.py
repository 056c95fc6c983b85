"""Segmentation losses: the paper's, and the logit losses beside them.

TASAD trains CAS with MSE + (1 - SSIM) and FAS with MSE on the raw,
unbounded map. `SegmentationLoss` also sums the losses DRAEM and DeSTSeg
train their segmenters with (a focal loss on logits) and the usual
alternatives (binary cross-entropy, soft Dice): with any of those the
network's output is a logit and the map is its sigmoid, and MSE or SSIM in
the same sum compare that sigmoid with the mask. Defects are 0.2-3% of the
pixels; the focal loss down-weights the many easy normal pixels.

SSIM is dm-pix's: an 11x11 Gaussian window (sigma 1.5), constants for a value
range of 1 (masks are {0, 1}); valid filtering for TASAD's maps, or zero
padding to the input's size ('same', as DRAEM's reference code does).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import optax

PADDINGS = ('valid', 'same')


def mse(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error over all elements."""
  return jnp.mean(jnp.square(prediction.astype(jnp.float32) - target))


def _gaussian_same(x: jax.Array, size: int = 11, sigma: float = 1.5
                   ) -> jax.Array:
  """Separable Gaussian filter of NHWC `x`, zero-padded to its own size (the
  taps as shifted slices: their gradient is padding, cheap on every backend)."""
  taps = np.exp(-(np.arange(size) - size // 2) ** 2 / (2.0 * sigma ** 2))
  taps = taps / taps.sum()
  for axis in (1, 2):
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (size // 2, size // 2)
    padded = jnp.pad(x, pad)
    x = sum(float(t) * jax.lax.slice_in_dim(padded, i, i + n, axis=axis)
            for i, t in enumerate(taps))
  return x


def ssim(prediction: jax.Array, target: jax.Array, padding: str = 'valid'
         ) -> jax.Array:
  """Mean SSIM of NHWC maps (11x11 Gaussian window, sigma 1.5, range 1),
  over every channel; `padding` 'valid' (dm-pix's) or 'same' (zeros)."""
  if padding not in PADDINGS:
    raise ValueError(f'ssim padding {padding!r} not in {PADDINGS}')
  filter_fn = None
  if padding == 'same':  # The window shrinks to a map smaller than 11, as DRAEM's.
    filter_fn = functools.partial(
        _gaussian_same, size=min(11, prediction.shape[1], prediction.shape[2]))
  return jnp.mean(dm_pix.ssim(prediction.astype(jnp.float32),
                              target.astype(jnp.float32), max_val=1.0,
                              filter_size=11, filter_sigma=1.5,
                              filter_fn=filter_fn))


# Terms of a `SegmentationLoss`: on the map, or on logits (the map a sigmoid).
MAP_TERMS = ('mse', 'ssim')
LOGIT_TERMS = ('focal', 'bce', 'dice')
TERMS = MAP_TERMS + LOGIT_TERMS


def on_logits(terms) -> bool:
  """Whether a loss of `terms` makes the output a logit, the map its sigmoid."""
  return any(t in LOGIT_TERMS for t in terms)


def bce(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean binary cross-entropy of logits against a {0, 1} (or soft) mask."""
  logits = logits.astype(jnp.float32)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, mask))


def focal(logits: jax.Array, mask: jax.Array, gamma: float = 2.0,
          alpha: float = -1.0) -> jax.Array:
  """Mean sigmoid focal loss (Lin et al., 2017) of logits against a mask:
  cross-entropy x (1 - p_t)^gamma, and with `alpha` in [0, 1] the positive
  pixels weighted by alpha, the negative by 1 - alpha (alpha < 0: no
  weighting, torchvision's convention)."""
  logits = logits.astype(jnp.float32)
  p = jax.nn.sigmoid(logits)
  ce = optax.sigmoid_binary_cross_entropy(logits, mask)
  p_t = p * mask + (1.0 - p) * (1.0 - mask)
  loss = ce * (1.0 - p_t) ** gamma
  if alpha >= 0:
    loss = loss * (alpha * mask + (1.0 - alpha) * (1.0 - mask))
  return jnp.mean(loss)


def soft_dice(probabilities: jax.Array, mask: jax.Array,
              smooth: float = 1.0) -> jax.Array:
  """1 - soft Dice of probability maps [N, H, W, C] against masks, per image
  then averaged (`smooth` keeps a normal image's empty mask from dividing 0
  by 0 and rewards an empty prediction there)."""
  p = probabilities.astype(jnp.float32).reshape(probabilities.shape[0], -1)
  m = mask.astype(jnp.float32).reshape(mask.shape[0], -1)
  overlap = jnp.sum(p * m, axis=1)
  total = jnp.sum(p, axis=1) + jnp.sum(m, axis=1)
  return jnp.mean(1.0 - (2.0 * overlap + smooth) / (total + smooth))


@dataclasses.dataclass(frozen=True)
class SegmentationLoss:
  """A weighted sum of loss terms of a segmenter's output against the mask.

  Attributes:
    terms: names from `TERMS`; ('mse', 'ssim') is TASAD's CAS loss (MSE +
      (1 - SSIM)), ('mse',) its FAS loss.
    weights: one per term (() = all 1).
    focal_gamma, focal_alpha: the focal term's settings (`focal`).
  """
  terms: tuple[str, ...]
  weights: tuple[float, ...] = ()
  focal_gamma: float = 2.0
  focal_alpha: float = -1.0

  def __post_init__(self):
    # ValueError(field, message): the field is named by whoever reads config.
    if not self.terms or any(t not in TERMS for t in self.terms):
      raise ValueError('terms', f'{self.terms!r}: use one or more of {TERMS}')
    if len(set(self.terms)) != len(self.terms):
      raise ValueError('terms', f'{self.terms!r}: a term appears twice')
    if self.weights and len(self.weights) != len(self.terms):
      raise ValueError('weights', f'{self.weights!r}: one per term of '
                       f'{self.terms!r}, or () for all 1')
    if any(not (w >= 0 and math.isfinite(w)) for w in self.weights):
      raise ValueError('weights', f'{self.weights!r}: finite and >= 0')
    if not (self.focal_gamma >= 0 and math.isfinite(self.focal_gamma)):
      raise ValueError('focal_gamma', f'{self.focal_gamma} must be >= 0')
    if not self.focal_alpha <= 1:
      raise ValueError('focal_alpha', f'{self.focal_alpha} must be in [0, 1],'
                       ' or < 0 for no weighting')

  @property
  def on_logits(self) -> bool:
    """Whether the output is a logit, so that the map is its sigmoid."""
    return on_logits(self.terms)

  def to_map(self, output: jax.Array) -> jax.Array:
    """The anomaly map of the network's output (a copy-free identity for the
    paper's losses)."""
    return jax.nn.sigmoid(output) if self.on_logits else output

  def __call__(self, output: jax.Array, mask: jax.Array
               ) -> tuple[jax.Array, dict]:
    """The loss and its parts ('ssim' reported as SSIM, its term 1 - SSIM)."""
    prediction = self.to_map(output)
    parts, total = {}, None
    for i, term in enumerate(self.terms):
      if term == 'mse':
        value = parts['mse'] = mse(prediction, mask)
      elif term == 'ssim':
        parts['ssim'] = ssim(prediction, mask)
        value = 1.0 - parts['ssim']
      elif term == 'focal':
        value = parts['focal'] = focal(output, mask, self.focal_gamma,
                                       self.focal_alpha)
      elif term == 'bce':
        value = parts['bce'] = bce(output, mask)
      else:
        value = parts['dice'] = soft_dice(prediction, mask)
      if self.weights and self.weights[i] != 1:
        value = self.weights[i] * value
      total = value if total is None else total + value
    return total, parts


# The paper's losses: CAS MSE + (1 - SSIM), FAS MSE, on the raw map.
cas_loss = SegmentationLoss(('mse', 'ssim'))
fas_loss = SegmentationLoss(('mse',))
