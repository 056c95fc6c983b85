"""Exports a trained model for serving.

  python export.py --workdir=runs/bottle --output=bottle.stablehlo
  python export.py --workdir=runs/bottle --output=bottle_savedmodel --format=saved_model

`stablehlo` (default) serialises the two-stage program with `jax.export`, batch
dimension symbolic; `saved_model` writes a TensorFlow SavedModel via jax2tf.
A model trained with `config.data.resize` 'pad' or 'tile' is exported for one
image size, `--height` and `--width`, with its padding or tiling inside.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from tasad_jax.runtime import errors
from tasad_jax.deploy import export as exporting
from tasad_jax.inference import predictor
from tasad_jax.core import tiling

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Training workdir (checkpoints, config).')
flags.DEFINE_integer('restore_step', 0, 'Checkpoint step of each stage to use '
                     '(0 = the latest).')
flags.DEFINE_string('output', None, 'File (stablehlo) or folder (saved_model).')
flags.DEFINE_enum('format', 'stablehlo', ['stablehlo', 'saved_model'],
                  'Serialisation format.')
flags.DEFINE_integer('height', 0, "Image height to serve ('pad' and 'tile' "
                     'models; squash models take the training size).')
flags.DEFINE_integer('width', 0, 'Image width to serve (as --height).')
flags.mark_flags_as_required(['workdir', 'output'])


@errors.cli_main
def main(argv):
  del argv  # Checked by cli_main.
  config = predictor.load_config(FLAGS.workdir, FLAGS.restore_step)
  height, width = exporting.image_shape(tiling.Geometry.from_config(config),
                                        FLAGS.height, FLAGS.width)
  model = predictor.Predictor(config, FLAGS.workdir)
  if FLAGS.format == 'stablehlo':
    exporting.export_stablehlo(model, FLAGS.output, height, width)
  else:
    exporting.export_saved_model(model, FLAGS.output, height, width)
  print(f'Wrote {FLAGS.output} ({FLAGS.format}, images [batch, {height}, '
        f'{width}, 3] float32 in [0, 1])')


if __name__ == '__main__':
  app.run(main, flags_parser=errors.parse_flags)
