"""Dataset roots and category names: `config.data.root` (or the embedded
demo data) and the categories a command line names."""

from __future__ import annotations

import os

from tasad_jax.data import embedded
from tasad_jax.runtime.errors import UserInputError

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


ALL = 'all'


def categories_from_argv(argv: list[str], default: str) -> list[str]:
  """Categories named by `--config.data.category` (repeatable, comma lists).

  absl keeps only the last value of a repeated flag; multi-category runs read
  every occurrence here. Returns `[default]` when the flag is not given.
  """
  prefix = '--config.data.category='
  values = [a[len(prefix):] for a in argv if a.startswith(prefix)]
  names = [n.strip() for v in values for n in v.split(',') if n.strip()]
  return names or [default]


def mvtec_categories(root: str) -> list[str]:
  """Every folder of `root` (MVTec layout) that holds `train/good`."""
  root = resolve_root(root)
  if not os.path.isdir(root):
    raise UserInputError(f'{root}: dataset root (config.data.root) not found')
  found = sorted(n for n in os.listdir(root)
                 if os.path.isdir(os.path.join(root, n, 'train', 'good')))
  if not found:
    raise UserInputError(f'{root}: no category folder with train/good')
  return found
