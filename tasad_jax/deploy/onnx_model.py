"""An exported ONNX model (`export.py --format=onnx`) scored with ONNX
Runtime alone, without JAX: what an inspection line that deploys the file
runs, with the predictor's interface (`predict.py --model`).

The file's input is fixed at H x W (its metadata and input shape say which;
a squash model's S x S): each image is resized to it with the predictor's
PIL resize and its map resized back, as `tasad_jax.load(workdir).predict`
does for a squash model. The thresholds are the workdir's, stored in the
file's metadata (`export.onnx_metadata`).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from tasad_jax.data import imageio
from tasad_jax.runtime.errors import UserInputError

_PREFIX = 'tasad_jax.'


class OnnxModel:
  """An exported model file with its thresholds, ready for new images."""

  def __init__(self, path: str, num_threads: int = 0):
    if not os.path.isfile(path):
      raise UserInputError(f'{path}: no such file (--model)')
    try:
      import onnxruntime  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise UserInputError("--model: scoring an ONNX file needs onnxruntime: "
                           "pip install 'tasad_jax[onnx]'") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # Errors only, not shape-merge notes.
    options.intra_op_num_threads = num_threads
    try:
      self.session = onnxruntime.InferenceSession(
          path, options, providers=['CPUExecutionProvider'])
    except Exception as e:  # pylint: disable=broad-except
      raise UserInputError(f'{path}: not a model ONNX Runtime can load '
                           f'({str(e).splitlines()[0][:200]})') from None
    meta = self.session.get_modelmeta().custom_metadata_map
    inputs = self.session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else None
    if (_PREFIX + 'input' not in meta or shape is None or len(shape) != 4
        or not all(isinstance(d, int) for d in shape[1:3])):
      raise UserInputError(f'{path}: not a model written by export.py '
                           '--format=onnx (no tasad_jax input contract)')
    self.path = path
    self.height, self.width = int(shape[1]), int(shape[2])
    self.method = meta.get(_PREFIX + 'output', '')
    self.thresholds = {k: float(meta[_PREFIX + f'{k}_threshold'])
                       for k in ('image', 'pixel')
                       if _PREFIX + f'{k}_threshold' in meta}
    self.warnings = [] if self.thresholds else [
        f'{path}: no thresholds in its metadata (no decisions or masks)']
    self._batch = shape[0] if isinstance(shape[0], int) else None

  def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> dict:
    """Anomaly maps, scores, decisions and masks of images, as
    `tasad_jax.inference.predictor.Predictor.predict`."""
    if isinstance(images, np.ndarray):
      images = list(images) if images.ndim == 4 else [images]
    rgb = [imageio.as_uint8_rgb(image) for image in images]
    sizes = [x.shape[:2] for x in rgb]
    size = (self.height, self.width)
    x = np.stack([imageio.resize_image(im, size) for im in rgb]
                 ).astype(np.float32) / 255.0
    step = self._batch or len(x)
    if self._batch and len(x) % step:  # A fixed batch: pad the last one.
      x = np.concatenate([x, np.zeros((step - len(x) % step,) + x.shape[1:],
                                      x.dtype)])
    outs = [self.session.run(None, {'images': x[i:i + step]})
            for i in range(0, len(x), step)]
    maps = np.concatenate([o[0] for o in outs])[:len(rgb)]
    scores = np.concatenate([o[1] for o in outs])[:len(rgb)].astype(np.float32)
    maps = [imageio.resize_map(m, h, w) for m, (h, w) in zip(maps, sizes)]
    pack = np.stack if len(set(sizes)) == 1 else list
    image_t, pixel_t = self.thresholds.get('image'), self.thresholds.get('pixel')
    return {
        'anomaly_maps': pack(maps),
        'scores': scores,
        'decisions': None if image_t is None else scores > image_t,
        'masks': None if pixel_t is None else pack([m > pixel_t for m in maps]),
    }
