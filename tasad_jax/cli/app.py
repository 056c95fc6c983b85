"""What every entry point shares: flags defined when it runs, installed
config names, the one-line error edge and, where asked, the local launcher.

Flags are defined by `run`, not at import, so that all entry points can be
imported in one process (tests, tools) without their flags colliding.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from tasad_jax.config import presets
from tasad_jax.runtime import errors


def config_argv(argv: list[str]) -> list[str]:
  """`argv` with `--config` and `--sweep` values resolved to files
  (`presets.resolve`)."""
  out = list(argv)
  for i, arg in enumerate(out):
    for flag, sweep in (('--config', False), ('--sweep', True)):
      if arg.startswith(flag + '='):
        out[i] = f'{flag}=' + presets.resolve(arg[len(flag) + 1:], sweep)
      elif arg == flag and i + 1 < len(out):
        out[i + 1] = presets.resolve(out[i + 1], sweep)
  return out


def run(main: Callable[[list[str]], Any], define_flags: Callable[[], None],
        *, launch: bool = False, argv: list[str] | None = None) -> None:
  """Defines the flags, parses `argv` (default: sys.argv) and runs `main`
  behind `errors.cli_main`; with `launch`, as the local processes
  `config.distributed.num_processes` asks for (`runtime.launcher`)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  define_flags()
  entry = errors.cli_main(main)
  if launch:  # Imported here: `predict.py --model` runs without JAX.
    from tasad_jax.runtime import launcher  # pylint: disable=g-import-not-at-top
    entry = launcher.launcher_main(entry, lambda: flags.FLAGS.config)
  sys.argv = config_argv(sys.argv if argv is None else argv)
  app.run(entry, argv=sys.argv, flags_parser=errors.parse_flags)
