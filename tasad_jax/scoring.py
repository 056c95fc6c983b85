"""Image scores from anomaly maps [N, H, W, 1], jit-able.

TASAD: the maximum of the map after a 21x21 mean filter (stride 1, zero
padding, always divided by 441). DeSTSeg: the mean of the T largest values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCORE_WINDOW = 21


def max_of_mean_filter(maps: jax.Array, window: int = SCORE_WINDOW) -> jax.Array:
  """Max of the `window`x`window` mean-filtered maps [N, H, W, 1] -> [N]."""
  summed = jax.lax.reduce_window(maps, 0.0, jax.lax.add, (1, window, window, 1),
                                 (1, 1, 1, 1), 'SAME')
  return jnp.max(summed / (window * window), axis=(1, 2, 3))


def top_k_mean(maps: jax.Array, k: int) -> jax.Array:
  """Mean of the `k` largest values of each map [N, H, W, 1] -> [N]."""
  flat = maps.reshape(maps.shape[0], -1)
  return jnp.mean(jax.lax.top_k(flat, min(k, flat.shape[1]))[0], axis=1)
