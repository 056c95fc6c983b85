"""Multi-process jobs: joining one from the config or the cluster, each process's rows.

A multi-host job is one process per host, joined by `jax.distributed`; every
process runs the same program on its own devices and feeds its own rows of
each global batch. `config.distributed` says how a process joins:

- `enabled=True` alone: the cluster tells (`jax.distributed.initialize()`
  detects SLURM, Cloud TPU, Open MPI, or reads `JAX_COORDINATOR_ADDRESS`);
- `coordinator_address`, `num_processes` and `process_id` given: exactly those;
- `num_processes=N` alone: this machine runs the job as N local processes
  (`runtime.launcher`).

Nothing here needs TensorFlow or ml_collections.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from absl import logging
import jax
import numpy as np

from tasad_jax.runtime.errors import UserInputError

LOOPBACK = '127.0.0.1'
ROWS_LOG_ENV = 'TASAD_JAX_LOG_ROWS'  # Test hook: a folder for per-process rows.


LOCAL_PROCESSES_PER_CPU = 4  # Each process holds its own JAX runtime.


def max_local_processes() -> int:
  """The most processes the local launcher starts on this machine."""
  return LOCAL_PROCESSES_PER_CPU * (os.cpu_count() or 1)


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
  if wants_launcher(config) and int(d.num_processes) > max_local_processes():
    raise UserInputError(
        f'config.distributed.num_processes: {d.num_processes} processes on '
        f'this machine; the local launcher starts at most '
        f'{max_local_processes()} ({LOCAL_PROCESSES_PER_CPU} per CPU). For a '
        'job over several hosts, set config.distributed.enabled=True on each')
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
