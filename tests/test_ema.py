"""config.train.ema_decay: a moving average of the parameters that inference
reads, kept in the checkpoints; off (0, the paper) the state is as before.

The average's arithmetic, skipped steps and resume run on a toy stage through
the real jitted step (`compile_phases`: donation, shardings); TASAD's CAS is
only initialised (its layout, shardings, checkpoints and what inference and
the fine stage restore), which keeps the file fast.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from tasad_jax import methods
from tasad_jax.config import saved, schema
from tasad_jax.config.presets import tiny
from tasad_jax.core import sharding, stage, train_state
from tasad_jax.fine import fas
from tasad_jax.inference import two_stage
from tasad_jax.runtime import checkpointing
from tasad_jax.runtime.errors import UserInputError

DECAY = 0.2  # Small, so that both sides of min(d, (1+t)/(10+t)) are used.
# The toy's gradient at each step; NaN: a skipped step.
GRADIENTS = np.array([[1.0, -2.0, 0.5], [np.nan, 0.0, 0.0], [-1.0, 0.5, 4.0],
                      [0.25, 1.0, -3.0], [2.0, 2.0, 2.0]], np.float32)


def _config(decay):
  config = tiny.get_config()  # TASAD's CAS, width 4, 32 px, BatchNorm.
  config.train.ema_decay = decay
  return config


def _paths(tree):
  return [jax.tree_util.keystr(p) for p, _ in
          jax.tree_util.tree_leaves_with_path(tree)]


def _host(tree):
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def _assert_equal(a, b):
  assert _paths(a) == _paths(b)
  for x, y in zip(jax.tree_util.tree_leaves(_host(a)),
                  jax.tree_util.tree_leaves(_host(b)), strict=True):
    np.testing.assert_array_equal(x, y)


class _Toy(stage.Stage):
  """One vector of parameters, SGD on the batch's mean as its gradient, and
  a statistic that counts steps (as BatchNorm's would change)."""

  name = 'cas'

  def create_state(self, mesh):
    state = train_state.TrainState.create(
        {'net': {'params': {'w': jnp.zeros(3)},
                 'batch_stats': {'n': jnp.zeros(())}}},
        [train_state.Optimizer('sgd', ('net',), optax.sgd(0.5))])
    return jax.device_put(state, sharding.replicated(mesh))

  def phases(self):
    def step(state, batch, rng, context):
      del rng, context
      grads = {'net': {'w': jnp.mean(batch['g'], axis=0)}}
      finite = train_state.all_finite(grads)
      updated = state.apply_gradients(
          'sgd', grads, {'net': {'n': state.batch_stats['net']['n'] + 1}})
      return train_state.finish_step(state, updated, finite), {}, finite
    return [stage.Phase(0, step)]


def _toy_run(decay, steps=len(GRADIENTS), state=None, save=None):
  """(final state, parameters after each step) of the toy's steps from its
  initial state (or `state`), saved at `save` steps into a Checkpointer."""
  toy, mesh = _Toy(ml_collections.ConfigDict(
      {'seed': 0, 'train': {'ema_decay': decay}})), sharding.make_mesh()
  state = toy.initial_state(mesh) if state is None else state
  program_at = stage.compile_phases(toy, state, mesh)
  params = [_host(state.params)]
  with jax.set_mesh(mesh):
    while int(state.step) < steps:
      g = np.tile(GRADIENTS[int(state.step)], (mesh.devices.size, 1))
      state, _, _ = program_at(int(state.step))(
          state, sharding.to_global({'g': g}, mesh), None)
      params.append(_host(state.params))
      if save and int(state.step) == save[0]:
        save[1].save(save[0], state)
  return state, params


def test_the_average_follows_its_formula_and_leaves_training_as_it_was():
  averaged, params = _toy_run(DECAY)
  plain, plain_params = _toy_run(0.0)
  assert type(plain) is train_state.TrainState  # pylint: disable=unidiomatic-typecheck
  assert isinstance(averaged, train_state.EmaTrainState)
  # The average does not feed back: the parameters, bit for bit.
  _assert_equal(params, plain_params)
  _assert_equal(averaged.batch_stats, plain.batch_stats)
  ema, decays = np.zeros(3, np.float32), []
  for t, after in enumerate(params[1:]):
    if np.isnan(GRADIENTS[t]).any():  # Skipped: nothing moves.
      np.testing.assert_array_equal(after['net']['w'], params[t]['net']['w'])
      continue
    d = min(DECAY, (1 + t) / (10 + t))
    decays.append(d)
    assert float(train_state.ema_decay_at(DECAY, t)) == pytest.approx(d)
    ema = d * ema + (1 - d) * after['net']['w']
  assert min(decays) < DECAY == max(decays)  # Warm-up, then the decay.
  np.testing.assert_allclose(averaged.ema['net']['w'], ema, rtol=1e-6)
  assert np.abs(ema - params[-1]['net']['w']).max() > 0.1
  assert int(averaged.step) == len(GRADIENTS)


def test_a_resume_with_the_average_equals_an_uninterrupted_run(tmp_path):
  straight, _ = _toy_run(DECAY)
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  _toy_run(DECAY, steps=3, save=(3, ckpt))
  ckpt.wait()
  toy = _Toy(ml_collections.ConfigDict({'seed': 0,
                                        'train': {'ema_decay': DECAY}}))
  restored = ckpt.restore(toy.abstract_state(sharding.make_mesh()))
  ckpt.close()
  assert isinstance(restored, train_state.EmaTrainState)
  resumed, _ = _toy_run(DECAY, state=restored)
  _assert_equal(resumed, straight)


@pytest.fixture(scope='module')
def cas(tmp_path_factory):
  """TASAD's CAS without and with the average: initial states, checkpointed
  (step 1) in a workdir each; the average set apart from the parameters."""
  mesh, out = sharding.make_mesh(), {}
  for decay in (0.0, DECAY):
    config = _config(decay)
    method = methods.get(config)
    state = method.initial_state(mesh)
    shardings = jax.tree_util.tree_map(lambda x: x.sharding, state)
    if decay:
      state = state.replace(ema=jax.tree_util.tree_map(
          lambda p: p + 1.0, state.ema))
    workdir = str(tmp_path_factory.mktemp('on' if decay else 'off'))
    ckpt = checkpointing.Checkpointer(
        checkpointing.checkpoint_dir(workdir, 'cas'))
    ckpt.save(1, state)
    ckpt.close()
    out['on' if decay else 'off'] = {
        'config': config, 'method': method, 'mesh': mesh, 'workdir': workdir,
        'state': state, 'shardings': shardings}
  return out


def test_off_keeps_the_state_as_it_was_and_on_adds_the_average(cas):
  off, on = cas['off'], cas['on']
  assert type(off['state']) is train_state.TrainState  # pylint: disable=unidiomatic-typecheck
  created = off['method'].create_state(off['mesh'])
  assert (_paths(off['state']) == _paths(created)
          == _paths(off['method'].abstract_state(off['mesh'])))
  assert not any('ema' in p for p in _paths(created))
  # On: the same arrays plus `ema`, in the parameters' structure.
  assert isinstance(on['state'], train_state.EmaTrainState)
  ema = [p for p in _paths(on['state']) if p.startswith('.ema')]
  assert ema == [p.replace('.params', '.ema', 1)
                 for p in _paths(created) if p.startswith('.params')]
  assert sorted(set(_paths(on['state'])) - set(ema)) == sorted(
      _paths(created))
  assert _paths(on['method'].abstract_state(on['mesh'])) == _paths(
      on['state'])


def test_the_average_is_replicated_like_the_parameters(cas):
  on = cas['on']
  rep = sharding.replicated(on['mesh'])
  for tree in (on['shardings'].ema, on['shardings'].params):
    assert all(s == rep for s in jax.tree_util.tree_leaves(tree))
  abstract = on['method'].abstract_state(on['mesh'])
  assert all(x.sharding == rep for x in jax.tree_util.tree_leaves(abstract.ema))


def test_inference_and_the_fine_stage_read_the_average(cas):
  """Evaluation, predict and export restore through `TwoStage.from_workdir`,
  the fine stage's coarse input through its context: both get the average,
  with the live BatchNorm statistics; without it, the parameters."""
  for name, params in (('on', 'ema'), ('off', 'params')):
    run = cas[name]
    want = {'params': getattr(run['state'], params),
            'batch_stats': run['state'].batch_stats}
    runner = two_stage.TwoStage.from_workdir(run['config'], run['workdir'],
                                             run['mesh'])
    _assert_equal(runner.cas, want)
    _assert_equal(fas.FineStage(run['config']).context(run['workdir'],
                                                       run['mesh']), want)


@pytest.mark.parametrize('written', ['on', 'off'])
def test_a_checkpoint_of_the_other_setting_is_refused_in_one_line(cas,
                                                                  written):
  """Restoring is refused, naming the field, and the checkpoint is kept (not
  moved aside as damaged)."""
  other = cas['off' if written == 'on' else 'on']
  ckpt = checkpointing.Checkpointer(
      checkpointing.checkpoint_dir(cas[written]['workdir'], 'cas'))
  try:
    with pytest.raises(UserInputError, match='config.train.ema_decay') as e:
      ckpt.restore_latest_good(other['method'].abstract_state(other['mesh']))
    assert ckpt.all_steps() == [1]
  finally:
    ckpt.close()
  assert '\n' not in str(e.value)


def test_the_saved_config_refuses_switching_the_average(tmp_path):
  saved.write(_config(0.999), str(tmp_path))
  saved.check_matches(_config(0.9), str(tmp_path))  # Another decay: fine.
  with pytest.raises(UserInputError, match='config.train.ema_decay: 0.0, '
                     'but .* was trained with 0.999') as e:
    saved.check_matches(_config(0.0), str(tmp_path))
  assert '\n' not in str(e.value)
  saved.write(_config(0.0), str(tmp_path))
  with pytest.raises(UserInputError, match='config.train.ema_decay'):
    saved.check_matches(_config(0.9), str(tmp_path))


@pytest.mark.parametrize('value', [-0.1, 1.0, True, 'high'])
def test_a_bad_decay_is_named(value):
  config = ml_collections.ConfigDict(_config(0.0).to_dict(), type_safe=False)
  config.train.ema_decay = value
  found = [p for p in schema.problems(config, schema.PREDICT)
           if p.startswith('config.train.ema_decay')]
  assert len(found) == 1, schema.problems(config, schema.PREDICT)
