"""A new coarse method is one module: a single conv, registered as a plugin,
trains, evaluates, predicts and exports through the usual commands."""

import json
import os

import jax
import numpy as np

from conftest import run_script

TOY = '''
"""A toy coarse method: one 3x3 conv to a logit per pixel, BCE on the mask."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

# The import paths of the flat package before it had layers: plug-ins written
# against them keep working (tasad_jax.MOVED).
from tasad_jax import sharding, stage
from tasad_jax.methods import base, registry
from tasad_jax.train_state import Optimizer, TrainState, all_finite, finish_step


class Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Conv(1, (3, 3))(x)


@registry.register
class Toy(base.CoarseMethod):
  method = 'toy'
  defaults = {'learning_rate': 0.05}  # Adam.

  net = Net()

  def create_state(self, mesh):
    size = self.config.data.image_size
    variables = self.net.init(self.init_key(), jnp.zeros((1, size, size, 3)))
    state = TrainState.create({'net': variables}, [Optimizer(
        'adam', ('net',), optax.adam(self.settings.learning_rate))])
    return jax.device_put(state, sharding.replicated(mesh))

  def phases(self):
    def step(state, batch, rng, context):
      def loss_fn(params):
        logits = self.net.apply({'params': params}, batch['augmented'])
        return optax.sigmoid_binary_cross_entropy(logits, batch['mask']).mean()
      loss, grads = jax.value_and_grad(loss_fn)(state.params['net'])
      finite = all_finite(loss, grads)
      new = state.apply_gradients('adam', {'net': grads})
      return finish_step(state, new, finite), {'loss': loss}, finite
    return [stage.Phase(0, step)]

  def anomaly_map(self, variables, images):
    return jax.nn.sigmoid(self.net.apply(
        {'params': variables['params']['net']}, images))
'''


def _run(script, tmp_path, *args, config=True):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(tmp_path), os.environ.get('PYTHONPATH', '')]))
  return run_script(script, *args, config='tiny.py' if config else None,
                    env=env)


def test_toy_plugin_method_trains_evaluates_and_exports(tmp_path):
  (tmp_path / 'toy_method.py').write_text(TOY)
  workdir = str(tmp_path / 'run')
  flags = ["--config.coarse.plugins=('toy_method',)", '--config.coarse.name=toy',
           f'--workdir={workdir}']
  trained = _run('train.py', tmp_path, *flags, '--config.train.cas_steps=4',
                 '--config.train.fas_steps=2')
  assert trained.returncode == 0, trained.stderr[-2000:]
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['coarse']['toy'] == {'learning_rate': 0.05}
  evaluated = _run('evaluate.py', tmp_path, *flags)
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  assert 'toy+fas' in evaluated.stdout
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    report = json.load(f)
  assert report['coarse'] == 'toy'
  assert 0.0 < report['tasad']['pixel_auroc'] <= 1.0
  out = str(tmp_path / 'toy.stablehlo')
  exported = _run('export.py', tmp_path, f'--workdir={workdir}',
                  f'--output={out}', config=False)
  assert exported.returncode == 0, exported.stderr[-2000:]
  with open(out, 'rb') as f:
    program = jax.export.deserialize(f.read())
  maps, scores = program.call(np.zeros((2, 32, 32, 3), np.float32))
  assert maps.shape == (2, 32, 32) and scores.shape == (2,)
