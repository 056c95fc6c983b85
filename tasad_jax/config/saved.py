"""A workdir's saved config (`<workdir>/config.json`), read in one upgrade step.

Training writes the whole config it ran with. A workdir written before a
field existed lacks it, so the saved values are merged onto the installed
defaults (`presets.default`): every field added since then has, as its
default, the behaviour the older code had (the paper's BatchNorm and step
schedule, 'squash' images, the coarse+FAS score, no weak labels, the MVTec
layout, ...), so an older workdir loads as it was trained. This is the only
place that knows about older workdirs: the rest of the package reads every
field directly. Fields a saved config holds and the defaults do not (a
plug-in method's section) are kept.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from tasad_jax.config.presets import default
from tasad_jax.runtime import fileio
from tasad_jax.runtime.errors import UserInputError

FILE = 'config.json'


def merge(base: dict[str, Any], saved: dict[str, Any], where: str = 'config'
          ) -> dict[str, Any]:
  """`base` updated by `saved`, section by section (new dicts, inputs kept)."""
  out = dict(base)
  for key, value in saved.items():
    if isinstance(out.get(key), dict):
      if not isinstance(value, dict):
        raise UserInputError(f'{where}.{key}: a section, saved as {value!r}')
      out[key] = merge(out[key], value, f'{where}.{key}')
    else:
      out[key] = value
  return out


def upgrade(saved: dict[str, Any]) -> ml_collections.ConfigDict:
  """A saved config as a full config: merged onto the installed defaults."""
  return ml_collections.ConfigDict(merge(default.get_config().to_dict(), saved))


def path(workdir: str) -> str:
  return os.path.join(workdir, FILE)


def read(workdir: str) -> dict[str, Any] | None:
  """The raw saved config of `workdir`, or None when it has none."""
  file = path(workdir)
  if not os.path.exists(file):
    return None
  try:
    with open(file) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise UserInputError(f'{file}: unreadable config ({e})') from None
  if not isinstance(saved, dict):
    raise UserInputError(f'{file}: unreadable config (not a JSON object)')
  return saved


def load(workdir: str, restore_step: int = 0) -> ml_collections.ConfigDict:
  """A training workdir's config, upgraded, set to restore `restore_step`."""
  saved = read(workdir)
  if saved is None:
    raise UserInputError(f'{workdir}: not a training workdir (no {FILE})')
  try:
    config = upgrade(saved)
  except UserInputError as e:
    raise UserInputError(f'{path(workdir)}: {e}') from None
  config.restore_step = int(restore_step)
  return config


def write(config, workdir: str) -> None:
  """Writes `config` as the workdir's saved config (atomically)."""
  fileio.write_text(path(workdir),
                    config.to_json_best_effort(indent=2, sort_keys=True))
