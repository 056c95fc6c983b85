"""Losses of the two stages: CAS uses MSE + (1 - SSIM), FAS uses MSE.

SSIM is dm-pix's: an 11x11 Gaussian window (sigma 1.5), constants for a value
range of 1 (masks are {0, 1}); valid filtering for TASAD's maps, or zero
padding to the input's size ('same', as DRAEM's reference code does).
"""

from __future__ import annotations

import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

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


def cas_loss(prediction: jax.Array, mask: jax.Array) -> tuple[jax.Array, dict]:
  """The coarse stage's loss and its parts."""
  m, s = mse(prediction, mask), ssim(prediction, mask)
  return m + (1.0 - s), {'mse': m, 'ssim': s}


def fas_loss(prediction: jax.Array, mask: jax.Array) -> tuple[jax.Array, dict]:
  """The fine stage's loss: MSE against the mask."""
  m = mse(prediction, mask)
  return m, {'mse': m}
