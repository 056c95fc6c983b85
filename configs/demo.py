"""The demo: the embedded brick dataset, built-in textures, small and fast.

An alias of the installed `tasad_jax/config/presets/demo.py`."""

from tasad_jax.config.presets.demo import get_config  # pylint: disable=unused-import
