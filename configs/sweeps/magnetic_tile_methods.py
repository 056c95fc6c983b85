"""An alias of the installed sweep `tasad_jax/config/presets/sweeps/magnetic_tile_methods.py`."""

from tasad_jax.config.presets.sweeps.magnetic_tile_methods import get_config  # pylint: disable=unused-import
