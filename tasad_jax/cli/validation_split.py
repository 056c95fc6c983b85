"""`tasad-validation-split` (`validation_split.py`): writes a validation split
carved from a category's normal training images.

  tasad-validation-split --config=magnetic_tile --output=val \
      --config.data.root=../shared/data
  tasad-evaluate --config=magnetic_tile --workdir=runs/mt \
      --config.data.root=val --config.eval.folder=eval_validation

The normal images training holds out for its thresholds, each also with a
synthetic pore, crack, blotch or shade (`--kinds`) and its exact mask, in
MVTec layout at native size (`tasad_jax.data.synthetic_validation`): choose
settings on this, not on the test split.
"""

import os

from absl import flags

from tasad_jax.cli import app

FLAGS = flags.FLAGS


def define_flags() -> None:
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('output', None, 'Root folder of the validation split '
                      '(<output>/<category>/...).')
  flags.DEFINE_string('source', '', 'Textures of the blotches, as '
                      'config.anomaly.source (default: that field).')
  flags.DEFINE_list('kinds', ['pore', 'crack', 'blotch', 'shade'],
                    'Synthetic defects, in turn over the images (the split '
                    'of pore,crack,blotch is the one written before shade).')
  config_flags.DEFINE_config_file('config', None, 'Configuration file, or an '
                                  'installed config name.', lock_config=True)
  flags.mark_flags_as_required(['config', 'output'])


def main(argv):
  del argv  # Checked by cli_main.
  from tasad_jax.data import synthetic_validation  # pylint: disable=g-import-not-at-top
  counts = synthetic_validation.write_split(FLAGS.config, FLAGS.output,
                                            FLAGS.source, FLAGS.kinds)
  print(f'{os.path.join(FLAGS.output, FLAGS.config.data.category)}: ' +
        ', '.join(f'{n} {k}' for k, n in counts.items()))


def run(argv=None) -> None:
  app.run(main, define_flags, argv=argv)


if __name__ == '__main__':
  run()
