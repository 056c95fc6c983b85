"""tasad_jax: two-stage coarse-to-fine anomaly segmentation and detection.

TASAD (Shah, Urmonov, Kim, Image and Vision Computing 139, 2023) in JAX/Flax.

    predictor = tasad_jax.load('runs/bottle')
    result = predictor.predict(images)  # maps, scores, decisions

The subpackages are the layers, each importing only those above it in this
list: `cli`, `training`, `deploy` and `evaluation`, `inference`, `reporting`,
`config`, `fine`, `methods`, `data`, `models`, `core`, `runtime`
(README, "Layout"). Only `data`'s stream and pseudo-anomalies, the SavedModel
export and the TensorBoard writers import TensorFlow.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = '0.1.0'

# Modules that moved into the layers, by their former paths: plug-in methods
# and scripts written against them keep importing (the same module objects).
MOVED = {
    'tasad_jax.datasets': 'tasad_jax.data',
    'tasad_jax.anomalies': 'tasad_jax.data.pseudo_anomalies',
    'tasad_jax.batch_predict': 'tasad_jax.inference.batch_predict',
    'tasad_jax.checkpointing': 'tasad_jax.runtime.checkpointing',
    'tasad_jax.ckpt_integrity': 'tasad_jax.runtime.checkpoint_integrity',
    'tasad_jax.datasets.embedded': 'tasad_jax.data.embedded',
    'tasad_jax.datasets.folder': 'tasad_jax.data.folder',
    'tasad_jax.datasets.imageio': 'tasad_jax.data.imageio',
    'tasad_jax.datasets.layouts': 'tasad_jax.data.layouts',
    'tasad_jax.datasets.mvtec': 'tasad_jax.data.mvtec',
    'tasad_jax.datasets.sources': 'tasad_jax.data.sources',
    'tasad_jax.datasets.tfds_mvtec': 'tasad_jax.data.tfds_mvtec',
    'tasad_jax.datasets.visa': 'tasad_jax.data.visa',
    'tasad_jax.datasets.working': 'tasad_jax.data.working_resolution',
    'tasad_jax.distributed': 'tasad_jax.runtime.distributed',
    'tasad_jax.errors': 'tasad_jax.runtime.errors',
    'tasad_jax.evaluate': 'tasad_jax.evaluation.evaluate',
    'tasad_jax.exporting': 'tasad_jax.deploy.export',
    'tasad_jax.fileio': 'tasad_jax.runtime.fileio',
    'tasad_jax.input_pipeline': 'tasad_jax.data.pipeline',
    'tasad_jax.labelled': 'tasad_jax.data.weak_labels',
    'tasad_jax.losses': 'tasad_jax.core.losses',
    'tasad_jax.methods.resnet': 'tasad_jax.models.resnet',
    'tasad_jax.metrics': 'tasad_jax.core.metrics',
    'tasad_jax.predictor': 'tasad_jax.inference.predictor',
    'tasad_jax.preemption': 'tasad_jax.runtime.preemption',
    'tasad_jax.refine': 'tasad_jax.fine.selection',
    'tasad_jax.report': 'tasad_jax.reporting.html_report',
    'tasad_jax.report_plots': 'tasad_jax.reporting.plots',
    'tasad_jax.scoring': 'tasad_jax.core.scoring',
    'tasad_jax.sharding': 'tasad_jax.core.sharding',
    'tasad_jax.stage': 'tasad_jax.core.stage',
    'tasad_jax.superpixels': 'tasad_jax.fine.slic',
    'tasad_jax.tf_host': 'tasad_jax.runtime.tf_host',
    'tasad_jax.thresholds': 'tasad_jax.inference.thresholds',
    'tasad_jax.tiled_inference': 'tasad_jax.inference.whole_image',
    'tasad_jax.tiling': 'tasad_jax.core.tiling',
    'tasad_jax.train': 'tasad_jax.training.trainer',
    'tasad_jax.train_state': 'tasad_jax.core.train_state',
    'tasad_jax.validation': 'tasad_jax.data.synthetic_validation',
    'tasad_jax.visualize': 'tasad_jax.reporting.heatmaps',
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Imports a former module path as the module that now holds it."""

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname in MOVED:
      return importlib.util.spec_from_loader(fullname, self)
    return None

  def create_module(self, spec):
    return importlib.import_module(MOVED[spec.name])

  def exec_module(self, module):
    del module  # Already executed under its own name.


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
  sys.meta_path.append(_MovedModules())


def load(workdir: str, restore_step: int = 0):
  """The trained model of a workdir, ready to predict (see `predictor`)."""
  from tasad_jax.inference import predictor  # pylint: disable=g-import-not-at-top
  return predictor.load(workdir, restore_step)
