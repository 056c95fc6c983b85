"""Serialising the whole two-stage program for serving.

* StableHLO through `jax.export`, with a symbolic batch dimension; reload with
  `jax.export.deserialize(data).call(images)`.
* A TensorFlow SavedModel through `jax2tf` for TF Serving users (signature
  `serving_default`: float32 images [batch, H, W, 3] in [0, 1]).
* TFLite (LiteRT) through jax2tf and TensorFlow's converter, built-in ops
  only, with a fixed batch (`export_tflite`).
* ONNX through `jax2onnx` (ONNX Runtime, OpenVINO, TensorRT): opset
  `ONNX_OPSET`, batch dimension symbolic, the input contract and the
  thresholds in the model's metadata (`model_metadata`).

All return the anomaly maps [batch, H, W] and the image scores [batch] of
coarse+FAS (or the coarse stage alone when no FAS checkpoint exists), with
the trained parameters baked in as constants. A 'squash' model takes images
at the training size S x S; 'pad' and 'tile' models are exported for one
image size H x W (`export.py --height --width`). The program is the one
whole-image path's (`tasad_jax.inference.programs.program`), so its maps
and scores are those of `predict.py` and evaluation.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from tasad_jax.core import tiling
from tasad_jax.deploy import exported_model
from tasad_jax.inference import predictor, programs
from tasad_jax.runtime import fileio
from tasad_jax.runtime.errors import UserInputError


def image_shape(geometry: tiling.Geometry, height: int = 0, width: int = 0
                ) -> tuple[int, int]:
  """The (height, width) of the images a model's exported program takes."""
  s = geometry.size
  if geometry.mode == 'squash':
    if (height or width) and (height, width) != (s, s):
      raise UserInputError(f'--height/--width: a squash model takes {s}x{s} '
                           'images; resize them before serving')
    return s, s
  if height < 1 or width < 1:
    raise UserInputError(
        f"--height and --width: a resize='{geometry.mode}' model is "
        'exported for one image size; give the size of the images to serve')
  return height, width


def program(model, height: int = 0, width: int = 0,
            superpixels: str = 'computed') -> Callable:
  """images [B, H, W, 3] -> (maps [B, H, W], scores [B]) with fixed weights
  (`programs.program`, its `superpixels` mode); H x W from `image_shape`."""
  height, width = image_shape(model.geometry, height, width)
  return programs.program(model.runner, model.geometry, height, width,
                          model.config.eval.batch_size, superpixels)


def superpixels_shape(model, height: int, width: int) -> tuple[int, ...]:
  """The shape, less the batch, of the superpixels input of a program
  exported with `superpixels_input` (int32 indices, `slic.assign`'s); it
  traces the whole program, so an export asks once."""
  run = program(model, height, width, 'output')
  images = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
  return jax.eval_shape(run, images)[2].shape[1:]


def export_stablehlo(model, path: str, height: int = 0, width: int = 0) -> None:
  """Writes the serialized `jax.export.Exported` of the program to `path`."""
  h, w = image_shape(model.geometry, height, width)
  shape = jax.export.symbolic_shape(f'b, {h}, {w}, 3')
  exported = jax.export.export(jax.jit(program(model, h, w)))(
      jax.ShapeDtypeStruct(shape, jnp.float32))
  fileio.write_bytes(path, exported.serialize())


def _serving_module(model, height: int, width: int, batch: int | None,
                    superpixels: tuple[int, ...] | None = None):
  """tf.Module whose tf.function `serve` is jax2tf's program as the
  signature `images` (and `superpixels` of this shape, less the batch, when
  given) -> {`anomaly_maps`, `scores`}, batch `None` symbolic."""
  from tasad_jax.runtime.tf_host import tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  specs = [tf.TensorSpec([batch, height, width, 3], tf.float32, name='images')]
  if superpixels:
    specs.append(tf.TensorSpec([batch, *superpixels], tf.int32,
                               name='superpixels'))
  converted = jax2tf.convert(
      program(model, height, width, 'input' if superpixels else 'computed'),
      polymorphic_shapes=None if batch is not None else
      [f'(b, {", ".join(map(str, s.shape[1:]))})' for s in specs])
  module = tf.Module()
  module.serve = tf.function(
      lambda *inputs: dict(zip(('anomaly_maps', 'scores'), converted(*inputs))),
      input_signature=specs, autograph=False)
  return module


def _save_module(module, folder: str) -> None:
  from tasad_jax.runtime.tf_host import tf  # pylint: disable=g-import-not-at-top
  tf.saved_model.save(module, folder,
                      signatures={'serving_default': module.serve})


def export_saved_model(model, path: str, height: int = 0, width: int = 0
                       ) -> None:
  """Writes a TensorFlow SavedModel of the program to the folder `path`."""
  h, w = image_shape(model.geometry, height, width)
  module = _serving_module(model, h, w, None)
  fileio.atomic_dir(path, lambda tmp: _save_module(module, tmp))


ONNX_OPSET = 21  # ONNX Runtime >= 1.18, OpenVINO >= 2024.2.


def model_metadata(model, height: int, width: int, batch: str = 'batch',
                   superpixels: tuple[int, ...] | None = None
                   ) -> dict[str, str]:
  """The exported model's contract, stored in an ONNX or TFLite model's
  metadata: what the inputs are, what the outputs are, and the decision
  thresholds (`superpixels`: the shape, less the batch, of a parity
  export's second input)."""
  p = exported_model.PREFIX
  meta = {
      p + 'input': (f'images: float32 [{batch}, {height}, {width}, 3], '
                    'RGB in [0, 1] (grey images repeated to 3 channels)'),
      p + 'outputs': (f'anomaly_maps: float32 [{batch}, {height}, {width}]; '
                      f'scores: float32 [{batch}]'),
      p + 'output': model.method,
      p + 'resize': model.geometry.mode,
      p + 'coarse_method': str(model.config.coarse.name),
  }
  if superpixels:
    shape = ', '.join(map(str, superpixels))
    meta[p + 'superpixels_input'] = (
        f'superpixels: int32 [{batch}, {shape}], the SLIC assignment of '
        "another runtime's program (`programs.SUPERPIXELS`), for parity "
        'checks')
  for kind in ('image', 'pixel'):
    if kind in model.thresholds:
      meta[f'{p}{kind}_threshold'] = repr(float(model.thresholds[kind]))
  return meta


def export_onnx(model, path: str, height: int = 0, width: int = 0,
                superpixels_input: bool = False) -> None:
  """Writes the program as an ONNX model (`jax2onnx`) to `path`; with
  `superpixels_input`, the one that takes the superpixels as a second input
  `superpixels` (parity checks: `programs.SUPERPIXELS`)."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  import logging  # pylint: disable=g-import-not-at-top
  # jax2onnx logs the plugins it skips (for libraries or jax versions not
  # used here), onnx_ir every untyped shape, and the plugins print.
  for name in ('jax2onnx', 'onnx_ir'):
    logging.getLogger(name).setLevel(logging.ERROR)
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserInputError("--format=onnx needs jax2onnx and onnx: pip install "
                         "'tasad_jax[deploy]'") from None
  h, w = image_shape(model.geometry, height, width)
  superpixels = superpixels_shape(model, h, w) if superpixels_input else None
  b, = jax.export.symbolic_shape('batch')
  specs = [jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32)]
  if superpixels:
    specs.append(jax.ShapeDtypeStruct((b, *superpixels), jnp.int32))
  root = logging.getLogger()
  level = root.level
  root.setLevel(max(level, logging.WARNING))  # It logs its arguments at INFO.
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      proto = jax2onnx.to_onnx(
          program(model, h, w, 'input' if superpixels_input else 'computed'),
          specs, model_name='tasad_jax', opset=ONNX_OPSET,
          input_names=['images', 'superpixels'][:len(specs)],
          output_names=['anomaly_maps', 'scores'])
  finally:
    root.setLevel(level)
  for key, value in model_metadata(model, h, w,
                                   superpixels=superpixels).items():
    proto.metadata_props.add(key=key, value=value)
  fileio.write_bytes(path, proto.SerializeToString())


def export_tflite(model, path: str, height: int = 0, width: int = 0,
                  batch: int = 1, superpixels_input: bool = False) -> None:
  """Writes the program as a TFLite model with a fixed `batch` to `path`:
  jax2tf's StableHLO lowered to TFLite built-in ops by TensorFlow's
  converter (no TF ops, no XLA call), signature `serving_default` with input
  `images` and outputs `anomaly_maps` and `scores`; the contract as JSON in
  the model's metadata entry `exported_model.TFLITE_METADATA`
  (`superpixels_input`: as `export_onnx`)."""
  import json  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  from tasad_jax.runtime.tf_host import tf  # pylint: disable=g-import-not-at-top
  from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=g-import-not-at-top
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  if batch < 1:
    raise UserInputError(f'--batch: {batch} must be >= 1 (a TFLite model '
                         'has a fixed batch)')
  h, w = image_shape(model.geometry, height, width)
  superpixels = superpixels_shape(model, h, w) if superpixels_input else None
  with tempfile.TemporaryDirectory() as folder:  # Its signature comes along.
    _save_module(_serving_module(model, h, w, batch, superpixels), folder)
    converter = tf.lite.TFLiteConverter.from_saved_model(folder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flat = flatbuffer_utils.convert_bytearray_to_object(
        bytearray(converter.convert()))
  entry = schema.BufferT()
  entry.data = list(json.dumps(model_metadata(
      model, h, w, str(batch), superpixels)).encode())
  flat.buffers.append(entry)
  meta = schema.MetadataT()
  meta.name, meta.buffer = exported_model.TFLITE_METADATA, len(flat.buffers) - 1
  flat.metadata = list(flat.metadata or []) + [meta]
  fileio.write_bytes(path, bytes(
      flatbuffer_utils.convert_object_to_bytearray(flat)))


FORMATS = {'stablehlo': export_stablehlo, 'saved_model': export_saved_model,
           'onnx': export_onnx, 'tflite': export_tflite}


def export(workdir: str, output: str, format_: str = 'stablehlo',
           height: int = 0, width: int = 0, restore_step: int = 0,
           batch: int = 1, superpixels_input: bool = False
           ) -> tuple[int, int]:
  """Exports a workdir's model to `output`; returns the (height, width) of
  the images the program takes (`batch`: TFLite's fixed batch;
  `superpixels_input`: ONNX and TFLite, as `export_onnx`)."""
  if superpixels_input and format_ not in ('onnx', 'tflite'):
    raise UserInputError('--superpixels_input: for --format=onnx or tflite')
  fileio.check_writable(output, folder=format_ == 'saved_model',
                        what='--output')
  config = predictor.load_config(workdir, restore_step)
  height, width = image_shape(tiling.Geometry.from_config(config), height,
                              width)
  write = FORMATS[format_]
  if format_ == 'tflite':
    write = functools.partial(write, batch=batch)
  if superpixels_input:
    write = functools.partial(write, superpixels_input=True)
  write(predictor.Predictor(config, workdir), output, height, width)
  return height, width

