"""The demo: the embedded brick dataset, built-in textures, small and fast."""

from configs import default


def get_config():
  config = default.get_config()
  config.data.root = 'embedded'  # Built on first use into $TASAD_JAX_CACHE.
  config.data.category = 'brick'
  config.data.image_size = 128
  config.anomaly.source = 'builtin'
  config.train.batch_size = 8
  return config
