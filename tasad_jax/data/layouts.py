"""The one dispatch point from `config.data.layout` to a dataset reader.

* 'mvtec' (default): `<root>/<category>/train/good`, ... (`mvtec`);
* 'visa': `<root>/<category>/Data/...` and `<root>/split_csv/1cls.csv` (`visa`);
* 'folder': `config.data.normal_dir`, `abnormal_dir`, optional `mask_dir` and
  `normal_test_dir`, with a seeded split of the normal images when there is no
  normal test folder (`folder`).

Every reader returns the same `mvtec.Category`, so loading (`mvtec.load_samples`),
training, evaluation, thresholds and labelled anomalies do not depend on the
layout.
"""

from __future__ import annotations

import os

from tasad_jax.data import categories, folder, mvtec, visa
from tasad_jax.runtime.errors import UserInputError

MVTEC, VISA, FOLDER = 'mvtec', 'visa', 'folder'
LAYOUTS = (MVTEC, VISA, FOLDER)
FOLDER_FIELDS = ('normal_dir', 'abnormal_dir', 'mask_dir', 'normal_test_dir')


def layout(config) -> str:
  """config.data.layout."""
  return str(config.data.layout)


def _field(config, name: str) -> str:
  return os.path.expanduser(str(config.data[name] or ''))


def check_config(config) -> None:
  """Checks the layout fields; raises UserInputError naming the field."""
  name = layout(config)
  if name not in LAYOUTS:
    raise UserInputError(f'config.data.layout: {name!r} must be one of '
                         f'{", ".join(map(repr, LAYOUTS))}')
  if name != MVTEC and config.data.loader == 'tfds':
    raise UserInputError(f"config.data.loader: 'tfds' reads the mvtec layout "
                         f'only, not config.data.layout={name!r}')
  if name != FOLDER:
    for field in FOLDER_FIELDS:
      if _field(config, field):
        raise UserInputError(f'config.data.{field}: set, but config.data.layout '
                             f"is {name!r}; add --config.data.layout=folder")
    return
  for field in ('normal_dir', 'abnormal_dir'):
    if not _field(config, field):
      raise UserInputError(f'config.data.{field}: not set; the folder layout '
                           'needs normal_dir and abnormal_dir')
  fraction = config.data.test_fraction
  if not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
    raise UserInputError(f'config.data.test_fraction: {fraction!r} must be in '
                         '[0, 1)')


def scan(config) -> mvtec.Category:
  """Lists and checks the configured category's files, whatever the layout."""
  check_config(config)
  name = layout(config)
  if name == FOLDER:
    return folder.scan_folders(
        **{field: _field(config, field) for field in FOLDER_FIELDS},
        test_fraction=float(config.data.test_fraction),
        seed=int(config.seed), name=config.data.category)
  root = categories.resolve_root(config.data.root)
  if name == VISA:
    return visa.scan_category(root, config.data.category)
  return mvtec.scan_category(root, config.data.category)


def test_location(config) -> tuple[str, str]:
  """(where the test split comes from, where its normal images come from),
  for messages about the split."""
  name = layout(config)
  if name == FOLDER:
    test_dir = _field(config, 'normal_test_dir')
    good = test_dir or (f'{_field(config, "normal_dir")} '
                        '(config.data.test_fraction)')
    return _field(config, 'abnormal_dir'), good
  root = categories.resolve_root(config.data.root)
  if name == VISA:
    where = f'{os.path.join(root, visa.SPLIT_CSV)} ({config.data.category})'
    return where, where
  base = os.path.join(root, config.data.category, 'test')
  return base, os.path.join(base, mvtec.GOOD)


def expand_categories(config, names: list[str]) -> list[str]:
  """Replaces 'all' by every category of the configured root and layout."""
  if categories.ALL not in names:
    return names
  name = layout(config)
  if name == FOLDER:
    raise UserInputError("config.data.category: 'all' needs the mvtec or visa "
                         'layout; the folder layout is one category')
  if name == VISA:
    return visa.categories(categories.resolve_root(config.data.root))
  return categories.mvtec_categories(config.data.root)
