"""Training: loss goes down, multi-device equals single-device, resume is exact."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tasad_jax.config import schema
from tasad_jax.runtime import checkpointing
from tasad_jax.evaluation import evaluate
from tasad_jax.data import pipeline
from tasad_jax import methods
from tasad_jax.core import sharding, stage, train_state
from tasad_jax.training import trainer
from tasad_jax.runtime.errors import UserInputError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _fixed_batch(config, stage='cas'):
  config = config.copy_and_resolve_references()
  config.anomaly.normal_probability = 0.0
  data = pipeline.load_train_data(config, 'cas')
  ds = pipeline.train_dataset(data, config, stage,
                                    batch_size=config.train.batch_size)
  batch = next(ds.as_numpy_iterator())
  return {'augmented': batch['augmented'], 'mask': batch['mask']}


@pytest.mark.parametrize('dtype,norm', [('float32', 'batch'),
                                        ('bfloat16', 'batch'),
                                        ('float32', 'group')])
def test_training_on_a_batch_lowers_the_loss(tiny_config, dtype, norm):
  tiny_config.model.dtype = dtype
  tiny_config.model.norm = norm
  tiny_config.model.width = 8
  tiny_config.train.cas_steps = 30
  tiny_config.train.learning_rate = 1e-3
  mesh = sharding.make_mesh()
  method = methods.get(tiny_config)
  state = method.create_state(mesh)
  program_at = stage.compile_phases(method, state, mesh)
  batch = sharding.to_global(_fixed_batch(tiny_config), mesh)
  losses = []
  with jax.set_mesh(mesh):
    for _ in range(30):
      state, m, _ = program_at(int(state.step))(state, batch, None)
      losses.append(float(m['loss']))
    maps = method.anomaly_map(method.inference_variables(state),
                              batch['augmented'])
  assert np.isfinite(losses).all()
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses
  assert int(state.step) == 30
  assert bool(state.batch_stats) == (norm == 'batch')
  assert maps.shape == batch['mask'].shape and np.isfinite(maps).all()


@pytest.fixture(scope='module')
def curves():
  """The tiny config's six steps of tasad_cas, anoseg and draem on this
  process's single device (tasad_cas's program is then the session's tiny run's) and
  on 4 devices (a subprocess: JAX takes the count when it starts)."""
  import loss_curve  # pylint: disable=g-import-not-at-top
  out = {1: loss_curve.curves(6, ['tasad_cas', 'anoseg', 'draem'])}
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=os.environ['XLA_FLAGS'] +
             ' --xla_force_host_platform_device_count=4')
  run = subprocess.run([sys.executable, os.path.join(HERE, 'loss_curve.py'),
                        '6', '--coarse=tasad_cas,anoseg,draem'], env=env,
                       capture_output=True, text=True, timeout=600, check=True)
  out[4] = json.loads(run.stdout.strip().splitlines()[-1])
  for devices in (1, 4):
    assert out[devices]['devices'] == devices
  return out


def test_four_devices_give_the_single_device_loss_curve(curves):
  one, four = (curves[d]['curves']['tasad_cas'] for d in (1, 4))
  np.testing.assert_allclose(four['losses'], one['losses'], rtol=2e-4)
  assert len(set(one['losses'])) > 1


def test_four_devices_give_the_single_device_anoseg_curves(curves):
  """AnoSeg's discriminator-then-generator step: the same on 1 and 4 devices."""
  one, four = (curves[d]['curves']['anoseg']['metrics'] for d in (1, 4))
  for key in ('loss', 'disc_loss', 'pixel', 'adversarial', 'reconstruction'):
    np.testing.assert_allclose(four[key], one[key], rtol=2e-4, err_msg=key)
  assert len(set(one['disc_loss'])) > 1


def test_four_devices_give_the_single_device_draem_curves(curves):
  """DRAEM's joint step (BatchNorm over the global batch in both networks):
  the first step's losses agree to 1e-4; later ones drift a little. Its
  float32 gradients hold sums that nearly cancel (BatchNorm after BatchNorm
  down to 1 x 1 at this size), so the order of summation moves them by up to
  tens of percent on 4 devices, and Adam's first steps (about lr times the
  sign) pass that on; computed in float64 the two agree to 2e-7, and one
  device repeats itself bit for bit."""
  one, four = (curves[d]['curves']['draem']['metrics'] for d in (1, 4))
  for key in ('loss', 'l2', 'ssim', 'focal'):
    np.testing.assert_allclose(four[key][0], one[key][0], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(four[key], one[key], atol=0.02, err_msg=key)
  assert len(set(one['focal'])) > 1


def _params(workdir, config, stage):
  mesh = sharding.make_mesh()
  return jax.tree_util.tree_map(np.asarray,
                                trainer.restore_stage(config, workdir, stage, mesh))


def test_kill_and_resume_equals_an_uninterrupted_run(tiny_config, tmp_path,
                                                     monkeypatch, tiny_evaluated):
  """A run killed after its step-3 checkpoint and run again ends with the
  parameters of the session's uninterrupted tiny run (6 + 4 steps,
  checkpoints every 3), and its evaluation writes the same bytes: same seed,
  same result, resumed or not."""
  assert (tiny_config.train.cas_steps, tiny_config.train.fas_steps,
          tiny_config.train.checkpoint_every) == (6, 4, 3)
  full = tiny_evaluated

  resumed = str(tmp_path / 'resumed')
  real_save = checkpointing.Checkpointer.save

  def save_then_die(self, step, state):
    real_save(self, step, state)
    if step == 3:
      self.wait()
      raise KeyboardInterrupt('killed after step 3')

  monkeypatch.setattr(checkpointing.Checkpointer, 'save', save_then_die)
  with pytest.raises(KeyboardInterrupt):
    trainer.train_and_evaluate(tiny_config, resumed)
  assert sorted(os.listdir(os.path.join(resumed, 'checkpoints', 'cas'))) == ['3']
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', real_save)
  trainer.train_and_evaluate(tiny_config, resumed)

  for name in ('cas', 'fas'):
    a, b = _params(full, tiny_config, name), _params(resumed, tiny_config, name)
    assert int(a.step) == int(b.step) == tiny_config.train[f'{name}_steps']
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
      np.testing.assert_array_equal(x, y)
  assert os.path.exists(os.path.join(resumed, 'config.json'))
  logs = os.listdir(os.path.join(resumed, 'logs', 'cas'))
  assert any(n.startswith('events.out.tfevents') for n in logs)

  evaluate.evaluate(tiny_config, resumed, [tiny_config.data.category])
  outputs = []
  for path in (full, resumed):
    with open(os.path.join(path, 'eval', 'metrics.json'), 'rb') as f:
      outputs.append(f.read())
  assert outputs[0] == outputs[1]
  assert json.loads(outputs[0])['tasad']


def test_learning_rate_schedules(tiny_config, tmp_path):
  """'step' is TASAD's decay at fixed fractions; 'cosine' warms up linearly
  and ends at 0; warm-up keeps the step schedule's drops where they were; the
  CAS method trains on the configured one; bad values (and a bad
  config.model.norm) fail in one line."""
  t = tiny_config.train
  t.learning_rate, t.lr_decay_at, t.lr_decay_factor = 1e-3, (0.8, 0.9), 0.2
  at = lambda schedule, steps: [float(schedule(s)) for s in steps]  # pylint: disable=unnecessary-lambda-assignment
  steps = [0, 5, 10, 55, 79, 80, 90, 99, 100]
  np.testing.assert_allclose(
      at(train_state.lr_schedule(t, 1e-3, 100), steps),
      [1e-3] * 5 + [2e-4, 4e-5, 4e-5, 4e-5], rtol=1e-5)
  t.lr_warmup = 0.1
  np.testing.assert_allclose(
      at(train_state.lr_schedule(t, 1e-3, 100), steps),
      [0, 5e-4] + [1e-3] * 3 + [2e-4, 4e-5, 4e-5, 4e-5], rtol=1e-5)
  t.lr_schedule = 'cosine'
  cosine = at(train_state.lr_schedule(t, 1e-3, 100), steps)
  np.testing.assert_allclose(cosine[:4], [0, 5e-4, 1e-3, 5e-4], rtol=1e-5)
  assert cosine[-1] == 0 and all(np.diff(cosine[2:]) <= 0)
  assert at(methods.tasad_cas.schedule(tiny_config, 100), steps) == cosine
  for section, field, value in (('train', 'lr_schedule', 'linear'),
                                ('train', 'lr_warmup', 1.0),
                                ('model', 'norm', 'layer')):
    bad = tiny_config.copy_and_resolve_references()
    bad[section][field] = value
    with pytest.raises(UserInputError, match=f'config.{section}.{field}'):
      schema.check(bad)


def test_fas_without_cas_checkpoint_is_a_clear_error(tiny_config, tmp_path):
  tiny_config.stages = ('fas',)
  with pytest.raises(UserInputError, match='no CAS checkpoint'):
    trainer.train_and_evaluate(tiny_config, str(tmp_path / 'w'))


def test_checkpoint_of_another_width_is_a_clear_error(tiny_config, tiny_workdir):
  tiny_config.model.width = 8
  with pytest.raises(UserInputError, match='does not fit'):
    trainer.restore_stage(tiny_config, tiny_workdir, 'cas', sharding.make_mesh())
