"""The normal train images held out for the thresholds, never trained on.

Training, the synthetic validation split and calibration must agree on which
images those are, so the choice depends on (count, fraction, seed) only.
"""

from __future__ import annotations

import numpy as np


def holdout_indices(n: int, fraction: float, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(kept, held-out) sorted indices of n normal train images; at least one
  of each when n >= 2 and fraction > 0. Depends on (n, fraction, seed) only."""
  count = int(round(fraction * n))
  if fraction > 0 and n >= 2:
    count = min(max(count, 1), n - 1)
  else:
    count = 0
  order = np.random.default_rng([seed, 17]).permutation(n)
  return np.sort(order[count:]), np.sort(order[:count])


def split_holdout(images: np.ndarray, fraction: float, seed: int):
  """(train, held-out) parts of the normal images (`holdout_indices`)."""
  keep, held = holdout_indices(len(images), fraction, seed)
  return images[keep], images[held]
