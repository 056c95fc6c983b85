"""`tasad-train` (`train.py`): trains the coarse and fine stages from a config.

  tasad-train --config=demo --workdir=workdirs/demo \
      [--config.data.category=brick ...] [--inspect_data]
"""

from absl import flags

from tasad_jax.cli import app

FLAGS = flags.FLAGS


def define_flags() -> None:
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints and logs.')
  flags.DEFINE_bool('inspect_data', False,
                    'Build the data of both stages, print a batch summary and '
                    'a preview PNG in the workdir, then exit.')
  config_flags.DEFINE_config_file('config', None, 'Training configuration '
                                  'file, or an installed config name.',
                                  lock_config=True)
  flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv  # Checked by cli_main.
  if FLAGS.inspect_data:
    from tasad_jax.data import inspect  # pylint: disable=g-import-not-at-top
    inspect.inspect_data(FLAGS.config, FLAGS.workdir)
    return
  from tasad_jax.training import trainer  # pylint: disable=g-import-not-at-top
  trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run(argv=None) -> None:
  app.run(main, define_flags, launch=True, argv=argv)


if __name__ == '__main__':
  run()
