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
from typing import Any, Callable

import ml_collections

from tasad_jax.config.presets import default
from tasad_jax.core import losses
from tasad_jax.runtime import fileio
from tasad_jax.runtime.errors import UserInputError

FILE = 'config.json'


def _kind_of(default) -> tuple[str, Callable[[Any], bool]]:
  """The kind of a default value, and whether a saved value is of it."""
  if isinstance(default, bool):
    return 'True or False', lambda v: isinstance(v, bool)
  if isinstance(default, int):
    return 'an integer', lambda v: isinstance(v, int) and not isinstance(v, bool)
  if isinstance(default, float):
    return 'a number', lambda v: isinstance(v, (int, float)) and not isinstance(
        v, bool)
  if isinstance(default, str):
    return 'a string', lambda v: isinstance(v, str)
  if isinstance(default, (list, tuple)):
    return 'a list', lambda v: isinstance(v, (list, tuple))
  return 'any value', lambda v: True


def merge(base: dict[str, Any], saved: dict[str, Any], where: str = 'config'
          ) -> dict[str, Any]:
  """`base` updated by `saved`, section by section (new dicts, inputs kept);
  a saved value of another kind than the default's is refused, naming it,
  as a command-line override of that field would be."""
  out = dict(base)
  for key, value in saved.items():
    if isinstance(out.get(key), dict):
      if not isinstance(value, dict):
        raise UserInputError(f'{where}.{key}: a section, saved as {value!r}')
      out[key] = merge(out[key], value, f'{where}.{key}')
      continue
    if key in out:
      kind, fits = _kind_of(out[key])
      if not fits(value):
        raise UserInputError(f'{where}.{key}: saved as {value!r}, not '
                             f'{kind}')
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


# The fields that shape the trained networks: a checkpoint restores only into
# the config that wrote it.
NETWORK_FIELDS = (('model', 'width'), ('data', 'image_size'), ('coarse', 'name'),
                  ('model', 'norm'), ('model', 'skip'), ('model', 'levels'),
                  ('model', 'widths'))


def _comparable(value):
  """A field's value with lists as tuples (JSON saves a tuple as a list)."""
  return tuple(value) if isinstance(value, list) else value


def check_matches(config, workdir: str) -> None:
  """Raises UserInputError naming the first network field of `config` that
  differs from the workdir's saved config (none saved: nothing to match), or
  config.train.ema_decay when one keeps a moving average of the parameters
  and the other not (the checkpoints hold it or not; its value may change),
  or a stage's loss when one makes the network's output a logit (its map a
  sigmoid) and the other not (its terms and weights may change)."""
  if read(workdir) is None:
    return
  trained = load(workdir)
  for section, name in NETWORK_FIELDS:
    current, value = config[section][name], trained[section][name]
    if _comparable(current) != _comparable(value):
      raise UserInputError(
          f'config.{section}.{name}: {current!r}, but {workdir} was trained '
          f'with {value!r} ({path(workdir)})')
  current, value = config.train.ema_decay, trained.train.ema_decay
  if bool(current) != bool(value):
    held = 'hold a' if value else 'have no'
    raise UserInputError(
        f'config.train.ema_decay: {current!r}, but {workdir} was trained with '
        f'{value!r} (its checkpoints {held} moving average of the parameters); '
        f'set it {"> 0" if value else "to 0"} ({path(workdir)})')
  for stage in ('cas', 'fas'):
    current, value = (tuple(c.model[f'{stage}_loss']) for c in (config, trained))
    if losses.on_logits(current) != losses.on_logits(value):
      maps = 'sigmoids of logits' if losses.on_logits(value) else 'raw outputs'
      raise UserInputError(
          f'config.model.{stage}_loss: {current!r}, but {workdir} was trained '
          f'with {value!r}, whose maps are {maps} ({path(workdir)})')


def write(config, workdir: str) -> None:
  """Writes `config` as the workdir's saved config (atomically)."""
  fileio.write_text(path(workdir),
                    config.to_json_best_effort(indent=2, sort_keys=True))
