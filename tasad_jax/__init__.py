"""tasad_jax: two-stage coarse-to-fine anomaly segmentation and detection.

TASAD (Shah, Urmonov, Kim, Image and Vision Computing 139, 2023) in JAX/Flax.
Modules that touch TensorFlow (`input_pipeline`, `anomalies`,
`datasets.tfds_mvtec`) are imported only where the input pipeline runs.
"""

__version__ = '0.1.0'
