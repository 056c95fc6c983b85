"""Runs a sweep of train + evaluate cells and tables their metrics.

A shim of `tasad_jax.cli.benchmark` (installed as a console script too).
"""

from tasad_jax.cli import benchmark

if __name__ == '__main__':
  benchmark.run()
