"""Magnetic Tile: the five coarse methods ± FAS at the demo sweep's budget
(squash, 200 coarse + 100 FAS steps; DRAEM at 1/8 width).

  tasad-benchmark --sweep=magnetic_tile_methods --root=runs/mt_methods \
      --sweep.overrides.data.root=../shared/data
"""

from tasad_jax.config.presets.sweeps import demo_methods


def get_config():
  config = demo_methods.get_config()
  config.base = 'magnetic_tile'
  config.overrides.data = {'root': '', 'resize': 'squash'}
  config.categories = ('magnetic_tile',)
  return config
