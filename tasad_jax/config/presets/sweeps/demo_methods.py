"""The embedded demo (brick): the five coarse methods ± FAS at one small
budget for a 2-core CPU (200 coarse + 100 FAS steps; DRAEM at 1/8 width)."""

from tasad_jax.config.presets.sweeps import mvtec_methods


def get_config():
  config = mvtec_methods.get_config()
  config.base = 'demo'
  config.overrides = {'train': {'cas_steps': 200, 'fas_steps': 100,
                                'checkpoint_every': 100, 'image_every': 0}}
  config.categories = ('brick',)
  config.method_overrides.draem.coarse = {'draem': {'recon_width': 16,
                                                    'disc_width': 8}}
  return config
