"""Coarse methods by name: `@register` on the class, `get(config)` to build.

A method module registers its class on import; the bundled ones (`BUNDLED`)
are imported on first use. Methods living outside the package are named in
`config.coarse.plugins` (importable module names) and imported before the
name is resolved, so train.py, evaluate.py, predict.py and export.py work on
them unchanged. Each method's `defaults` (a plain dict, one comment per
field where it is defined) become `config.coarse.<name>`.
"""

from __future__ import annotations

import importlib
from typing import Any

from tasad_jax.data import kind_modules
from tasad_jax.runtime.errors import UserInputError

REGISTRY: dict[str, type] = {}
# The package's own methods, imported (and so registered) on first use.
BUNDLED = ('tasad_jax.methods.tasad_cas', 'tasad_jax.methods.destseg',
           'tasad_jax.methods.anoseg', 'tasad_jax.methods.cavga',
           'tasad_jax.methods.draem')


def load_bundled() -> None:
  for module in BUNDLED:
    importlib.import_module(module)


def register(cls: type) -> type:
  """Class decorator: makes `cls` (a CoarseMethod) selectable by `cls.method`."""
  name = cls.method
  if not name or (name in REGISTRY and REGISTRY[name] is not cls):
    raise ValueError(f'coarse method name {name!r} empty or taken')
  REGISTRY[name] = cls
  for kind, module in cls.pseudo_anomaly_kinds.items():
    kind_modules.provide(kind, module)
  return cls


def _section(config, name: str) -> Any:
  """config.coarse.<name> of a ConfigDict or a plain dict; None if absent
  (a plugin's section, before `get` adds its defaults)."""
  return config['coarse'].get(name)


def import_plugins(config) -> None:
  """Imports the bundled methods and the modules of `config.coarse.plugins`."""
  load_bundled()
  for module in _section(config, 'plugins') or ():
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise UserInputError(f'config.coarse.plugins: cannot import {module!r} '
                           f'({e})') from None


def method_class(name: str) -> type:
  """The registered class of coarse method `name` (bundled ones loaded)."""
  load_bundled()
  return REGISTRY[name]


def name_of(config) -> str:
  """config.coarse.name."""
  return _section(config, 'name')


def default_sections() -> dict[str, dict]:
  """{method: its defaults} of every bundled or registered method."""
  load_bundled()
  return {name: dict(cls.defaults) for name, cls in sorted(REGISTRY.items())}


def anomaly_defaults() -> dict[str, Any]:
  """The config.anomaly fields that methods' own pseudo-anomaly kinds add."""
  load_bundled()
  return {k: v for cls in REGISTRY.values()
          for k, v in cls.anomaly_defaults.items()}


def get(config):
  """The coarse method that `config.coarse.name` names, built and checked.

  A registered method whose section is missing from `config` (a plugin) gets
  its defaults; unknown fields of a section are refused.
  """
  import_plugins(config)
  name = name_of(config)
  if name not in REGISTRY:
    raise UserInputError(f'config.coarse.name: unknown coarse method {name!r}; '
                         f'use one of {sorted(REGISTRY)}')
  cls = REGISTRY[name]
  section = _section(config, name)
  if section is None:
    import ml_collections  # pylint: disable=g-import-not-at-top
    section = ml_collections.ConfigDict(dict(cls.defaults))
    if hasattr(config.coarse, 'unlocked'):
      with config.coarse.unlocked():
        config.coarse[name] = section
    else:
      config.coarse[name] = section
  unknown = sorted(set(section.keys()) - set(cls.defaults))
  if unknown:
    raise UserInputError(f'config.coarse.{name}.{unknown[0]}: unknown field of '
                         f'{name}; its fields are {sorted(cls.defaults)}')
  method = cls(config)
  method.check_config()
  return method
