"""Evaluates trained CAS and FAS checkpoints on a category's test split.

  python evaluate.py --config=configs/demo.py --workdir=workdirs/demo
  python evaluate.py --config=configs/default.py --workdir=runs \
      --config.data.root=/data/mvtec --config.data.category=all

With several categories (the flag repeated, a comma list, or `all`), each one
is read from `<workdir>/<category>` and a mean row is added.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

from tasad_jax.data import categories
from tasad_jax.runtime import launcher
from tasad_jax.runtime import errors
from tasad_jax.evaluation import evaluate as evaluate_lib
from tasad_jax.data import layouts

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Training workdir holding checkpoints/.')
config_flags.DEFINE_config_file('config', None, 'Configuration file.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


@errors.cli_main
def main(argv):
  del argv  # Checked by cli_main.
  named = layouts.expand_categories(
      FLAGS.config,
      categories.categories_from_argv(sys.argv, FLAGS.config.data.category))
  evaluate_lib.evaluate(FLAGS.config, FLAGS.workdir, named)


if __name__ == '__main__':
  app.run(launcher.launcher_main(main, lambda: FLAGS.config),
          flags_parser=errors.parse_flags)
