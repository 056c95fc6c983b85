"""Atomic writes: a reader sees the old file or folder, or the new, never half.

Every file the project publishes (config.json, thresholds.json, metrics.json,
exported programs, cached arrays) is written to a temporary name in the same
folder and renamed over the final name once complete; a folder is built under
a temporary name and swapped in. A crash leaves at most a stray temporary.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator, IO

from tasad_jax.runtime.errors import UserInputError


def check_writable(path: str, folder: bool, what: str) -> None:
  """Raises UserInputError unless `path` can be written as a file (or, with
  `folder`, a folder): it is not the other kind, and its nearest existing
  parent is a folder this process may write in. `what` names the flag."""
  if folder and os.path.exists(path) and not os.path.isdir(path):
    raise UserInputError(f'{path}: {what} exists and is not a folder')
  if not folder and os.path.isdir(path):
    raise UserInputError(f'{path}: {what} is a folder; give a file name')
  parent = _folder(path)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise UserInputError(f'{path}: {what} cannot be made: {parent} is a file')
  if not os.access(parent, os.W_OK | os.X_OK):
    raise UserInputError(f'{path}: {what} cannot be written: {parent} is '
                         'read-only or not ours')


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _folder(path: str) -> str:
  return os.path.dirname(os.path.abspath(path))


@contextlib.contextmanager
def atomic_file(path: str, mode: str = 'w') -> Iterator[IO]:
  """Opens a temporary file beside `path`; renames it to `path` on success."""
  folder = _folder(path)
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path),
                             suffix='.tmp')
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; publish as open().
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  with atomic_file(path, 'w') as f:
    f.write(text)


def write_bytes(path: str, data: bytes) -> None:
  with atomic_file(path, 'wb') as f:
    f.write(data)


def write_json(path: str, value: Any) -> None:
  """Sorted, indented JSON with a final newline (byte-identical on reruns)."""
  write_text(path, json.dumps(value, indent=2, sort_keys=True) + '\n')


def atomic_dir(path: str, build: Callable[[str], Any]) -> Any:
  """Calls `build(tmp)` on a fresh folder beside `path`, then swaps it in.

  An existing `path` is replaced whole; if `build` raises, `path` is untouched.
  """
  parent = _folder(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.' + os.path.basename(path) + '-', dir=parent)
  old = tmp + '.old'
  try:
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; publish as makedirs.
    result = build(tmp)
    if os.path.exists(path):
      os.replace(path, old)
    os.replace(tmp, path)
    return result
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
