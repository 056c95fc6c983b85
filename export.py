"""Exports a trained model for serving.

A shim of `tasad_jax.cli.export` (installed as a console script too).
"""

from tasad_jax.cli import export

if __name__ == '__main__':
  export.run()
