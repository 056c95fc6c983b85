"""An exported model file scored by its runtime alone, without JAX: what an
inspection line that deploys the file runs, with the predictor's interface
(`predict.py --model`).

`.onnx` files (`export.py --format=onnx`) run in ONNX Runtime, `.tflite`
files (`--format=tflite`) in LiteRT (`ai_edge_litert`). The file's input is
fixed at H x W (a squash model's S x S): each image is resized to it with
the predictor's PIL resize and its map resized back, as
`tasad_jax.load(workdir).predict` does for a squash model. The thresholds
are the workdir's, stored in the file's metadata (`export.model_metadata`).
"""

from __future__ import annotations

import json
import os
from typing import Callable, Sequence

import numpy as np

from tasad_jax.data import imageio
from tasad_jax.inference import thresholds
from tasad_jax.runtime.errors import UserInputError

PREFIX = 'tasad_jax.'  # Of every metadata key `export.model_metadata` writes.
TFLITE_METADATA = 'tasad_jax'  # The TFLite metadata entry (JSON) that holds them.


def _need(module: str, package: str):
  """Imports `module`, or refuses in one line naming the package."""
  import importlib  # pylint: disable=g-import-not-at-top
  try:
    return importlib.import_module(module)
  except ImportError:
    raise UserInputError(f'--model: this file needs {package}: pip install '
                         f"'tasad_jax[deploy]'") from None


def _onnx(path: str) -> tuple[Callable, tuple, dict]:
  """(run, input shape, metadata) of an ONNX file in ONNX Runtime."""
  ort = _need('onnxruntime', 'onnxruntime')
  options = ort.SessionOptions()
  options.log_severity_level = 3  # Errors only, not shape-merge notes.
  session = ort.InferenceSession(path, options,
                                 providers=['CPUExecutionProvider'])
  inputs = session.get_inputs()
  shape = tuple(inputs[0].shape) if len(inputs) == 1 else ()
  return (lambda x: session.run(None, {'images': x}), shape,
          dict(session.get_modelmeta().custom_metadata_map))


def _tflite(path: str) -> tuple[Callable, tuple, dict]:
  """(run, input shape, metadata) of a TFLite file in LiteRT."""
  interpreter = _need('ai_edge_litert.interpreter', 'ai-edge-litert')
  schema = _need('ai_edge_litert.schema_py_generated', 'ai-edge-litert')
  with open(path, 'rb') as f:
    data = f.read()
  model = schema.Model.GetRootAs(data, 0)
  meta = {}
  for i in range(model.MetadataLength()):
    if model.Metadata(i).Name() == TFLITE_METADATA.encode():
      meta = json.loads(model.Buffers(model.Metadata(i).Buffer())
                        .DataAsNumpy().tobytes())
  runner = interpreter.Interpreter(model_content=data).get_signature_runner()
  shape = tuple(runner.get_input_details()['images']['shape'])

  def run(x):
    out = runner(images=x)
    return out['anomaly_maps'], out['scores']
  return run, shape, meta


class ExportedModel:
  """An exported model file with its thresholds, ready for new images."""

  def __init__(self, path: str):
    if not os.path.isfile(path):
      raise UserInputError(f'{path}: no such file (--model)')
    kind = os.path.splitext(path)[1].lower()
    if kind not in ('.onnx', '.tflite'):
      raise UserInputError(f'{path}: --model takes a .onnx or .tflite file '
                           'of export.py')
    try:
      self._run, shape, meta = (_onnx if kind == '.onnx' else _tflite)(path)
    except UserInputError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise UserInputError(f'{path}: not a model its runtime can load '
                           f'({str(e).splitlines()[0][:200]})') from None
    if PREFIX + 'superpixels_input' in meta:
      raise UserInputError(f'{path}: exported with --superpixels_input, for '
                           'parity checks; export without it to serve')
    if (PREFIX + 'input' not in meta or len(shape) != 4
        or not all(isinstance(d, (int, np.integer)) for d in shape[1:3])):
      raise UserInputError(f'{path}: not a model written by export.py '
                           '(no tasad_jax input contract)')
    self.path = path
    self.height, self.width = int(shape[1]), int(shape[2])
    # A fixed batch (TFLite) is filled up; a symbolic one (ONNX) is not.
    self.batch = int(shape[0]) if isinstance(shape[0], (int, np.integer)) else 0
    self.method = meta.get(PREFIX + 'output', '')
    self.thresholds = {k: float(meta[PREFIX + f'{k}_threshold'])
                       for k in ('image', 'pixel')
                       if PREFIX + f'{k}_threshold' in meta}
    self.warnings = [] if self.thresholds else [
        f'{path}: no thresholds in its metadata (no decisions or masks)']

  def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> dict:
    """Anomaly maps, scores, decisions and masks of images, as
    `tasad_jax.inference.predictor.Predictor.predict`."""
    if isinstance(images, np.ndarray):
      images = list(images) if images.ndim == 4 else [images]
    rgb = [imageio.as_uint8_rgb(image) for image in images]
    sizes = [x.shape[:2] for x in rgb]
    x = np.stack([imageio.resize_image(im, (self.height, self.width))
                  for im in rgb]).astype(np.float32) / 255.0
    step = self.batch or len(x)
    if len(x) % step:
      x = np.concatenate([x, np.zeros((step - len(x) % step,) + x.shape[1:],
                                      x.dtype)])
    outs = [self._run(x[i:i + step]) for i in range(0, len(x), step)]
    maps = np.concatenate([o[0] for o in outs])[:len(rgb)]
    scores = np.concatenate([o[1] for o in outs])[:len(rgb)].astype(np.float32)
    maps = [imageio.resize_map(m, h, w) for m, (h, w) in zip(maps, sizes)]
    return thresholds.decide(maps, scores, self.thresholds)
