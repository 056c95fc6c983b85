"""Writes a validation split carved from a category's normal training images.

  python validation_split.py --config=configs/magnetic_tile.py --output=val \
      --config.data.root=../shared/data
  python evaluate.py --config=configs/magnetic_tile.py --workdir=runs/mt \
      --config.data.root=val --config.eval.folder=eval_validation

The normal images training holds out for its thresholds, each also with a
synthetic pore, crack or blotch and its exact mask, in MVTec layout at native
size (tasad_jax/validation.py): choose settings on this, not on the test split.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

from tasad_jax.runtime import errors
from tasad_jax.data import synthetic_validation as validation

FLAGS = flags.FLAGS
flags.DEFINE_string('output', None, 'Root folder of the validation split '
                    '(<output>/<category>/...).')
flags.DEFINE_string('source', '', 'Textures of the blotches, as '
                    'config.anomaly.source (default: that field).')
config_flags.DEFINE_config_file('config', None, 'Configuration file.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'output'])


@errors.cli_main
def main(argv):
  del argv  # Checked by cli_main.
  counts = validation.write_split(FLAGS.config, FLAGS.output, FLAGS.source)
  print(f'{os.path.join(FLAGS.output, FLAGS.config.data.category)}: ' +
        ', '.join(f'{n} {k}' for k, n in counts.items()))


if __name__ == '__main__':
  app.run(main, flags_parser=errors.parse_flags)
