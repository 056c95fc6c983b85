"""Serialising the whole two-stage program for serving.

* StableHLO through `jax.export`, with a symbolic batch dimension; reload with
  `jax.export.deserialize(data).call(images)`.
* A TensorFlow SavedModel through `jax2tf` for TF Serving users (signature
  `serving_default`: float32 images [batch, S, S, 3] in [0, 1]).

Both take images at the training size and return the anomaly maps
[batch, S, S] and the image scores [batch] of coarse+FAS (or the coarse stage
alone when no FAS checkpoint exists). The trained parameters are baked in as
constants.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tasad_jax import fileio, fine, inference


def program(model) -> callable:
  """images [B, S, S, 3] -> (maps [B, S, S], scores [B]) with fixed weights.

  The FAS input is always made on device here (the host path cannot be
  serialised); with the same superpixels it equals the host one.
  """
  runner = model.runner
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


def export_stablehlo(model, path: str) -> None:
  """Writes the serialized `jax.export.Exported` of the program to `path`."""
  size = model.image_size
  shape = jax.export.symbolic_shape(f'b, {size}, {size}, 3')
  exported = jax.export.export(jax.jit(program(model)))(
      jax.ShapeDtypeStruct(shape, jnp.float32))
  fileio.write_bytes(path, exported.serialize())


def export_saved_model(model, path: str) -> None:
  """Writes a TensorFlow SavedModel of the program to the folder `path`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  size = model.image_size
  converted = jax2tf.convert(program(model),
                             polymorphic_shapes=[f'(b, {size}, {size}, 3)'])
  module = tf.Module()
  module.serve = tf.function(
      lambda images: dict(zip(('anomaly_maps', 'scores'), converted(images))),
      input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                     name='images')], autograph=False)
  fileio.atomic_dir(path, lambda tmp: tf.saved_model.save(
      module, tmp, signatures={'serving_default': module.serve}))
