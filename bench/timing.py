"""Wall-clock timing shared by the benches (imported by them, not run)."""

import statistics
import time


def median_seconds(fn, warmup: int, repeats: int) -> float:
  """Median wall seconds of `fn()` over `repeats` calls after `warmup`."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)
