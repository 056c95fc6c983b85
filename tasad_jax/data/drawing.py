"""Random strokes for synthetic defects: the embedded demo data's cracks and
the synthetic validation split's (NumPy and scikit-image)."""

from __future__ import annotations

from typing import Callable

import numpy as np
from skimage import draw


def random_walk(mask: np.ndarray, rng: np.random.Generator, start, heading: float,
                steps: int, turn: float, step: Callable[[], float], low, high,
                to_int: Callable[[float], float] = int) -> list[np.ndarray]:
  """Draws a walk of `steps` straight segments on `mask` (bool, in place).

  Each segment turns the heading by N(0, `turn`) radians and advances
  `step()` pixels, its end clipped to [`low`, `high`] per axis (y, x); ends
  become pixel indices with `to_int` (truncation, or `round`).

  Returns:
    The end point (y, x) of each segment.
  """
  pos = np.asarray(start, np.float64)
  ends = []
  for _ in range(steps):
    heading += rng.normal(0, turn)
    length = step()
    end = np.clip(pos + length * np.array([np.sin(heading), np.cos(heading)]),
                  low, high)
    rr, cc = draw.line(*(int(to_int(v)) for v in (pos[0], pos[1], end[0],
                                                   end[1])))
    mask[rr, cc] = True
    pos = end
    ends.append(pos)
  return ends
