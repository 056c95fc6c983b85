"""Trains TASAD's coarse and fine stages from a config file.

  python train.py --config=configs/demo.py --workdir=workdirs/demo \
      [--config.data.category=brick ...] [--inspect_data]
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

from tasad_jax.runtime import launcher
from tasad_jax.runtime import errors
from tasad_jax.training import trainer as train_lib

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and logs.')
flags.DEFINE_bool('inspect_data', False,
                  'Build the data of both stages, print a batch summary and a '
                  'preview PNG in the workdir, then exit.')
config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


@errors.cli_main
def main(argv):
  del argv  # Checked by cli_main.
  if FLAGS.inspect_data:
    from tasad_jax.data import inspect  # pylint: disable=g-import-not-at-top
    inspect.inspect_data(FLAGS.config, FLAGS.workdir)
    return
  train_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(launcher.launcher_main(main, lambda: FLAGS.config),
          flags_parser=errors.parse_flags)
