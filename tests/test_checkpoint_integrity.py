"""Damaged checkpoints: detected by their checksums, named, moved aside, and
training falls back to the newest good one; saving into a full disk fails
with one line and keeps the previous checkpoint."""

import errno
import glob
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import run_script
from tasad_jax.runtime import (checkpointing,
                               checkpoint_integrity)
from tasad_jax.training import trainer
from tasad_jax.runtime.errors import CheckpointWriteError


def _largest_data_file(step_dir):
  files = glob.glob(os.path.join(step_dir, 'default', 'ocdbt.process_0', 'd', '*'))
  return max(files, key=os.path.getsize)


def truncate(step_dir):
  path = _largest_data_file(step_dir)
  with open(path, 'r+b') as f:
    f.truncate(1000)
  return os.path.relpath(path, step_dir)


def flip_a_byte(step_dir):
  path = _largest_data_file(step_dir)
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  return os.path.relpath(path, step_dir)


def delete_metadata(step_dir):
  path = os.path.join(step_dir, 'default', '_METADATA')
  os.remove(path)
  return os.path.relpath(path, step_dir)


DAMAGES = (truncate, flip_a_byte, delete_metadata)


def _leaves(state):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]


@pytest.fixture
def cas_config(tiny_config):
  tiny_config.stages = ('cas',)
  tiny_config.train.cas_steps = 6
  tiny_config.train.checkpoint_every = 3
  return tiny_config


def test_every_damage_is_named_and_training_falls_back_exactly(
    cas_config, tmp_path, capfd):
  workdir = str(tmp_path / 'w')
  trainer.train_and_evaluate(cas_config, workdir)
  folder = os.path.join(workdir, 'checkpoints', 'cas')
  for step in ('3', '6'):
    assert checkpoint_integrity.has_manifest(os.path.join(folder, step))
  reference = _leaves(trainer.restore_stage(cas_config, workdir, 'cas',
                                          trainer.sharding.make_mesh()))
  for damage in DAMAGES:
    file = damage(os.path.join(folder, '6'))
    with pytest.raises(checkpoint_integrity.DamagedCheckpoint, match=file.replace(
        '.', r'\.')):
      checkpoint_integrity.verify(os.path.join(folder, '6'))
    capfd.readouterr()
    trainer.train_and_evaluate(cas_config, workdir)  # Falls back to step 3.
    warnings = [l for l in capfd.readouterr().err.splitlines()
                if l.startswith('warning:')]
    assert len(warnings) == 1 and os.path.join(folder, '6:') in warnings[0] and (
        file in warnings[0]), warnings
    resumed = _leaves(trainer.restore_stage(cas_config, workdir, 'cas',
                                          trainer.sharding.make_mesh()))
    for a, b in zip(resumed, reference):
      np.testing.assert_array_equal(a, b)  # = the uninterrupted run.
  moved = sorted(os.listdir(folder + '.damaged'))
  assert len(moved) == 3 and all(m.startswith('6-') for m in moved)  # Kept.


def test_evaluation_names_the_damage_and_an_older_step_still_works(
    tiny_workdir, tmp_path):
  workdir = str(tmp_path / 'w')
  shutil.copytree(tiny_workdir, workdir)
  shutil.rmtree(os.path.join(workdir, 'eval'), ignore_errors=True)
  step_dir = os.path.join(workdir, 'checkpoints', 'fas', '4')
  file = flip_a_byte(step_dir)
  result = run_script('evaluate.py', f'--workdir={workdir}')
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and step_dir in lines[0] and file in lines[0], lines
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(os.path.join(workdir, 'eval'))
  assert os.path.exists(os.path.join(step_dir, file))  # Nothing deleted.
  older = run_script('evaluate.py', f'--workdir={workdir}',
                     '--config.restore_step=3')
  assert older.returncode == 0, older.stderr[-2000:]
  assert os.path.exists(os.path.join(workdir, 'eval', 'metrics.json'))


def test_checkpoints_without_checksums_still_restore(tiny_workdir, tiny_config,
                                                     tmp_path):
  workdir = str(tmp_path / 'w')
  shutil.copytree(tiny_workdir, workdir)
  step_dir = os.path.join(workdir, 'checkpoints', 'cas', '6')
  os.remove(os.path.join(step_dir, checkpoint_integrity.MANIFEST))
  assert not checkpoint_integrity.verify(step_dir)
  state = trainer.restore_stage(tiny_config, workdir, 'cas',
                              trainer.sharding.make_mesh())
  assert int(state.step) == 6
  for a, b in zip(_leaves(state), _leaves(trainer.restore_stage(
      tiny_config, tiny_workdir, 'cas', trainer.sharding.make_mesh()))):
    np.testing.assert_array_equal(a, b)  # The same arrays, unverified.


def test_a_full_disk_fails_in_one_line_and_keeps_the_last_checkpoint(
    cas_config, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'w')
  real_save = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step == 6:
      raise OSError(errno.ENOSPC, 'No space left on device')
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)
  with pytest.raises(CheckpointWriteError) as failure:
    trainer.train_and_evaluate(cas_config, workdir)
  message = str(failure.value)
  assert '\n' not in message and 'No space left on device' in message
  folder = os.path.join(workdir, 'checkpoints', 'cas')
  assert folder in message and 'step 3' in message
  assert checkpoint_integrity.verify(os.path.join(folder, '3'))
  assert checkpointing.Checkpointer(folder).all_steps() == [3]
