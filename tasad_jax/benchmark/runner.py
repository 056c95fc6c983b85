"""Runs a worker's share of a sweep's cells, resumably, one process per cell.

Each cell is `train.py` then `evaluate.py` (the package's entry points, run as
`python -m tasad_jax.cli.<name>` by this interpreter) into `<root>/<cell>/`,
with status and logs in `<root>/benchmark/<cell>/`:

* a cell whose `eval/metrics.json` exists is done and skipped, if its recorded
  command line is the one the sweep gives now (else the run is refused: the
  root holds another benchmark's cell);
* a cell killed midway starts again and its training resumes from its
  checkpoints (train.py's own resume); killing this runner stops the cell's
  process too (SIGTERM, so it saves a checkpoint first);
* a cell that fails is recorded with its `error:` line and the others go on.

With `devices_per_cell=K`, the host's devices are split into groups of K and
each group runs its own queue of cells, pinned through the platform's standard
variable (CUDA_VISIBLE_DEVICES on GPUs; the host platform's device count on
CPU). A cell spanning several hosts is the ordinary `jax.distributed` run that
`config.distributed` describes: the benchmark starts it like any other.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

from tasad_jax.benchmark import sweep as sweep_lib
from tasad_jax.runtime import fileio, preemption
from tasad_jax.runtime.errors import UserInputError

ENTRY_POINTS = ('train', 'evaluate')
DONE, FAILED, RUNNING, STOPPED = 'done', 'failed', 'running', 'stopped'
SHARD_VARIABLES = (  # (index variable, count variable, offset variable).
    ('SLURM_ARRAY_TASK_ID', 'SLURM_ARRAY_TASK_COUNT', 'SLURM_ARRAY_TASK_MIN'),
    ('JOB_COMPLETION_INDEX', 'TASAD_JAX_SHARD_COUNT', None),  # Kubernetes.
)


def parse_shard(text: str, environ=os.environ) -> tuple[int, int]:
  """(index, count) from `--shard=i/N`, or, when empty, from the task index
  of a SLURM array job (SLURM_ARRAY_TASK_ID, ..._COUNT, ..._MIN) or of a
  Kubernetes indexed Job (JOB_COMPLETION_INDEX, with the count given as
  TASAD_JAX_SHARD_COUNT, since Kubernetes sets none); (0, 1) otherwise."""
  where = '--shard'
  if not text:
    for index_var, count_var, offset_var in SHARD_VARIABLES:
      if index_var in environ:
        if count_var not in environ:
          raise UserInputError(f'{count_var}: not set; {index_var} is, and the '
                               'shard count is needed with it (or give '
                               '--shard=i/N)')
        offset = int(environ.get(offset_var, 0) or 0) if offset_var else 0
        text = f'{int(environ[index_var]) - offset}/{environ[count_var]}'
        where = f'{index_var}/{count_var}'
        break
    else:
      return 0, 1
  match = re.fullmatch(r'\s*(\d+)\s*/\s*(\d+)\s*', text)
  if not match or not 0 <= int(match[1]) < int(match[2]):
    raise UserInputError(f'{where}: {text!r} must be i/N with 0 <= i < N')
  return int(match[1]), int(match[2])


def status_dir(root: str, cell: sweep_lib.Cell) -> str:
  return os.path.join(root, sweep_lib.STATUS_FOLDER, *cell.name.split('/'))


def read_status(root: str, cell: sweep_lib.Cell) -> dict:
  """The cell's status.json ({} when it never ran or the file is damaged)."""
  try:
    with open(os.path.join(status_dir(root, cell), 'status.json')) as f:
      status = json.load(f)
    return status if isinstance(status, dict) else {}
  except (OSError, ValueError):
    return {}


def is_done(root: str, cell: sweep_lib.Cell) -> bool:
  return os.path.isfile(cell.metrics_path(root))


def check_root(root: str, base: str, cells: list[sweep_lib.Cell]) -> None:
  """Refuses a root whose finished cells were run with other command lines."""
  fileio.check_writable(root, folder=True, what='--root')
  for cell in cells:
    recorded = read_status(root, cell).get('settings')
    if recorded and is_done(root, cell) and (
        recorded != cell.settings(base)):
      changed = sorted(set(recorded) ^ set(cell.settings(base)))
      raise UserInputError(
          f'{cell.workdir(root)}: this cell was run with other settings '
          f'({", ".join(changed)}); use another --root, or delete the folder '
          'to run it again')


@dataclasses.dataclass
class Slot:
  """A group of local devices that runs one cell at a time."""
  index: int
  env: dict[str, str]
  devices: str = ''


def probe_devices() -> tuple[str, int]:
  """(platform, local device count) as a cell process would see them, from a
  short subprocess, so that this process never holds an accelerator."""
  code = 'import jax; print(jax.default_backend(), jax.local_device_count())'
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false')
  out = subprocess.run([sys.executable, '-c', code], env=env, text=True,
                       capture_output=True, check=False)
  fields = out.stdout.split()
  if out.returncode or len(fields) != 2:
    raise UserInputError('--devices_per_cell: cannot list the local devices '
                         f'({(out.stderr.strip().splitlines() or ["?"])[-1]})')
  return fields[0], int(fields[1])


def _cpu_env(count: int) -> dict[str, str]:
  flags = re.sub(r'--xla_force_host_platform_device_count=\S+', '',
                 os.environ.get('XLA_FLAGS', '')).split()
  flags.append(f'--xla_force_host_platform_device_count={count}')
  return {'XLA_FLAGS': ' '.join(flags)}


def slots(devices_per_cell: int, probe=probe_devices) -> list[Slot]:
  """The device groups cells run on: one slot with every device (0), else
  one slot per `devices_per_cell` local devices."""
  if devices_per_cell == 0:
    return [Slot(0, {})]
  if devices_per_cell < 0:
    raise UserInputError(f'--devices_per_cell: {devices_per_cell} must be >= 0')
  platform, count = probe()
  groups = count // devices_per_cell
  if groups < 1:
    raise UserInputError(f'--devices_per_cell: {devices_per_cell} is more than '
                         f'the {count} local {platform} devices')
  out = []
  for g in range(groups):
    ids = list(range(g * devices_per_cell, (g + 1) * devices_per_cell))
    text = ','.join(map(str, ids))
    if platform in ('gpu', 'cuda', 'rocm'):
      var = 'HIP_VISIBLE_DEVICES' if platform == 'rocm' else 'CUDA_VISIBLE_DEVICES'
      env = {var: text}
    elif platform == 'cpu':
      env = _cpu_env(devices_per_cell)
    else:
      raise UserInputError(f'--devices_per_cell: {platform} devices cannot be '
                           'split between processes here; run one worker per '
                           'host (--shard) instead')
    out.append(Slot(g, env, text))
  return out


# Started in front of each cell's command (Linux): asks the kernel for SIGTERM
# when the runner dies (PR_SET_PDEATHSIG, kept across exec), so a killed
# runner leaves no cell training, and the cell saves a checkpoint first.
_ORPHAN_GUARD = (
    'import ctypes, os, signal, sys\n'
    'ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n'
    'if os.getppid() != int(sys.argv[1]): sys.exit(143)\n'
    'os.execv(sys.executable, [sys.executable, *sys.argv[2:]])')


def _guarded(argv: list[str]) -> list[str]:
  """`argv` (a Python command) behind the orphan guard where there is one."""
  if not sys.platform.startswith('linux'):
    return argv
  return [sys.executable, '-c', _ORPHAN_GUARD, str(os.getpid()), *argv[1:]]


def error_line(stderr_text: str, returncode: int) -> str:
  """The entry point's one `error:`/`stopped:` line, else its last line."""
  lines = [l.strip() for l in stderr_text.splitlines() if l.strip()]
  for line in reversed(lines):
    if line.startswith(('error:', 'stopped:')):
      return line
  tail = lines[-1] if lines else ''
  return f'exit status {returncode}' + (f': {tail}' if tail else '')


class Runner:
  """Runs cells into `root`, writing their status; thread-safe per cell."""

  def __init__(self, root: str, base: str, shard: tuple[int, int],
               out=sys.stdout):
    self.root, self.base, self.shard, self.out = root, base, shard, out
    self._print_lock = threading.Lock()
    self._procs: set[subprocess.Popen] = set()
    self._stopping = threading.Event()

  def say(self, text: str) -> None:
    with self._print_lock:
      print(text, file=self.out, flush=True)

  def _write_status(self, target, **fields) -> dict:
    status = read_status(self.root, target)
    status.update(fields)
    fileio.write_json(os.path.join(status_dir(self.root, target), 'status.json'),
                      status)
    return status

  def _process(self, entry: str, cell, slot: Slot) -> tuple[int, str]:
    """Runs one entry point for `cell`; (exit status, its error line)."""
    argv = [sys.executable, '-m', f'tasad_jax.cli.{entry}',
            *cell.argv(self.base, self.root)]
    log = os.path.join(status_dir(self.root, cell), f'{entry}.log')
    env = dict(os.environ, **slot.env)
    with open(log, 'a') as f:
      f.write(f'\n### {time.strftime("%Y-%m-%d %H:%M:%S")} '
              f'{" ".join(argv[1:])}\n')
      f.flush()
      start = f.tell()
      proc = subprocess.Popen(_guarded(argv), stdout=f,
                              stderr=subprocess.STDOUT, env=env)
      self._procs.add(proc)
      try:
        code = proc.wait()
      except BaseException:
        self.stop()
        raise
      finally:
        self._procs.discard(proc)
    with open(log) as f:
      f.seek(start)
      text = f.read()
    return code, error_line(text, code) if code else ''

  def stop(self) -> None:
    """Stops the running cells: SIGTERM (each saves a checkpoint), then a
    kill after two minutes."""
    self._stopping.set()
    procs = list(self._procs)
    for proc in procs:
      proc.send_signal(signal.SIGTERM)
    deadline = time.time() + 120
    for proc in procs:
      try:
        proc.wait(timeout=max(1.0, deadline - time.time()))
      except subprocess.TimeoutExpired:
        proc.kill()

  def _wait_for_lock(self, cell, timeout: float = 180.0) -> None:
    """Waits while another process holds the cell's workdir: the cell of a
    killed runner, saving its checkpoint before it stops."""
    deadline = time.time() + timeout
    while True:
      try:
        preemption.refuse_if_locked(cell.workdir(self.root))
        return
      except UserInputError as e:
        if time.time() > deadline:
          raise UserInputError(f'{e} (waited {timeout:.0f} s)') from None
        time.sleep(1.0)

  def run_cell(self, cell, slot: Slot, position: str) -> str:
    """Runs `cell` unless done; returns its final status."""
    if is_done(self.root, cell):
      self.say(f'{position} {cell.name}: done before, skipped')
      return DONE
    os.makedirs(status_dir(self.root, cell), exist_ok=True)
    try:
      self._wait_for_lock(cell)
    except UserInputError as e:
      self._write_status(cell, cell=cell.name, status=FAILED, error=str(e))
      self.say(f'{position} {cell.name}: FAILED: {e}')
      return FAILED
    previous = read_status(self.root, cell)
    self._write_status(
        cell, cell=cell.name, argv=cell.argv(self.base, self.root),
        settings=cell.settings(self.base),
        status=RUNNING, error='', shard=list(self.shard),
        devices=slot.devices, attempts=previous.get('attempts', 0) + 1,
        started=time.strftime('%Y-%m-%dT%H:%M:%S'))
    self.say(f'{position} {cell.name}: running'
             + (f' on devices {slot.devices}' if slot.devices else ''))
    began = time.time()
    try:
      for entry in ENTRY_POINTS:
        code, line = self._process(entry, cell, slot)
        if code and self._stopping.is_set():
          raise InterruptedError(line)
        if code:
          self._write_status(cell, status=FAILED, error=f'{entry}: {line}',
                             seconds=round(time.time() - began, 1))
          self.say(f'{position} {cell.name}: FAILED in {entry}: {line}')
          return FAILED
    except BaseException:
      self._write_status(cell, status=STOPPED, error='benchmark stopped')
      raise
    self._write_status(cell, status=DONE, seconds=round(time.time() - began, 1))
    self.say(f'{position} {cell.name}: done in {time.time() - began:.0f} s')
    return DONE

  def run(self, cells: list, device_slots: list[Slot]) -> dict[str, str]:
    """Runs `cells` over the slots; {cell name: final status}."""
    results, todo = {}, queue.Queue()
    for i, cell in enumerate(cells):
      todo.put((f'[{i + 1}/{len(cells)}]', cell))
    if len(device_slots) == 1:
      while not todo.empty():
        position, cell = todo.get()
        results[cell.name] = self.run_cell(cell, device_slots[0], position)
      return results
    errors = []

    def work(slot):
      try:
        while True:
          try:
            position, cell = todo.get_nowait()
          except queue.Empty:
            return
          results[cell.name] = self.run_cell(cell, slot, position)
      except InterruptedError:
        return
      except BaseException as e:  # pylint: disable=broad-except
        errors.append(e)

    threads = [threading.Thread(target=work, args=(s,), daemon=True)
               for s in device_slots]
    for t in threads:
      t.start()
    try:
      for t in threads:
        while t.is_alive():
          t.join(0.5)
    except BaseException:
      self.stop()
      for t in threads:
        t.join(5)
      raise
    if errors:
      raise errors[0]
    return results
