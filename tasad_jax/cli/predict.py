"""`tasad-predict` (`predict.py`): scores image files with a trained model.

  tasad-predict --workdir=runs/bottle --input='photos/*.png' --output=out
  tasad-predict --model=bottle.onnx --input='photos/*.png' --output=out

`--model` scores with a file of `export.py --format=onnx` or `tflite`, run
by ONNX Runtime or LiteRT alone (no JAX): what a line that deploys the file
computes.

Writes out/scores.csv (path, score, decision, error), out/masks/*.png,
out/heatmaps/*.png and out/index.html (the images by score, heat maps
inline). Unreadable files become error rows; the run goes on.
"""

import os

from absl import flags

from tasad_jax.cli import app

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Training workdir (checkpoints, config).')
  flags.DEFINE_string('model', None, 'An exported .onnx or .tflite file to '
                      'score with instead of --workdir (no JAX).')
  flags.DEFINE_integer('restore_step', 0, 'Checkpoint step of each stage to '
                       'use (0 = the latest).')
  flags.DEFINE_string('input', None, 'An image file, a folder, or a glob.')
  flags.DEFINE_string('output', None, 'Folder for scores.csv, masks, heat maps.')
  flags.DEFINE_integer('batch_size', 16, 'Images per batch.', lower_bound=1)
  flags.mark_flags_as_required(['input', 'output'])


def main(argv):
  del argv  # Checked by cli_main.
  from tasad_jax.inference import batch_predict  # pylint: disable=g-import-not-at-top
  from tasad_jax.runtime.errors import UserInputError  # pylint: disable=g-import-not-at-top
  if bool(FLAGS.workdir) == bool(FLAGS.model):
    raise UserInputError('give one of --workdir (a trained workdir) and '
                         '--model (a .onnx or .tflite file of export.py)')
  counts = batch_predict.predict_files(
      FLAGS.workdir or '', FLAGS.input, FLAGS.output, FLAGS.batch_size,
      restore_step=FLAGS.restore_step,
      loader=_file_loader(FLAGS.model) if FLAGS.model else None)
  results = os.path.join(FLAGS.output, batch_predict.RESULTS)
  if not counts['scored']:
    raise UserInputError(f'{FLAGS.input}: no image could be scored '
                         f'({counts["failed"]} unreadable; see {results})')
  print(f'{counts["scored"]} images scored, {counts["failed"]} unreadable; '
        f'{results}')


def _file_loader(path: str):
  """The runner of an exported file (its runtime alone, no JAX)."""
  def load():
    from tasad_jax.deploy import exported_model  # pylint: disable=g-import-not-at-top
    return exported_model.ExportedModel(path)
  return load


def run(argv=None) -> None:
  app.run(main, define_flags, argv=argv)


if __name__ == '__main__':
  run()
