"""Magnetic Tile Defect dataset (Huang et al.) on 2 CPU cores within an hour.

Expects the dataset in MVTec layout under <root>/magnetic_tile, e.g.
  python train.py --config=configs/magnetic_tile.py --workdir=runs/mt \
      --config.data.root=../shared/data
The settings are the best of the experiments in RESULTS.md.
"""

from tasad_jax.config.presets import default


def get_config():
  config = default.get_config()
  config.data.category = 'magnetic_tile'
  config.data.image_size = 128
  config.data.resize = 'tile'  # 128² tiles of native pixels: best on the validation split (RESULTS.md).
  config.anomaly.source = 'builtin'  # Beat the DTD subset on the validation split (RESULTS.md).
  config.anomaly.grey_sources = True  # Grey tiles: grey pseudo-anomalies.
  config.anomaly.cas_add_train_images = False  # Own images as sources lost on validation (RESULTS.md).
  config.model.width = 16
  config.refine.test_seed_threshold = 10  # Seeds at 10/255 (paper 30): best of RESULTS.md.
  config.refine.on_device = False  # On 2 CPU cores scikit-image's SLIC is faster.
  config.distributed.local_device_count = 2  # One CPU device per core of 2: +33% images/s (RESULTS.md).
  config.train.batch_size = 8
  config.train.cas_steps = 4000
  config.train.fas_steps = 1000
  config.train.checkpoint_every = 1000
  config.train.log_every = 100
  config.train.image_every = 0
  return config
