"""Trains the coarse and fine stages from a config.

A shim of `tasad_jax.cli.train` (installed as a console script too).
"""

from tasad_jax.cli import train

if __name__ == '__main__':
  train.run()
