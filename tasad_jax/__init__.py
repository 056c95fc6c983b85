"""tasad_jax: two-stage coarse-to-fine anomaly segmentation and detection.

TASAD (Shah, Urmonov, Kim, Image and Vision Computing 139, 2023) in JAX/Flax.
Modules that touch TensorFlow (`input_pipeline`, `anomalies`,
`datasets.tfds_mvtec`) are imported only where the input pipeline runs.

    predictor = tasad_jax.load('runs/bottle')
    result = predictor.predict(images)  # maps, scores, decisions
"""

__version__ = '0.1.0'


def load(workdir: str, restore_step: int = 0):
  """The trained model of a workdir, ready to predict (see `predictor`)."""
  from tasad_jax.inference import predictor  # pylint: disable=g-import-not-at-top
  return predictor.load(workdir, restore_step)
