"""Magnetic Tile Defect dataset (Huang et al.) at paper width and size, for an
accelerator: the CPU config's data and pseudo-anomaly settings, TASAD's
w 128 and 256x256, bf16 compute, and the FAS input made on device.

  python train.py --config=configs/magnetic_tile_full.py --workdir=runs/mt_full \
      --config.data.root=/data
"""

from tasad_jax.config.presets import magnetic_tile


def get_config():
  config = magnetic_tile.get_config()
  config.data.image_size = 256  # Paper size.
  config.model.width = 128  # Paper width: 11,959,681 parameters per stage.
  config.model.dtype = 'bfloat16'  # Compute dtype; parameters stay float32.
  config.refine.on_device = True  # FAS input in the jitted step and program.
  config.train.batch_size = 16
  config.train.cas_steps = 40_000  # ~850 epochs of the 677 train images.
  config.train.fas_steps = 20_000
  config.train.checkpoint_every = 2000
  config.train.log_every = 200
  config.train.image_every = 5000
  return config
