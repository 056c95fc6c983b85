"""A sweep: a base config and a grid, expanded into cells before anything trains.

A sweep file's `get_config()` (e.g. `configs/sweeps/mvtec_methods.py`) holds:

* `base`: the config of every cell, an installed name ('default') or a file;
* `overrides`: fields set in every cell, nested as in the config
  (`overrides.train.cas_steps = 1000`);
* `categories`: categories of `config.data.root`, or `('all',)` for every one
  of the layout;
* `methods`: coarse methods (`config.coarse.name`), each with fields of its own
  in `method_overrides.<method>` (e.g. DRAEM's pseudo-anomaly kind);
* `seeds`: values of `config.seed`;
* `grid`: any other fields, nested, each a tuple of values.

A cell is one point of the product, named `<category>/<method>[/<field>=<value>
...]/seed<k>`. It runs as the ordinary `train.py` and `evaluate.py` with
`--config=<base>` and one `--config.<field>=<value>` flag per set field: its
command line is parsed here as those entry points parse theirs, so the cell is
exactly what they would produce, and a bad grid (unknown field, empty list,
unknown method or category, a value the schema refuses) is one error before
anything trains.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any

import ml_collections

from tasad_jax.config import presets, schema
from tasad_jax.data import categories as categories_lib
from tasad_jax.data import layouts
from tasad_jax.runtime.errors import UserInputError

# Sweep fields and their kinds; `grid`, `overrides` and `method_overrides`
# are nested ConfigDicts.
LISTS = ('categories', 'methods', 'seeds')
STATUS_FOLDER = 'benchmark'  # <root>/benchmark/<cell>/: status and logs.
# Axes set by the sweep itself, in every cell's command line.
CATEGORY, METHOD, SEED = 'data.category', 'coarse.name', 'seed'


@dataclasses.dataclass(frozen=True)
class Cell:
  """One train + evaluate of the grid."""
  name: str                     # 'bottle/destseg/seed0'
  category: str
  method: str
  seed: int
  variant: str                  # The extra grid fields, 'f=v,...' ('' if none).
  flags: tuple[str, ...]        # --config.<field>=<value> after --config.
  eval_folder: str = 'eval'     # Its config.eval.folder: where metrics.json goes.

  def workdir(self, root: str) -> str:
    return os.path.join(root, *self.name.split('/'))

  def metrics_path(self, root: str) -> str:
    return os.path.join(self.workdir(root), self.eval_folder, 'metrics.json')

  def argv(self, base: str, root: str) -> list[str]:
    """The flags of train.py and evaluate.py for this cell."""
    return [f'--config={base}', f'--workdir={self.workdir(root)}', *self.flags]

  def settings(self, base: str) -> list[str]:
    """What makes the cell's model: its flags but the workdir (a moved root
    still holds the same cells)."""
    return [f'--config={base}', *self.flags]


def flatten(tree, prefix: str = '') -> list[tuple[str, Any]]:
  """(dotted path, leaf) of a nested ConfigDict or dict, in insertion order."""
  out = []
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.extend(flatten(value, path + '.'))
    else:
      out.append((path, value))
  return out


def flag_value(value) -> str:
  """`value` as config_flags parses it back: strings as they are."""
  return value if isinstance(value, str) else repr(value)


def _lookup(config, path: str, where: str):
  node = config
  for part in path.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise UserInputError(f'{where}: no config field {path!r} in the base '
                           'config')
    node = node[part]
  return node


def _values(sweep, field: str) -> tuple:
  values = sweep[field]
  if isinstance(values, (str, int)):
    values = (values,)
  values = tuple(values)
  if not values:
    raise UserInputError(f'sweep.{field}: empty; give at least one value')
  if len(set(map(repr, values))) != len(values):
    raise UserInputError(f'sweep.{field}: {values!r} lists a value twice')
  return values


def base_flag(sweep) -> str:
  """The `--config` value of every cell: an installed config's name as it is
  (each entry point resolves it, wherever the package is installed), a file
  as an absolute path."""
  base = str(sweep.get('base') or '')
  if not base:
    raise UserInputError('sweep.base: not set; name a config (e.g. default) '
                         'or a config file')
  file, sep, rest = base.partition(':')
  if os.path.isfile(file):
    return os.path.abspath(file) + sep + rest
  if presets.path(os.path.basename(file).removesuffix('.py')):
    return base
  raise UserInputError(f'sweep.base: {base!r} is neither an installed config '
                       f'({", ".join(presets.NAMES)}) nor a file')


def parse_config(argv: list[str]) -> ml_collections.ConfigDict:
  """The config train.py builds from `argv` (`--config=...` and overrides)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = [f'--config={presets.resolve(a[len("--config="):])}'
          if a.startswith('--config=') else a for a in argv]
  values, full = flags.FlagValues(), ['benchmark', *argv]
  config_flags.DEFINE_config_file('config', None, '', flag_values=values,
                                  lock_config=True, sys_argv=full)
  try:
    values(full)
  except Exception as e:  # pylint: disable=broad-except
    # A flag, a value, or the base config file's own code (any exception).
    raise UserInputError(f'sweep: {" ".join(argv)}: {type(e).__name__}: {e}'
                         ) from None
  return values.config


def _check_fields(config, fields: list[tuple[str, Any]], where: str) -> None:
  for path, _ in fields:
    _lookup(config, path, f'{where}.{path}')


def _grid_axes(sweep, config) -> list[tuple[str, tuple]]:
  axes = []
  for path, values in flatten(sweep.get('grid') or {}):
    _lookup(config, path, f'sweep.grid.{path}')
    if not isinstance(values, (tuple, list)) or not values:
      raise UserInputError(f'sweep.grid.{path}: {values!r} must be a non-empty '
                           'tuple of values')
    axes.append((path, tuple(values)))
  return axes


def _categories(sweep, config) -> tuple[str, ...]:
  named = [str(c) for c in _values(sweep, 'categories')]
  for name in named:
    if not name.strip() or name in ('.', '..') or any(c in name for c in '/\\'):
      raise UserInputError(f'sweep.categories: {name!r} is not a folder name')
  if layouts.layout(config) == layouts.FOLDER:
    return tuple(named)
  try:
    available = layouts.expand_categories(config, [categories_lib.ALL])
  except UserInputError as e:
    raise UserInputError(f'{e} (in a sweep: --sweep.overrides.data.root=...)'
                         ) from None
  if categories_lib.ALL in named:
    return tuple(available)
  unknown = [c for c in named if c not in available]
  if unknown:
    root = categories_lib.resolve_root(config.data.root)
    raise UserInputError(f'sweep.categories: {", ".join(unknown)} not in {root} '
                         f'(found: {", ".join(available)})')
  return tuple(named)


def _variant_name(path: str, value) -> str:
  text = flag_value(value).replace('/', '_').replace(' ', '')
  return f'{path.rsplit(".", 1)[-1]}={text}'


def expand(sweep) -> tuple[str, list[Cell]]:
  """(base `--config` value, the cells of `sweep` in grid order), every cell's
  config parsed and checked by the train and evaluate schemas."""
  base = base_flag(sweep)
  config = parse_config([f'--config={base}'])
  fixed = flatten(sweep.get('overrides') or {})
  _check_fields(config, fixed, 'sweep.overrides')
  common = [f'--config.{p}={flag_value(v)}' for p, v in fixed]
  config = parse_config([f'--config={base}', *common])
  methods = tuple(str(m) for m in _values(sweep, 'methods'))
  per_method = sweep.get('method_overrides') or {}
  for name in per_method:
    if name not in methods:
      raise UserInputError(f'sweep.method_overrides.{name}: {name!r} is not '
                           f'one of sweep.methods {methods}')
    _check_fields(config, flatten(per_method[name]),
                  f'sweep.method_overrides.{name}')
  seeds = _values(sweep, 'seeds')
  if not all(isinstance(s, int) and s >= 0 for s in seeds):
    raise UserInputError(f'sweep.seeds: {seeds!r} must be integers >= 0')
  axes = _grid_axes(sweep, config)
  names = _categories(sweep, config)
  if STATUS_FOLDER in names:
    raise UserInputError(f'sweep.categories: {STATUS_FOLDER!r} is the folder '
                         "of the benchmark's logs; rename that category")
  cells = []
  for category, method in itertools.product(names, methods):
    own = [f'--config.{p}={flag_value(v)}'
           for p, v in flatten(per_method.get(method) or {})]
    for values in itertools.product(*(v for _, v in axes)):
      extra = [f'--config.{p}={flag_value(v)}' for (p, _), v in
               zip(axes, values)]
      variant = ','.join(_variant_name(p, v) for (p, _), v in zip(axes, values))
      for seed in seeds:
        name = '/'.join([category, method, *([variant] if variant else []),
                         f'seed{seed}'])
        flags = (*common, *own, *extra, f'--config.{CATEGORY}={category}',
                 f'--config.{METHOD}={method}', f'--config.{SEED}={seed}')
        cells.append(Cell(name, category, method, int(seed), variant, flags))
  return base, [_checked(base, cell) for cell in cells]


def _checked(base: str, cell: Cell) -> Cell:
  """`cell` with its eval folder, once its config passes the schemas."""
  config = parse_config([f'--config={base}', *cell.flags])
  problems = (schema.problems(config, schema.TRAIN)
              + schema.problems(config, schema.EVALUATE))
  if problems:
    raise UserInputError(f'cell {cell.name}: {problems[0]}')
  return dataclasses.replace(cell, eval_folder=str(config.eval.folder))


def shard_of(cells: list[Cell], index: int, count: int) -> list[Cell]:
  """Worker `index` of `count`'s cells: every count-th one of the grid order,
  so each worker gets a mix of categories and methods, and the shards
  cover the grid exactly once."""
  return cells[index::count]
