"""TensorFlow and clu's TensorBoard writers, host only, imported where used.

TensorFlow builds the input pipeline, and writes TensorBoard logs (through
clu) and SavedModels; the accelerators belong to JAX. Modules take `tf` and
`metric_writers` from here, so that TensorFlow never claims a GPU's memory, and
entry points that end before needing them (a bad flag, a refused workdir, a
launcher of processes) never pay TensorFlow's import (seconds per process).
"""

import tensorflow as tf

try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TensorFlow had already initialised its devices.
  pass

from clu import metric_writers  # pylint: disable=g-import-not-at-top,wrong-import-position

__all__ = ['tf', 'metric_writers']
