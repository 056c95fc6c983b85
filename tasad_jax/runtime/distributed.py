"""Multi-process jobs: joining one from the config or the cluster, and a local launcher.

A multi-host job is one process per host, joined by `jax.distributed`; every
process runs the same program on its own devices and feeds its own rows of
each global batch. `config.distributed` says how a process joins:

- `enabled=True` alone: the cluster tells (`jax.distributed.initialize()`
  detects SLURM, Cloud TPU, Open MPI, or reads `JAX_COORDINATOR_ADDRESS`);
- `coordinator_address`, `num_processes` and `process_id` given: exactly those;
- `num_processes=N` alone: this machine runs the job as N local processes
  (`launch`): N copies of the same command on a free loopback port, each with
  `local_device_count` CPU devices. The launcher forwards SIGTERM/SIGINT (a
  clean, checkpointed stop), and when a process dies it stops the others and
  prints one line, so a dead peer never leaves the rest waiting.

Nothing here needs TensorFlow or ml_collections.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from absl import logging
import jax
import numpy as np

from tasad_jax.runtime.errors import UserInputError

LOOPBACK = '127.0.0.1'
ROWS_LOG_ENV = 'TASAD_JAX_LOG_ROWS'  # Test hook: a folder for per-process rows.
# Seconds the launcher waits for the other processes once one has failed with
# an error of its own (they usually fail the same way at once), before killing.
ERROR_GRACE_S = 30.0
# A survivor's last words when JAX's coordination service lost a peer.
_PEER_LOST = ('JAX distributed service detected fatal errors',
              'Terminating process because')


def wants_launcher(config) -> bool:
  """Whether this command should run as `num_processes` local processes."""
  d = config.distributed
  return (int(d.num_processes) > 1 and not d.enabled and int(d.process_id) < 0
          and not d.coordinator_address)


def joins_job(config) -> bool:
  """Whether this process is one process of a multi-process job."""
  d = config.distributed
  return bool(d.enabled or int(d.process_id) >= 0 or d.coordinator_address)


def check_config(config) -> None:
  """Checks `config.distributed`; raises UserInputError naming the field."""
  d = config.distributed
  if int(d.num_processes) < 1:
    raise UserInputError('config.distributed.num_processes: must be >= 1')
  if int(d.local_device_count) < 0:
    raise UserInputError('config.distributed.local_device_count: must be >= 0')
  for name in ('heartbeat_timeout_s', 'initialization_timeout_s',
               'shutdown_timeout_s'):
    if int(d[name]) < 1:
      raise UserInputError(f'config.distributed.{name}: must be >= 1')
  if int(d.process_id) >= 0:
    if not d.coordinator_address:
      raise UserInputError('config.distributed.coordinator_address: needed '
                           'with config.distributed.process_id (host:port of '
                           'process 0)')
    if int(d.process_id) >= int(d.num_processes):
      raise UserInputError(
          f'config.distributed.process_id: {d.process_id} must be below '
          f'config.distributed.num_processes ({d.num_processes})')
  if d.coordinator_address and ':' not in d.coordinator_address:
    raise UserInputError(f'config.distributed.coordinator_address: '
                         f'{d.coordinator_address!r} must be host:port')


def _is_loopback(address: str) -> bool:
  host = address.rsplit(':', 1)[0].strip('[]')
  return host in ('localhost', '::1') or host.startswith('127.')


def initialize(config) -> None:
  """Sets the CPU device count and joins the job when the config asks to.

  Must run before JAX's backend starts; a second call does nothing.
  """
  check_config(config)
  d = config.distributed
  if int(d.local_device_count) > 0:
    with contextlib.suppress(RuntimeError):  # Backend already up (tests).
      jax.config.update('jax_num_cpu_devices', int(d.local_device_count))
  if not joins_job(config) or jax.distributed.is_initialized():
    return
  kwargs: dict[str, Any] = {}
  if int(d.process_id) >= 0:
    kwargs = dict(coordinator_address=d.coordinator_address,
                  num_processes=int(d.num_processes),
                  process_id=int(d.process_id))
    if _is_loopback(d.coordinator_address):
      kwargs['coordinator_bind_address'] = d.coordinator_address
      _gloo_on_loopback()
  elif d.coordinator_address:
    kwargs['coordinator_address'] = d.coordinator_address
  try:
    jax.distributed.initialize(
        **kwargs, initialization_timeout=int(d.initialization_timeout_s),
        heartbeat_timeout_seconds=int(d.heartbeat_timeout_s),
        shutdown_timeout_seconds=int(d.shutdown_timeout_s))
  except (ValueError, TypeError) as e:  # Nothing to detect, bad fields.
    raise UserInputError(f'config.distributed: cannot join the job ({e}); '
                         'set coordinator_address, num_processes and '
                         'process_id, or run under SLURM / on a TPU pod') from None
  logging.info('Process %d of %d joined the job (%d local devices)',
               jax.process_index(), jax.process_count(),
               jax.local_device_count())


def _gloo_on_loopback() -> None:
  """Keeps the CPU collectives (gloo) on the loopback interface too.

  JAX's CPU client lets gloo bind the machine's hostname; a local job should
  use loopback only. This uses JAX internals, so it is best-effort.
  """
  try:
    from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    from jaxlib import _jax  # pylint: disable=g-import-not-at-top

    def factory():
      return xla_bridge.make_cpu_client(
          collectives=_jax.make_gloo_tcp_collectives(
              distributed_client=jax_distributed.global_state.client,
              hostname=LOOPBACK))

    xla_bridge.register_backend_factory('cpu', factory, priority=0,
                                        fail_quietly=False)
  except (ImportError, AttributeError, TypeError, RuntimeError) as e:
    logging.warning('gloo stays on its default interface (%s)', e)


# -- Each process's rows ------------------------------------------------------


def check_rows(stage: str, step: int, rows: np.ndarray, batch_size: int) -> None:
  """Asserts that this process built exactly its rows of global batch `step`.

  Process p of P feeds rows [p*B/P, (p+1)*B/P) of each global batch of B
  examples; `rows` are the global example indices it built (1-based `step`).
  With $TASAD_JAX_LOG_ROWS set to a folder, they are also appended to
  `<folder>/rows_<process>.jsonl` (tests check that processes are disjoint).
  """
  p, count = jax.process_index(), jax.process_count()
  local = batch_size // count
  expected = (step - 1) * batch_size + p * local + np.arange(local)
  rows = np.asarray(rows)
  if not np.array_equal(rows, expected):
    raise AssertionError(f'{stage} step {step}: process {p} built rows '
                         f'{rows.tolist()} of the global batch, expected '
                         f'{expected.tolist()}')
  folder = os.environ.get(ROWS_LOG_ENV)
  if folder:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f'rows_{p}.jsonl'), 'a') as f:
      f.write(json.dumps({'stage': stage, 'step': step, 'process': p,
                          'processes': count, 'rows': rows.tolist()}) + '\n')


def local_rows(batch: np.ndarray) -> np.ndarray:
  """This process's equal share of a global batch of rows (zero-padded)."""
  count = jax.process_count()
  if count == 1:
    return batch
  per = -(-len(batch) // count)
  rows = batch[jax.process_index() * per:(jax.process_index() + 1) * per]
  if len(rows) < per:
    rows = np.concatenate([rows, np.zeros((per - len(rows),) + batch.shape[1:],
                                          batch.dtype)])
  return rows


def gather_rows(rows: np.ndarray, n: int) -> np.ndarray:
  """The first `n` rows of every process's `local_rows` results, in order."""
  if jax.process_count() == 1:
    return rows
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(rows, tiled=True))[:n]


def broadcast_from_first(value: int) -> int:
  """Process 0's integer, on every process (a collective: all must call)."""
  if jax.process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


# -- The local launcher ---------------------------------------------------------


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
