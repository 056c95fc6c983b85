"""Prints the CAS loss curve of a few tiny train steps as JSON (run as a script).

Used by test_train.py in subprocesses, so that each run starts JAX with its own
device count (XLA_FLAGS=--xla_force_host_platform_device_count=N).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top

from configs import tiny  # pylint: disable=g-import-not-at-top
from tasad_jax import input_pipeline, methods, sharding, stage


def main():
  num = int(sys.argv[1])
  config = tiny.get_config()
  config.train.cas_steps = num
  mesh = sharding.make_mesh()
  data = input_pipeline.load_train_data(config, 'cas')
  method = methods.get(config)
  state = method.create_state(mesh)
  program_at = stage.compile_phases(method, state, mesh)
  stream = input_pipeline.train_dataset(data, config, 'cas',
                                        batch_size=config.train.batch_size)
  losses = []
  with jax.set_mesh(mesh):
    for batch, _ in zip(stream.as_numpy_iterator(), range(num)):
      inputs = {'augmented': batch['augmented'], 'mask': batch['mask']}
      state, m, _ = program_at(int(state.step))(
          state, sharding.to_global(inputs, mesh), None)
      losses.append(float(m['loss']))
  print(json.dumps({'devices': jax.device_count(), 'losses': losses}))


if __name__ == '__main__':
  main()
