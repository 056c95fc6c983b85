"""Writes a validation split carved from a category's normal train images.

A shim of `tasad_jax.cli.validation_split` (installed as a console script too).
"""

from tasad_jax.cli import validation_split

if __name__ == '__main__':
  validation_split.run()
