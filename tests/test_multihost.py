"""Multi-process jobs for real: 2 processes x 2 CPU devices against the
session's single-device tiny workdir.

Every job here is real processes (the local launcher, loopback only), and every
process a test starts is killed in `finally`, whatever happens.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from conftest import lock_holder, wait_for
from tasad_jax.fine import stages
from tasad_jax.config.presets import tiny
from tasad_jax.runtime import preemption
from tasad_jax.core import sharding
from tasad_jax.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHED = re.compile(r'launched process (\d+) of \d+ \(pid (\d+)\)')


class Job:
  """`python <script>` of the tiny config as `processes` x `devices`."""

  def __init__(self, script, workdir, *extra, processes=2, devices=2, env=None):
    command = [sys.executable, os.path.join(REPO, script),
               f'--config={os.path.join(REPO, "configs", "tiny.py")}',
               f'--workdir={workdir}',
               f'--config.distributed.local_device_count={devices}', *extra]
    if processes > 1:
      command.append(f'--config.distributed.num_processes={processes}')
    self.out, self.err = [], []
    self.proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=REPO,
                                 env=dict(os.environ, **(env or {})),
                                 start_new_session=True)
    self.threads = [threading.Thread(target=self._read, args=(s, lines))
                    for s, lines in ((self.proc.stdout, self.out),
                                     (self.proc.stderr, self.err))]
    for thread in self.threads:
      thread.start()
    self._pids = {}

  @staticmethod
  def _read(stream, lines):
    for line in stream:
      lines.append(line)

  def pids(self):
    """{process id: pid} of the launched processes seen so far."""
    for line in list(self.err):
      m = LAUNCHED.search(line)
      if m:
        self._pids[int(m.group(1))] = int(m.group(2))
    return self._pids

  def wait(self, timeout=900):
    """(status, stdout, stderr) once the job ends."""
    self.proc.wait(timeout=timeout)
    for thread in self.threads:
      thread.join(timeout=10)
    return self.proc.returncode, ''.join(self.out), ''.join(self.err)

  def kill(self):
    """SIGKILL to the launcher's group and to every launched process."""
    self.pids()
    for pid in [self.proc.pid] + list(self._pids.values()):
      for kill in (os.killpg, os.kill):
        try:
          kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
          pass
    self.proc.wait()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.kill()


def _run(*args, **kwargs):
  with Job(*args, **kwargs) as job:
    status, out, err = job.wait()
  assert status == 0, err[-3000:]
  return out, err


def _state(workdir, stage, step=None):
  """The train state of `stage` in `workdir`: the latest, or at `step`."""
  return trainer.restore_stage(tiny.get_config(), workdir, stage,
                             sharding.make_mesh(), step)


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x, np.float64))
                         for x in jax.tree_util.tree_leaves(tree)])


def _numbers(tree, prefix=''):
  """{path: value} of the numeric leaves of a JSON report."""
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_numbers(v, f'{prefix}/{k}'))
    return out
  return {prefix: tree} if isinstance(tree, (int, float)) else {}


def _read(path):
  with open(path) as f:
    return json.load(f)


def _sockets(pid):
  """Local (address, port) of the TCP sockets that process `pid` holds."""
  inodes = set()
  for fd in os.listdir(f'/proc/{pid}/fd'):
    try:
      target = os.readlink(f'/proc/{pid}/fd/{fd}')
    except OSError:
      continue
    if target.startswith('socket:['):
      inodes.add(target[8:-1])
  found = []
  for table in ('/proc/net/tcp', '/proc/net/tcp6'):
    with open(table) as f:
      for line in f.readlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
          address = fields[1].split(':')[0]
          found.append(address)
  return found


def _is_loopback(hex_address):
  if len(hex_address) == 8:  # IPv4, little-endian: 0100007F is 127.0.0.1.
    return hex_address.endswith('7F')
  # IPv6: ::1, or ::ffff:127.x.x.x.
  return hex_address in ('00000000000000000000000001000000',) or (
      hex_address[:24] == '0000000000000000FFFF0000' and hex_address.endswith('7F'))


def _sigterm_then_resume(workdir, env):
  """The 2x2 tiny run, stopped by SIGTERM to process 1 alone once process 0
  has the workdir, then run again by the same command to its end.

  Returns:
    The stopped job's stderr, the stage and step it saved, and that stage's
    checkpoint folder as the stopped job left it.
  """
  with Job('train.py', workdir, env=env) as job:
    assert wait_for(lambda: len(job.pids()) == 2 and lock_holder(workdir)
                     == str(job.pids()[0]))
    for pid in job.pids().values():  # Loopback only.
      addresses = _sockets(pid)
      assert addresses and all(_is_loopback(a) for a in addresses), addresses
    os.kill(job.pids()[1], signal.SIGTERM)
    status, _, err = job.wait()
  assert status == 128 + 15, err[-3000:]
  stopped = [l for l in err.splitlines() if l.startswith('stopped:')]
  assert len(stopped) == 1, stopped  # The same line (same step) from both.
  stage, step = re.search(r'saved (\w+) step (\d+)', stopped[0]).groups()
  saved = os.listdir(os.path.join(workdir, 'checkpoints', stage))
  _run('train.py', workdir, env=env)
  return err, stage, int(step), saved


@pytest.fixture(scope='module')
def runs(tmp_path_factory, tiny_evaluated):
  """A 2x2 run of the tiny config (6 CAS + 4 FAS steps), preempted once and
  resumed, beside the session's 1x1 run of the same config
  (`tiny_evaluated`), whose checkpoints a 2x2 job evaluates again."""
  root = tmp_path_factory.mktemp('multihost')
  one, two, rows = (str(root / n) for n in ('one_by_one', 'two_by_two', 'rows'))
  shutil.copytree(tiny_evaluated, one)
  single = _read(os.path.join(one, 'eval', 'metrics.json'))
  stopped = _sigterm_then_resume(two, {'TASAD_JAX_LOG_ROWS': rows})
  out, _ = _run('evaluate.py', one)
  evals = {1: (None, single),
           2: (out, _read(os.path.join(one, 'eval', 'metrics.json')))}
  return {'one': one, 'two': two, 'rows': rows, 'evals': evals,
          'stopped': stopped}


def test_two_processes_train_the_same_parameters(runs):
  for stage in ('cas', 'fas'):
    one, two = _state(runs['one'], stage), _state(runs['two'], stage)
    assert int(one.step) == int(two.step) == (6 if stage == 'cas' else 4)
    # Same to float tolerance: the cross-process sums add in another order,
    # and Adam turns that round-off into lr-sized steps where the gradient is
    # ~0 (biases before BatchNorm), so compare the whole update, not ulps.
    start = _flat(stages.build_stage(tiny.get_config(), stage).create_state(
        sharding.make_mesh()).params)
    update = np.linalg.norm(_flat(one.params) - start)
    assert update > 0
    assert np.linalg.norm(_flat(one.params) - _flat(two.params)) < 0.25 * update
    np.testing.assert_allclose(_flat(two.batch_stats), _flat(one.batch_stats),
                               atol=1e-3)
  one, two = (_read(os.path.join(runs[k], 'thresholds.json')) for k in ('one', 'two'))
  assert one['method'] == two['method'] == 'tasad'
  np.testing.assert_allclose([two['image'], two['pixel']],
                             [one['image'], one['pixel']], rtol=2e-2)
  # Written once: process 0 alone writes logs (one file per job, and two
  # jobs ran: the preempted one and the resumed one); orbax commits each
  # step once.
  for stage in ('cas', 'fas'):
    logs = os.listdir(os.path.join(runs['two'], 'logs', stage))
    assert 1 <= len([n for n in logs if 'tfevents' in n]) <= 2, logs
    saved = os.listdir(os.path.join(runs['two'], 'checkpoints', stage))
    assert sorted(saved, key=int) == (['3', '6'] if stage == 'cas' else ['3', '4'])


def test_each_process_builds_only_its_rows_of_each_global_batch(runs):
  batch = 4
  rows = {}
  for p in (0, 1):
    with open(os.path.join(runs['rows'], f'rows_{p}.jsonl')) as f:
      for line in f:
        entry = json.loads(line)
        assert entry['process'] == p and entry['processes'] == 2
        key = (entry['stage'], entry['step'], p)
        # A step the preempted job prepared is prepared again on resume:
        # the same rows.
        assert rows.setdefault(key, entry['rows']) == entry['rows'], key
  for stage, count in (('cas', 6), ('fas', 4)):
    for step in range(1, count + 1):
      mine, theirs = rows[(stage, step, 0)], rows[(stage, step, 1)]
      assert len(mine) == len(theirs) == batch // 2
      assert not set(mine) & set(theirs)
      assert sorted(mine + theirs) == list(range((step - 1) * batch, step * batch))


def test_evaluation_in_either_shape_gives_the_same_metrics(runs):
  out, report = runs['evals'][2]  # 1x1 checkpoints restored by a 2x2 job.
  assert out.count('image_auroc') == 1, out  # One table, from process 0.
  assert report['tasad'] and report['cas']
  single = _numbers(runs['evals'][1][1])
  numbers = _numbers(report)
  assert set(numbers) == set(single)
  for key, value in numbers.items():
    if 'image' in key:  # Image scores are bit-identical in either shape.
      assert value == single[key], key
    else:  # Maps to round-off; this untrained model's maps are nearly flat.
      np.testing.assert_allclose(value, single[key], atol=2e-3, err_msg=key)


def test_second_job_on_a_workdir_is_refused_by_all_its_processes(tmp_path):
  workdir = str(tmp_path / 'w')
  os.makedirs(workdir)
  with preemption.WorkdirLock(workdir), Job('train.py', workdir) as job:
    status, _, err = job.wait()
  assert status == 2, err[-3000:]
  errors = [l for l in err.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'another run' in errors[0], errors
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))


def test_sigterm_to_one_process_stops_both_and_the_run_resumes(runs):
  """SIGTERM to process 1 alone: both stop at the same step with one line
  and one committed checkpoint; the same command then ran to the end (the
  other tests here check what it trained against the 1x1 run)."""
  err, _, step, saved = runs['stopped']
  assert 'Traceback' not in err
  assert str(step) in saved and not any('tmp' in s for s in saved), saved
  for name, steps in (('cas', 6), ('fas', 4)):
    assert int(_state(runs['two'], name).step) == steps


def test_sigkill_to_the_coordinator_stops_the_job_in_one_line(runs, tmp_path):
  """SIGKILL to process 0 (the coordinator) of a 2x2 job: the launcher
  stops the other at once and says so in one line; no process outlives it."""
  workdir = str(tmp_path / 'e')
  shutil.copytree(runs['one'], workdir, ignore=shutil.ignore_patterns('eval'))
  with Job('evaluate.py', workdir) as job:
    assert wait_for(lambda: len(job.pids()) == 2)
    pids = dict(job.pids())
    os.kill(pids[0], signal.SIGKILL)
    status, _, err = job.wait(timeout=60)
  assert status == 128 + 9, err[-3000:]
  errors = [l for l in err.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'process 0 of 2' in errors[0] and (
      'SIGKILL' in errors[0]), errors
  assert 'Traceback' not in err and 'Terminating process' not in err
  for pid in pids.values():
    assert not os.path.exists(f'/proc/{pid}') or open(
        f'/proc/{pid}/stat').read().split()[2] == 'Z'
