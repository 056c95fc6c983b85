"""Serialising the whole two-stage program for serving.

* StableHLO through `jax.export`, with a symbolic batch dimension; reload with
  `jax.export.deserialize(data).call(images)`.
* A TensorFlow SavedModel through `jax2tf` for TF Serving users (signature
  `serving_default`: float32 images [batch, H, W, 3] in [0, 1]).

Both return the anomaly maps [batch, H, W] and the image scores [batch] of
coarse+FAS (or the coarse stage alone when no FAS checkpoint exists), with
the trained parameters baked in as constants. A 'squash' model takes images
at the training size S x S. 'pad' and 'tile' models are exported for one
image size H x W (`export.py --height --width`), with the whole-image
geometry static inside the program (`tasad_jax.core.tiling`): the images are
resized to their working size (`jax.image.resize`, antialiased linear: close
to, not bit-equal with, the predictor's PIL resize; no resize when the working
size is H x W, as for 'tile' at scale 1), put on their canvas with edge
padding, cut into the plan's tiles, run in chunks of `config.eval.batch_size`
tiles per image (`lax.map`, so memory holds one chunk), blended with the
same window as `tiled_inference` and cropped; the image score is taken on the
stitched map as there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tasad_jax.runtime import fileio
from tasad_jax.fine import fas as fine
from tasad_jax.inference import two_stage as inference
from tasad_jax.core import tiling
from tasad_jax.runtime.errors import UserInputError


def _square_program(runner) -> callable:
  """images [B, S, S, 3] -> (maps [B, S, S], scores [B]) with fixed weights.

  The FAS input is always made on device here (the host path cannot be
  serialised); with the same superpixels it equals the host one.
  """
  if runner.fas is None:
    def run(images):
      out = inference.coarse_only(runner.coarse, runner.cas, images)
      return out['cas_map'][..., 0], out['cas_score']
  else:
    fine_input = fine.FineInput(runner.coarse, runner.refine_params, True)

    def run(images):
      out = inference.two_stage(runner.fine, fine_input, runner.cas, runner.fas,
                                images)
      return out['tasad_map'][..., 0], out['tasad_score']
  return run


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


def _whole_image_program(square, runner, geometry: tiling.Geometry,
                         height: int, width: int, chunk: int) -> callable:
  """images [B, H, W, 3] -> (maps [B, H, W], scores [B]), 'pad' or 'tile'."""
  wh, ww = geometry.working_size(height, width)
  plan = geometry.plan(wh, ww)
  s, count = plan.size, len(plan.tiles)
  chunk = max(1, min(chunk, count))
  n = -(-count // chunk)
  window = jnp.asarray(tiling.window(s, geometry.blend))
  norm = jnp.asarray(tiling.weights(plan, geometry.blend))
  coarse = runner.coarse

  def run(images):
    b = images.shape[0]
    if (wh, ww) != (height, width):
      images = jax.image.resize(images, (b, wh, ww, 3), 'linear', antialias=True)
    board = jnp.pad(images, ((0, 0), (plan.top, plan.canvas[0] - wh - plan.top),
                             (plan.left, plan.canvas[1] - ww - plan.left),
                             (0, 0)), mode='edge')
    tiles = jnp.stack([board[:, y:y + s, x:x + s] for y, x in plan.tiles], 1)
    tiles = jnp.pad(tiles, ((0, 0), (0, n * chunk - count)) + ((0, 0),) * 3)
    chunks = jnp.swapaxes(tiles.reshape(b, n, chunk, s, s, 3), 0, 1)
    maps, scores = jax.lax.map(
        lambda x: square(x.reshape(b * chunk, s, s, 3)), chunks)
    maps = jnp.swapaxes(maps.reshape(n, b, chunk, s, s), 0, 1).reshape(
        b, n * chunk, s, s)
    scores = jnp.swapaxes(scores.reshape(n, b, chunk), 0, 1).reshape(
        b, n * chunk)[:, :count]
    total = jnp.zeros((b,) + plan.canvas, jnp.float32)
    for t, (y, x) in enumerate(plan.tiles):
      total = total.at[:, y:y + s, x:x + s].add(maps[:, t] * window)
    whole = (total / norm)[:, plan.top:plan.top + wh, plan.left:plan.left + ww]
    score = (coarse.image_score(whole[..., None], {})
             if coarse.scores_from_map() else scores.max(axis=1))
    if (wh, ww) != (height, width):
      whole = jax.image.resize(whole, (b, height, width), 'linear',
                               antialias=True)
    return whole, score
  return run


def program(model, height: int = 0, width: int = 0) -> callable:
  """images [B, H, W, 3] -> (maps [B, H, W], scores [B]) with fixed weights;
  H x W from `image_shape`."""
  runner = model.runner
  square = _square_program(runner)
  if model.geometry.mode == 'squash':
    return square
  height, width = image_shape(model.geometry, height, width)
  return _whole_image_program(square, runner, model.geometry, height, width,
                              model.config.eval.batch_size)


def export_stablehlo(model, path: str, height: int = 0, width: int = 0) -> None:
  """Writes the serialized `jax.export.Exported` of the program to `path`."""
  h, w = image_shape(model.geometry, height, width)
  shape = jax.export.symbolic_shape(f'b, {h}, {w}, 3')
  exported = jax.export.export(jax.jit(program(model, h, w)))(
      jax.ShapeDtypeStruct(shape, jnp.float32))
  fileio.write_bytes(path, exported.serialize())


def export_saved_model(model, path: str, height: int = 0, width: int = 0
                       ) -> None:
  """Writes a TensorFlow SavedModel of the program to the folder `path`."""
  from tasad_jax.runtime.tf_host import tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  h, w = image_shape(model.geometry, height, width)
  converted = jax2tf.convert(program(model, h, w),
                             polymorphic_shapes=[f'(b, {h}, {w}, 3)'])
  module = tf.Module()
  module.serve = tf.function(
      lambda images: dict(zip(('anomaly_maps', 'scores'), converted(images))),
      input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32,
                                     name='images')], autograph=False)
  fileio.atomic_dir(path, lambda tmp: tf.saved_model.save(
      module, tmp, signatures={'serving_default': module.serve}))
