"""The local launcher: one command run as `config.distributed.num_processes`
processes on this machine.

N copies of the same command on a free loopback port, each with
`local_device_count` CPU devices, joined by `jax.distributed`. The launcher
forwards SIGTERM/SIGINT (a clean, checkpointed stop), and when a process dies
it stops the others and prints one line, so a dead peer never leaves the rest
waiting. Nothing here needs TensorFlow or ml_collections.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from absl import logging

from tasad_jax.runtime.distributed import LOOPBACK, check_config, wants_launcher
from tasad_jax.runtime.errors import UserInputError

# Seconds the launcher waits for the other processes once one has failed with
# an error of its own (they usually fail the same way at once), before killing.
ERROR_GRACE_S = 30.0
# A survivor's last words when JAX's coordination service lost a peer.
_PEER_LOST = ('JAX distributed service detected fatal errors',
              'Terminating process because')

def free_port() -> int:
  """A TCP port on loopback that nothing listens on now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((LOOPBACK, 0))
    return s.getsockname()[1]


def _die_with_parent() -> None:
  """Child side of fork: SIGKILL when the launcher dies (Linux), own group."""
  os.setpgid(0, 0)
  with contextlib.suppress(Exception):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _Child:
  """One launched process and the thread forwarding its stderr."""

  def __init__(self, index: int, proc: subprocess.Popen):
    self.index, self.proc = index, proc
    self.peer_lost = False  # It said JAX lost a peer: a consequence.
    self.killed = False  # We killed it.
    self.ended_at: float | None = None
    self.threads: list[threading.Thread] = []


def _forward_stdout(child: _Child, lock: threading.Lock) -> None:
  """Copies a child's stdout to ours, without gloo's connection notes."""
  for line in child.proc.stdout:
    if not line.startswith('[Gloo]'):
      with lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def _forward(child: _Child, seen: set, lock: threading.Lock) -> None:
  """Copies a child's stderr to ours; one copy of identical final lines."""
  for line in child.proc.stderr:
    if any(marker in line for marker in _PEER_LOST):
      child.peer_lost = True
    if child.peer_lost:
      continue  # JAX's abort and stack trace: the launcher says it in one line.
    with lock:
      if line.startswith(('error:', 'stopped:')):
        if line in seen:
          continue
        seen.add(line)
      sys.stderr.write(line)
      sys.stderr.flush()


def _describe(status: int) -> str:
  if status < 0:
    with contextlib.suppress(ValueError):
      return f'was killed by {signal.Signals(-status).name}'
    return f'was killed by signal {-status}'
  return f'exited with status {status}'


def launch(config, argv: list[str] | None = None) -> int:
  """Runs `argv` (default: this command) as `num_processes` local processes.

  Each copy gets `--config.distributed.process_id=i` and a loopback
  coordinator address. Returns 0 when all succeed; else the status of the
  process that failed first (128+signal for a killed one), after stopping the
  others.
  """
  check_config(config)
  argv = list(sys.argv if argv is None else argv)
  count = int(config.distributed.num_processes)
  address = f'{LOOPBACK}:{free_port()}'
  command = [sys.executable] + argv + [
      '--config.distributed.enabled=True',
      f'--config.distributed.coordinator_address={address}']
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  children: list[_Child] = []
  seen: set[str] = set()
  lock = threading.Lock()
  stop_signals = []

  def forward_signal(signum, frame):
    del frame
    stop_signals.append(signum)
    for child in children:  # SIGTERM: a clean stop at the same step for all.
      with contextlib.suppress(ProcessLookupError):
        child.proc.send_signal(signal.SIGKILL if len(stop_signals) > 2
                               else signal.SIGTERM)

  previous = {s: signal.signal(s, forward_signal)
              for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    for i in range(count):
      proc = subprocess.Popen(
          command + [f'--config.distributed.process_id={i}'], env=env,
          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
          errors='replace',
          preexec_fn=_die_with_parent)
      children.append(_Child(i, proc))
      logging.info('launched process %d of %d (pid %d), coordinator %s', i,
                   count, proc.pid, address)
    for child in children:
      child.threads = [
          threading.Thread(target=_forward, args=(child, seen, lock),
                           daemon=True),
          threading.Thread(target=_forward_stdout, args=(child, lock),
                           daemon=True)]
      for thread in child.threads:
        thread.start()
    return _supervise(children, count, seen)
  finally:
    for child in children:  # Whatever happened: no process outlives us.
      if child.proc.poll() is None:
        _kill(child)
    for child in children:
      child.proc.wait()
      for thread in child.threads:
        thread.join(timeout=5)
    for s, handler in previous.items():
      signal.signal(s, handler)


def _kill(child: _Child) -> None:
  child.killed = True
  with contextlib.suppress(ProcessLookupError):
    os.killpg(child.proc.pid, signal.SIGKILL)
  with contextlib.suppress(ProcessLookupError):
    child.proc.kill()


def _supervise(children: list[_Child], count: int, seen: set) -> int:
  """Waits for the children; stops them all when one fails."""
  deadline = None
  while True:
    now = time.monotonic()
    for child in children:
      if child.ended_at is None and child.proc.poll() is not None:
        child.ended_at = now
    ended = [c for c in children if c.ended_at is not None]
    if len(ended) == len(children):
      break
    failed = [c for c in ended if c.proc.returncode != 0]
    if failed:
      # A process killed by a signal, or aborted by JAX for a lost peer,
      # leaves the others blocked in collectives: stop them now. One that
      # failed with its own error gives the others time to do the same.
      crashed = any(c.proc.returncode < 0 or c.peer_lost for c in failed)
      if deadline is None:
        deadline = now + (0.0 if crashed else ERROR_GRACE_S)
      if crashed or now >= deadline:
        for child in children:
          if child.ended_at is None:
            _kill(child)
    time.sleep(0.05)
  for child in children:
    for thread in child.threads:
      thread.join(timeout=5)
  failed = sorted((c for c in children if c.proc.returncode != 0),
                  key=lambda c: c.ended_at)
  if not failed:
    return 0
  causes = [c for c in failed if not c.killed and not c.peer_lost] or failed
  cause = causes[0]
  status = cause.proc.returncode
  if status < 0 or cause.peer_lost or not seen:
    what = ('lost contact with the others (JAX distributed service)'
            if cause.peer_lost else _describe(status))
    sys.stderr.write(
        f'error: process {cause.index} of {count} (pid {cause.proc.pid}) '
        f'{what}; stopped the other processes; run the same command to '
        'resume from the last checkpoint\n')
    sys.stderr.flush()
  return 128 - status if status < 0 else status


def launcher_main(main: Callable[[list[str]], Any],
                  get_config: Callable[[], Any]) -> Callable[[list[str]], Any]:
  """Wraps an entry point's `main`: launches local processes when asked."""

  def wrapped(argv):
    config = get_config()
    if wants_launcher(config):
      try:
        sys.exit(launch(config))
      except UserInputError as e:
        sys.stderr.write(f'error: {e}\n')
        sys.exit(UserInputError.exit_status)
    return main(argv)

  return wrapped
