"""User-facing errors and the CLI wrapper that turns them into one clear line.

Anything a user gives us (a path, a file, a config value) is checked where it is
used, and a problem raises `UserInputError` with a message that names the file or
field and says what is wrong. The command-line entry points print that message
as a single line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable


class UserInputError(Exception):
  """Bad input from the user: a path, a file, a config field or a value."""


EXIT_USER_ERROR = 2


def cli_main(main: Callable[..., None]) -> Callable[..., None]:
  """Wraps an absl `main` so that `UserInputError` exits with one line."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UserInputError as e:
      sys.stderr.write(f'error: {e}\n')
      sys.stderr.flush()
      sys.exit(EXIT_USER_ERROR)

  return wrapped
