"""Scores image files with a trained model.

A shim of `tasad_jax.cli.predict` (installed as a console script too).
"""

from tasad_jax.cli import predict

if __name__ == '__main__':
  predict.run()
