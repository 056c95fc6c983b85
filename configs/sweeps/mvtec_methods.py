"""An alias of the installed sweep `tasad_jax/config/presets/sweeps/mvtec_methods.py`."""

from tasad_jax.config.presets.sweeps.mvtec_methods import get_config  # pylint: disable=unused-import
