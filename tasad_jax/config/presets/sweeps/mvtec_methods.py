"""MVTec AD, every category × the five coarse methods, each with and without
TASAD's fine stage, at the paper's settings (one seed).

  tasad-benchmark --sweep=mvtec_methods --root=runs/mvtec \
      --sweep.overrides.data.root=/data/mvtec_anomaly_detection
"""

import ml_collections

from tasad_jax.config.presets import sweeps


def get_config():
  config = ml_collections.ConfigDict()
  config.base = 'default'  # Every cell's config: an installed name or a config file.
  config.overrides = ml_collections.ConfigDict({'data': {'root': ''}})  # Fields set in every cell (nested); give data.root.
  config.categories = ('all',)  # Categories of data.root; ('all',): every one.
  config.methods = sweeps.METHODS  # Coarse methods (config.coarse.name); FAS on top of each.
  config.method_overrides = sweeps.method_overrides()  # Fields of one method's cells.
  config.seeds = (0,)  # Values of config.seed; several give mean ± std.
  config.grid = ml_collections.ConfigDict()  # Other fields, nested, each a tuple of values.
  return config
