"""An alias of the installed sweep `tasad_jax/config/presets/sweeps/demo_methods.py`."""

from tasad_jax.config.presets.sweeps.demo_methods import get_config  # pylint: disable=unused-import
