"""`tasad-export` (`export.py`): exports a trained model for serving.

  tasad-export --workdir=runs/bottle --output=bottle.stablehlo
  tasad-export --workdir=runs/bottle --output=bottle_savedmodel --format=saved_model

`stablehlo` (default) serialises the two-stage program with `jax.export`, batch
dimension symbolic; `saved_model` writes a TensorFlow SavedModel via jax2tf;
`onnx` an ONNX model via jax2onnx (batch symbolic) and `tflite` a TFLite
model (batch fixed, `--batch`); the metadata of both holds the input contract
and the thresholds. `--superpixels_input` exports, for parity checks, the
program that takes the superpixels as a second input (`superpixels`, int32)
instead of computing them.
A model trained with `config.data.resize` 'pad' or 'tile' is exported for one
image size, `--height` and `--width`, with its padding or tiling inside.
"""

from absl import flags

from tasad_jax.cli import app

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Training workdir (checkpoints, config).')
  flags.DEFINE_integer('restore_step', 0, 'Checkpoint step of each stage to '
                       'use (0 = the latest).')
  flags.DEFINE_string('output', None, 'File (stablehlo, onnx) or folder '
                      '(saved_model).')
  flags.DEFINE_enum('format', 'stablehlo',
                    ['stablehlo', 'saved_model', 'onnx', 'tflite'],
                    'Serialisation format.')
  flags.DEFINE_integer('height', 0, "Image height to serve ('pad' and 'tile' "
                       'models; squash models take the training size).')
  flags.DEFINE_integer('width', 0, 'Image width to serve (as --height).')
  flags.DEFINE_integer('batch', 1, 'Images per call of a tflite model (its '
                       'batch is fixed; onnx and stablehlo take any).')
  flags.DEFINE_bool('superpixels_input', False, 'onnx, tflite: the program '
                    "takes the fine stage's superpixels as a second input "
                    '(parity checks against another runtime).')
  flags.mark_flags_as_required(['workdir', 'output'])


def main(argv):
  del argv  # Checked by cli_main.
  from tasad_jax.deploy import export  # pylint: disable=g-import-not-at-top
  height, width = export.export(FLAGS.workdir, FLAGS.output, FLAGS.format,
                                FLAGS.height, FLAGS.width, FLAGS.restore_step,
                                FLAGS.batch, FLAGS.superpixels_input)
  b = FLAGS.batch if FLAGS.format == 'tflite' else 'batch'
  extra = (' and superpixels int32 (parity checks; shape in its metadata)'
           if FLAGS.superpixels_input else '')
  print(f'Wrote {FLAGS.output} ({FLAGS.format}, images [{b}, {height}, '
        f'{width}, 3] float32 RGB in [0, 1]{extra} -> anomaly_maps [{b}, '
        f'{height}, {width}], scores [{b}])')


def run(argv=None) -> None:
  app.run(main, define_flags, argv=argv)


if __name__ == '__main__':
  run()
