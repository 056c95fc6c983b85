"""Datasets: the MVTec-layout reader, its TFDS builder, anomaly sources, and the
embedded default dataset. Nothing here needs TensorFlow except `tfds_mvtec`."""

from __future__ import annotations

import os

from tasad_jax.datasets import embedded
from tasad_jax.errors import UserInputError

EMBEDDED = 'embedded'


def resolve_root(root: str) -> str:
  """Turns `config.data.root` into a folder, building the embedded dataset."""
  if not root:
    raise UserInputError('config.data.root: not set; give '
                         '--config.data.root=/path/to/mvtec_anomaly_detection '
                         f'or {EMBEDDED!r}')
  if root == EMBEDDED:
    return embedded.embedded_root()
  return os.path.expanduser(root)
