"""The configs installed with the package, by name: `--config=demo` anywhere.

    default             the paper's settings for one MVTec AD category
    demo                the embedded brick demo: small, minutes on a CPU
    tiny                the tests' settings
    magnetic_tile       Magnetic Tile on a 2-core CPU in an hour
    magnetic_tile_full  Magnetic Tile at the paper's size, for an accelerator

The repository's `configs/<name>.py` are one-line aliases of these, so
`--config=configs/demo.py` and `from configs import default` keep working.
Benchmark sweeps (`--sweep=mvtec_methods`, `configs/sweeps/<name>.py`) live in
`sweeps/` beside them.
"""

from __future__ import annotations

import os

NAMES = ('default', 'demo', 'tiny', 'magnetic_tile', 'magnetic_tile_full')
SWEEPS = ('mvtec_methods', 'demo_methods', 'magnetic_tile_methods')
FOLDER = os.path.dirname(os.path.abspath(__file__))


def path(name: str, sweep: bool = False) -> str | None:
  """The file of installed config (or sweep) `name`, or None if there is none."""
  if sweep:
    return os.path.join(FOLDER, 'sweeps', f'{name}.py') if name in SWEEPS else None
  return os.path.join(FOLDER, f'{name}.py') if name in NAMES else None


def resolve(value: str, sweep: bool = False) -> str:
  """A `--config` (or `--sweep`) value as a file: an existing path as it is,
  else an installed config named by itself (`demo`) or by its usual path
  (`configs/demo.py`); an `:override` suffix is kept."""
  file, sep, rest = value.partition(':')
  if not file or os.path.exists(file):
    return value
  name = os.path.basename(file)
  name = name[:-3] if name.endswith('.py') else name
  installed = path(name, sweep)
  return installed + sep + rest if installed else value
