"""`tasad-evaluate` (`evaluate.py`): evaluates a workdir's trained stages on
its category's test split.

  tasad-evaluate --config=demo --workdir=workdirs/demo
  tasad-evaluate --config=default --workdir=runs \
      --config.data.root=/data/mvtec --config.data.category=all

With several categories (the flag repeated, a comma list, or `all`), each one
is read from `<workdir>/<category>` and a mean row is added.
"""

import sys

from absl import flags

from tasad_jax.cli import app

FLAGS = flags.FLAGS


def define_flags() -> None:
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'Training workdir holding checkpoints/.')
  config_flags.DEFINE_config_file('config', None, 'Configuration file, or an '
                                  'installed config name.', lock_config=True)
  flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv  # Checked by cli_main.
  from tasad_jax.data import categories, layouts  # pylint: disable=g-import-not-at-top
  from tasad_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  named = layouts.expand_categories(
      FLAGS.config,
      categories.categories_from_argv(sys.argv, FLAGS.config.data.category))
  evaluate.evaluate(FLAGS.config, FLAGS.workdir, named)


def run(argv=None) -> None:
  app.run(main, define_flags, launch=True, argv=argv)


if __name__ == '__main__':
  run()
