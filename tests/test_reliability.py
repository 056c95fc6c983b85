"""Faults: preemption (SIGKILL, SIGTERM), non-finite losses and concurrent runs
(the same bytes after a resume: test_train.py)."""

import os
import re
import random
import signal
import time

import jax
import numpy as np
import pytest

from conftest import lock_holder, start_script, wait_for
from tasad_jax.runtime import preemption
from tasad_jax.core import sharding
from tasad_jax.training import trainer
from tasad_jax.runtime.errors import TrainingFault, UserInputError


def _start(workdir, *extra):
  """train.py of the tiny config (6 + 4 steps, checkpoints every 3): its
  programs are the session's tiny run's, compiled once."""
  return start_script('train.py', f'--workdir={workdir}', *extra)


def _saving(workdir):
  """Whether a checkpoint of either stage is being written now."""
  for stage in ('cas', 'fas'):
    folder = os.path.join(workdir, 'checkpoints', stage)
    if os.path.isdir(folder) and any('tmp' in n for n in os.listdir(folder)):
      return True
  return False


def _leaves(workdir, config, stage):
  state = trainer.restore_stage(config, workdir, stage, sharding.make_mesh())
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]


def test_sigkill_at_random_moments_then_resume_is_exact(tiny_config, tmp_path,
                                                       tiny_workdir):
  """Killed twice, then run again: the parameters of the session's
  uninterrupted tiny run, bit for bit."""
  config, reference = tiny_config, tiny_workdir
  workdir = str(tmp_path / 'killed')
  rng = random.Random(0)
  # First kill in the middle of a checkpoint save, then at a random moment
  # once training has begun (earlier, a kill only interrupts imports).
  for attempt in range(2):
    proc = _start(workdir)
    if attempt == 0:
      assert wait_for(lambda: _saving(workdir)), 'never saw a save'
    else:
      assert wait_for(lambda: lock_holder(workdir) == str(proc.pid)), (
          'never started')
      time.sleep(rng.uniform(0.0, 3.0))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
  proc = _start(workdir)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err
  for stage in ('cas', 'fas'):
    for a, b in zip(_leaves(reference, config, stage),
                    _leaves(workdir, config, stage)):
      np.testing.assert_array_equal(a, b)


def test_sigterm_saves_and_stops_cleanly(tmp_path):
  workdir = str(tmp_path / 'w')
  proc = _start(workdir)
  assert wait_for(lambda: os.path.isdir(
      os.path.join(workdir, 'checkpoints', 'cas', '3')))
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + 15, err
  assert 'Traceback' not in err
  line = [l for l in err.splitlines() if l.startswith('stopped:')]
  assert len(line) == 1 and 'run the same command to resume' in line[0]
  # The stage it was in (CAS, or FAS once CAS has ended) and its step.
  stage, step = re.search(r'saved (\w+) step (\d+)', line[0]).groups()
  steps = os.listdir(os.path.join(workdir, 'checkpoints', stage))
  assert step in steps and not any('tmp' in s for s in steps)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tiny_config, tmp_path):
  config = tiny_config
  config.train.learning_rate = 1e30  # Parameters overflow after a step or two.
  workdir = str(tmp_path / 'w')
  with pytest.raises(TrainingFault, match=r'cas: non-finite loss .* at step \d+'
                     ) as fault:
    trainer.train_and_evaluate(config, workdir)
  kept = re.search(r'last good checkpoint \(step (\w+)\)', str(fault.value))[1]
  folder = os.path.join(workdir, 'checkpoints', 'cas')
  saved = sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if (
      os.path.isdir(folder)) else []
  assert (saved[-1] if saved else 'none') == (int(kept) if saved else kept)
  for x in (_leaves(workdir, config, 'cas') if saved else []):
    assert np.isfinite(x).all()  # The kept checkpoint holds no fault.

  config.train.skip_nonfinite = True
  skipped = str(tmp_path / 'skip')
  trainer.train_and_evaluate(config, skipped)
  for x in _leaves(skipped, config, 'cas'):
    assert np.isfinite(x).all()


def test_a_second_run_in_the_same_workdir_refuses(tiny_config, tmp_path):
  workdir = str(tmp_path / 'w')
  os.makedirs(workdir)
  with preemption.WorkdirLock(workdir):
    with pytest.raises(UserInputError, match='another run .* is using'):
      trainer.train_and_evaluate(tiny_config, workdir)
    proc = _start(workdir)
    _, err = proc.communicate(timeout=300)
  assert proc.returncode == 2
  assert [l for l in err.splitlines() if l.startswith('error:')][0].endswith(
      'wait for it or use another --workdir')
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))
  with preemption.WorkdirLock(workdir):  # Released when the holder is done.
    pass
