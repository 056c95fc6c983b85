"""The demo: the embedded brick dataset, built-in textures, small and fast."""

from tasad_jax.config.presets import default


def get_config():
  config = default.get_config()
  config.data.root = 'embedded'  # Built on first use into $TASAD_JAX_CACHE.
  config.data.category = 'brick'
  config.data.image_size = 128
  config.anomaly.source = 'builtin'
  config.model.width = 16
  config.refine.on_device = False  # On 2 CPU cores scikit-image's SLIC is faster.
  config.distributed.local_device_count = 2  # One CPU device per core of 2: +33% images/s (RESULTS.md).
  config.train.batch_size = 8
  config.train.cas_steps = 500
  config.train.fas_steps = 250
  config.train.checkpoint_every = 250
  config.train.log_every = 50
  config.train.image_every = 250
  return config
