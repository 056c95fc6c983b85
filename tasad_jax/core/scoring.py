"""Image scores from anomaly maps [N, H, W, 1], jit-able.

TASAD: the maximum of the map after a 21x21 mean filter (stride 1, zero
padding, always divided by 441), 21 pixels being the paper's window at 256²
(`config.model.score_window`; 0 scales it with the image size). DeSTSeg: the
mean of the T largest values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tasad_jax.runtime.errors import UserInputError

SCORE_WINDOW = 21  # The paper's window, at 256 x 256.


def window_for(setting: int, image_size: int) -> int:
  """The mean filter's window: `setting` pixels, or with 0 the paper's 21
  pixels at 256² scaled to `image_size` (odd, at least 3: 11 at 128²)."""
  if setting < 0:
    raise UserInputError(f'config.model.score_window: {setting} must be >= 0')
  if setting:
    return int(setting)
  return max(3, int(round(SCORE_WINDOW * image_size / 256)) | 1)


def max_of_mean_filter(maps: jax.Array, window: int = SCORE_WINDOW) -> jax.Array:
  """Max of the `window`x`window` mean-filtered maps [N, H, W, 1] -> [N]."""
  summed = jax.lax.reduce_window(maps, 0.0, jax.lax.add, (1, window, window, 1),
                                 (1, 1, 1, 1), 'SAME')
  return jnp.max(summed / (window * window), axis=(1, 2, 3))


def top_k_mean(maps: jax.Array, k: int) -> jax.Array:
  """Mean of the `k` largest values of each map [N, H, W, 1] -> [N]."""
  flat = maps.reshape(maps.shape[0], -1)
  return jnp.mean(jax.lax.top_k(flat, min(k, flat.shape[1]))[0], axis=1)
