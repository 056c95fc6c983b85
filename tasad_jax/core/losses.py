"""Losses of the two stages: CAS uses MSE + (1 - SSIM), FAS uses MSE.

SSIM is dm-pix's: an 11x11 Gaussian window (sigma 1.5) over the one-channel
maps, valid filtering, constants for a value range of 1 (masks are {0, 1}).
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp


def mse(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error over all elements."""
  return jnp.mean(jnp.square(prediction.astype(jnp.float32) - target))


def ssim(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Mean SSIM of NHWC maps (11x11 Gaussian window, sigma 1.5, range 1)."""
  return jnp.mean(dm_pix.ssim(prediction.astype(jnp.float32),
                              target.astype(jnp.float32), max_val=1.0,
                              filter_size=11, filter_sigma=1.5))


def cas_loss(prediction: jax.Array, mask: jax.Array) -> tuple[jax.Array, dict]:
  """The coarse stage's loss and its parts."""
  m, s = mse(prediction, mask), ssim(prediction, mask)
  return m + (1.0 - s), {'mse': m, 'ssim': s}


def fas_loss(prediction: jax.Array, mask: jax.Array) -> tuple[jax.Array, dict]:
  """The fine stage's loss: MSE against the mask."""
  m = mse(prediction, mask)
  return m, {'mse': m}
