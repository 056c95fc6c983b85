"""Run control for long jobs: one run per workdir, and a clean stop on SIGTERM.

Pods are preempted with SIGTERM (then SIGKILL after a grace period). On SIGTERM
the training loop finishes its step, saves a checkpoint and stops with
`errors.Preempted`; the same command resumes. SIGKILL needs no handling: orbax
only finalises complete checkpoints and the data stream is a pure function of
the step, so a restart resumes exactly. A lock file keeps a second run from
writing into a workdir that a live run is using; the kernel releases it when
the holder dies, whatever kills it.

In a multi-process job, process 0 holds the lock for the whole job and tells
the others whether it got it, so a second job is refused by all its processes
at once; SIGTERM is left to JAX's preemption notifier, which makes every
process stop at the same step (`multihost_utils.reached_preemption_sync_point`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import threading

import jax

from tasad_jax.runtime import distributed
from tasad_jax.runtime.errors import UserInputError

LOCK_NAME = '.lock'


def _in_use(workdir: str, holder: int,
            hint: str = 'wait for it or use another --workdir'
            ) -> UserInputError:
  return UserInputError(
      f'{workdir}: another run (pid {holder if holder > 0 else "unknown"}) is '
      f'using this workdir; {hint}')


class WorkdirLock:
  """An exclusive, non-blocking lock on `<workdir>/.lock`, held by process 0
  for the whole job; every process of a refused job raises."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd = None

  def __enter__(self) -> 'WorkdirLock':
    holder = self._acquire() if jax.process_index() == 0 else 0
    if jax.process_count() > 1:  # All processes learn process 0's outcome.
      holder = distributed.broadcast_from_first(holder)
    if holder:
      self.__exit__()
      raise _in_use(os.path.dirname(self.path), holder)
    return self

  def _acquire(self) -> int:
    """Takes the lock: 0, or the holder's pid (-1 if unknown) when taken."""
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.read(fd, 64).decode(errors='replace').strip()
      os.close(fd)
      if e.errno in (errno.EAGAIN, errno.EACCES):
        return int(holder) if holder.isdigit() and int(holder) > 0 else -1
      raise
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    self._fd = fd
    return 0

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def refuse_if_locked(workdir: str, hint: str | None = None) -> None:
  """Raises as `WorkdirLock` would if a live run holds `workdir`'s lock,
  creating and changing nothing (a probe before a run reads its data, or
  before evaluation reads checkpoints a run is still writing)."""
  path = os.path.join(workdir, LOCK_NAME)
  if jax.process_count() > 1 or not os.path.exists(path):
    return
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno not in (errno.EAGAIN, errno.EACCES):
      raise
    holder = os.read(fd, 64).decode(errors='replace').strip()
    raise _in_use(workdir, int(holder) if holder.isdigit() else -1,
                  *([hint] if hint else [])) from None
  finally:
    os.close(fd)


class StopOnSigterm:
  """Records SIGTERM so the loop can stop at a step boundary."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __enter__(self) -> 'StopOnSigterm':
    # In a job, JAX's own SIGTERM handler feeds the preemption sync point; a
    # Python handler would replace it.
    if (threading.current_thread() is threading.main_thread()
        and jax.process_count() == 1):
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def should_stop(self, step: int) -> bool:
    """Whether to stop after `step`; all hosts agree in multi-host jobs."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return self.requested or multihost_utils.reached_preemption_sync_point(step)
    return self.requested
