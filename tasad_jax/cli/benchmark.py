"""`tasad-benchmark` (`benchmark.py`): a sweep's cells, each the ordinary
train + evaluate, and one table of them all.

  tasad-benchmark --sweep=configs/sweeps/mvtec_methods.py --root=runs/mvtec \
      --sweep.overrides.data.root=/data/mvtec [--shard=i/N]
  tasad-benchmark --sweep=... --root=runs/mvtec --summarize

Rerunning skips finished cells and resumes interrupted ones. Without
--shard, a SLURM array task or Kubernetes indexed Job takes its share from
the scheduler's variables (README, Benchmarks).
"""

import os

from absl import flags

from tasad_jax.cli import app

FLAGS = flags.FLAGS


def define_flags() -> None:
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('sweep', None, 'Sweep file (configs/sweeps/'
                                  '<name>.py) or an installed sweep name.',
                                  lock_config=True)
  flags.DEFINE_string('root', None, 'Folder of the cells and the table.')
  flags.DEFINE_string('shard', '', 'i/N: run every N-th cell from the i-th; '
                      'default: the SLURM array or Kubernetes job index, else '
                      'all cells.')
  flags.DEFINE_integer('devices_per_cell', 0, 'Run cells side by side, each '
                       'on its own K local devices (0: one cell at a time on '
                       'all of them).')
  flags.DEFINE_bool('summarize', False, 'Only write results.md/.csv/.html '
                    'from the cells finished so far.')
  flags.DEFINE_bool('dry_run', False, "List this shard's cells and their "
                    'flags, then exit.')
  flags.mark_flags_as_required(['sweep', 'root'])


def main(argv):
  del argv  # Checked by cli_main.
  import jax  # pylint: disable=g-import-not-at-top
  # The cells use the accelerators; this process only checks configs.
  jax.config.update('jax_platforms', 'cpu')
  from tasad_jax.benchmark import benchmark  # pylint: disable=g-import-not-at-top
  title = os.path.basename(
      FLAGS['sweep'].config_filename.partition(':')[0]).removesuffix('.py')
  benchmark.run(FLAGS.sweep, FLAGS.root, title=f'benchmark {title}',
                shard=FLAGS.shard, devices_per_cell=FLAGS.devices_per_cell,
                summarize_only=FLAGS.summarize, dry_run=FLAGS.dry_run)


def run(argv=None) -> None:
  app.run(main, define_flags, argv=argv)


if __name__ == '__main__':
  run()
