"""User-facing errors, and the command-line glue that reports them in one line.

Anything a user gives us (a path, a file, a config value) is checked where it is
used, and a problem raises `UserInputError` with a message that names the file or
field and says what is wrong. The entry points print that message as a single
`error: ...` line and exit with status 2, without a traceback. Flag and config
parsing errors (an unknown field, a bad value, a missing config file) are
reported the same way.
"""

import errno
import functools
import logging as std_logging
import signal
import sys
import threading
from typing import Callable

from absl import flags


class Error(Exception):
  """An error the command line reports as one line, without a traceback."""

  exit_status = 2


class UserInputError(Error):
  """Bad input from the user: a path, a file, a config field or a value."""


class TrainingFault(Error):
  """Training cannot go on (a non-finite loss); the last checkpoint is kept."""

  exit_status = 3


class CheckpointWriteError(Error):
  """A checkpoint could not be written (full or read-only disk, ...)."""

  exit_status = 1


class Preempted(Error):
  """SIGTERM: the run saved a checkpoint and stopped; rerun to resume."""

  exit_status = 128 + 15  # The shell's status for a SIGTERM'd command.


class Terminated(Error):
  """SIGTERM outside a training loop: stopped where it was."""

  exit_status = 128 + 15


class WriteError(Error):
  """An output could not be written (full disk, read-only, no permission)."""

  exit_status = 1


# OSErrors of the environment, not of the program: one line at the edge.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                errno.EPERM, errno.EIO)


EXIT_USER_ERROR = UserInputError.exit_status


def _fail(message: str, status: int = EXIT_USER_ERROR, prefix='error') -> None:
  """Prints each line of `message` as one `<prefix>: ...` line and exits."""
  for line in str(message).split('\n'):
    if line.strip():
      sys.stderr.write(f'{prefix}: ' + ' '.join(line.split()) + '\n')
  sys.stderr.flush()
  sys.exit(status)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flags parser for `app.run` that reports bad flags in one line.

  Also loads every config flag, so that a missing or broken config file is
  reported here rather than on first use.
  """
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e))
  except (AttributeError, KeyError) as e:  # An unknown config field.
    key = str(e).strip('"\'')
    where = [a for a in argv[1:] if key and key in a.split('=')[0]]
    _fail(f'{where[0] if where else ""}: unknown config field {key!r}')
  except (OSError, ValueError, TypeError) as e:
    hint = ('; it is a section: set its fields (e.g. '
            '--config.distributed.enabled=True)' if 'as a ConfigDict' in str(e)
            else '')
    _fail(str(e) + hint)
  for name, flag in flags.FLAGS.__flags.items():  # pylint: disable=protected-access
    if type(flag).__name__ == '_ConfigFlag':
      try:
        getattr(flags.FLAGS, name).keys()
      except AttributeError:  # Not set (a required flag reports it).
        pass
      except (OSError, SyntaxError, ImportError) as e:
        lines = [l.strip() for l in str(e).splitlines() if l.strip()]
        _fail(f'--{name}={flag.config_filename if hasattr(flag, "config_filename") else ""}'
              f': cannot load the config file ({lines[-1] if lines else e})')
  return rest


class _QuietLibraries(std_logging.Filter):
  """Drops INFO records of orbax and XLA's backend probing from the log, and
  the tracebacks of orbax's error records: a failed checkpoint write reaches
  the training loop, which says it in one line (`CheckpointWriteError`)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    noisy = ('/orbax/' in record.pathname or 'xla_bridge' in record.pathname
             or 'replica_slices' in record.pathname
             or 'signaling_client' in record.pathname)
    if '/orbax/' in record.pathname and record.exc_info:
      record.exc_info, record.exc_text = None, None
    return record.levelno >= std_logging.WARNING or not noisy


def _echo(value) -> bool:
  """Whether an exception only echoes a failed checkpoint write: when one
  fails (a full disk), each of orbax's pending writes reports 'Event loop is
  closed' from asyncio as the save is torn down; the `error:` line and
  orbax's own log record say what happened."""
  return isinstance(value, RuntimeError) and str(value) == 'Event loop is closed'


def _quiet_unraisable(unraisable) -> None:
  """Python's hook, less `_echo`'s reports; and a stop (Ctrl-C, SIGTERM)
  whose exception was raised inside a finaliser, where Python prints and
  drops it, is delivered again 50 ms later, from another thread, so that
  its handler runs after the finaliser and the command stops as asked."""
  value = unraisable.exc_value
  if isinstance(value, (KeyboardInterrupt, Terminated)):
    if isinstance(value, Terminated) and (
        threading.current_thread() is threading.main_thread()):
      signal.signal(signal.SIGTERM, _raise_terminated)
    again = threading.Timer(0.05, signal.raise_signal, (
        signal.SIGINT if isinstance(value, KeyboardInterrupt)
        else signal.SIGTERM,))
    again.daemon = True
    again.start()
  elif not _echo(value):
    sys.__unraisablehook__(unraisable)


def cli_main(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """Wraps an absl `main` for the entry points.

  Refuses stray positional arguments, quiets library logs, and is the one
  place where what ends a command becomes one line and its exit status: an
  `Error` (`error: ...`, its status), a full or read-only disk (`error:
  <file>: ...`, 1), Ctrl-C (`stopped: interrupted`, 130) and SIGTERM
  (`stopped: SIGTERM`, 143; a training loop takes SIGTERM over to save a
  checkpoint first). Outputs are written atomically, so a stopped command
  leaves none half-written. (TensorFlow, imported only where it is used,
  keeps off the accelerators by itself: `tasad_jax.runtime.tf_host`.)
  """

  @functools.wraps(main)
  def wrapped(argv):
    if len(argv) > 1:
      _fail(f'unexpected arguments: {" ".join(argv[1:])}')
    for handler in std_logging.getLogger().handlers:
      handler.addFilter(_QuietLibraries())
    sys.unraisablehook = _quiet_unraisable
    if threading.current_thread() is threading.main_thread():
      signal.signal(signal.SIGTERM, _raise_terminated)
    try:
      return main(argv)
    except (Preempted, Terminated) as e:
      _fail(str(e), e.exit_status, prefix='stopped')
    except Error as e:
      _fail(str(e), e.exit_status)
    except KeyboardInterrupt:
      _fail('interrupted (Ctrl-C); outputs written so far are complete, '
            'the one in progress was not published', 128 + signal.SIGINT,
            prefix='stopped')
    except OSError as e:
      if e.errno not in WRITE_ERRNOS:
        raise
      _fail(f'{e.filename or "output"}: cannot write ({e.strerror})',
            WriteError.exit_status)

  return wrapped


def _raise_terminated(signum, frame) -> None:
  del signum, frame
  signal.signal(signal.SIGTERM, signal.SIG_DFL)  # A second SIGTERM kills.
  raise Terminated('SIGTERM; outputs written so far are complete, the one in '
                   'progress was not published')
