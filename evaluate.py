"""Evaluates a workdir's trained stages on its category's test split.

A shim of `tasad_jax.cli.evaluate` (installed as a console script too).
"""

from tasad_jax.cli import evaluate

if __name__ == '__main__':
  evaluate.run()
