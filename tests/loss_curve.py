"""Prints the coarse stage's loss curve of a few tiny train steps as JSON.

Run as a script: `loss_curve.py STEPS [--coarse NAME,NAME...]` (coarse
methods, default tasad_cas); prints {'devices', 'curves': {method: {'losses',
'metrics': {name: curve}}}}, all methods from one process (one JAX start).

Used by test_train.py: in its own process for one device, and in a
subprocess for more, so that JAX starts with that device count
(XLA_FLAGS=--xla_force_host_platform_device_count=N).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top

from method_settings import small_config  # pylint: disable=g-import-not-at-top
from tasad_jax.data import pipeline
from tasad_jax import methods
from tasad_jax.core import sharding, stage


def _curve(config, data, mesh, num):
  """Losses and metric curves of `num` steps of config's coarse method."""
  method = methods.get(config)
  state = method.create_state(mesh)
  program_at = stage.compile_phases(method, state, mesh)
  stream = pipeline.train_dataset(data, config, 'cas',
                                        batch_size=config.train.batch_size)
  losses, curves = [], {}
  with jax.set_mesh(mesh):
    for batch, _ in zip(stream.as_numpy_iterator(), range(num)):
      inputs = {k: batch[k] for k in method.batch_keys()}
      state, m, _ = program_at(int(state.step))(
          state, sharding.to_global(inputs, mesh), None)
      losses.append(float(m['loss']))
      for k, v in m.items():
        curves.setdefault(k, []).append(float(v))
  return {'losses': losses, 'metrics': curves}


def curves(steps: int, coarse: list[str]) -> dict:
  """{'devices', 'curves': {method: {'losses', 'metrics'}}} on this process's
  devices."""
  mesh = sharding.make_mesh()
  data = pipeline.load_train_data(small_config('tasad_cas'), 'cas')
  out = {}
  for name in coarse:  # Each at its test size, on the tiny config's images.
    config = small_config(name)
    config.train.cas_steps = steps
    out[name] = _curve(config, data, mesh, steps)
  return {'devices': jax.device_count(), 'curves': out}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('steps', type=int)
  parser.add_argument('--coarse', default='tasad_cas')
  args = parser.parse_args()
  print(json.dumps(curves(args.steps, args.coarse.split(','))))


if __name__ == '__main__':
  main()
