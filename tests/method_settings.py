"""Each coarse method at test size: the tiny config with the method's
settings shrunk where its defaults (the paper's) are slow on a CPU. Imports
nothing of the test harness, so that scripts the tests start (loss_curve.py)
use it too."""

from tasad_jax.config.presets import tiny

# A method's settings at test size where its defaults (the paper's) are slow
# on a CPU.
SMALL = {
    'destseg': {'seg_channels': 32, 'top_k': 10},
    'cavga': {'encoder_layers': 2, 'latent_channels': 8,
              'decoder_channels': 16, 'disc_channels': 8},
    'anoseg': {'disc_width': 8},
    'draem': {'recon_width': 4, 'disc_width': 4},
}


def small_config(name: str):
  """The tiny config with coarse method `name` at its test-size settings."""
  config = tiny.get_config()
  config.coarse.name = name
  for field, value in SMALL.get(name, {}).items():
    config.coarse[name][field] = value
  return config
