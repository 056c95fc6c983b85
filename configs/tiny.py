"""Tiny settings for tests: small images, few sources, small batches."""

from configs import default


def get_config():
  config = default.get_config()
  config.data.root = 'embedded'
  config.data.category = 'brick'
  config.data.image_size = 32
  config.data.load_threads = 2
  config.anomaly.source = 'builtin'
  config.anomaly.builtin_variants = 4
  config.anomaly.saim_n_segments = (10, 30, 60)
  config.train.batch_size = 4
  return config
