"""Evaluates trained CAS and FAS checkpoints on a category's test split.

  python evaluate.py --config=configs/demo.py --workdir=workdirs/demo
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags
import tensorflow as tf

from tasad_jax import errors

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Training workdir holding checkpoints/.')
config_flags.DEFINE_config_file('config', None, 'Configuration file.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


@errors.cli_main
def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  tf.config.set_visible_devices([], 'GPU')
  raise errors.UserInputError(
      'evaluation is not available in this version yet')


if __name__ == '__main__':
  app.run(main)
