"""Tiny settings for tests: small images, few sources, small batches."""

from tasad_jax.config.presets import default


def get_config():
  config = default.get_config()
  config.data.root = 'embedded'
  config.data.category = 'brick'
  config.data.image_size = 32
  config.data.load_threads = 2
  config.anomaly.source = 'builtin'
  config.anomaly.builtin_variants = 4
  config.anomaly.saim_n_segments = (10, 30, 60)
  config.model.width = 4
  config.refine.n_segments = 30
  config.train.batch_size = 4
  config.train.cas_steps = 6
  config.train.fas_steps = 4
  config.train.checkpoint_every = 3
  config.train.log_every = 2
  config.train.image_every = 0
  config.eval.batch_size = 16
  config.eval.num_visualizations = 3
  return config
