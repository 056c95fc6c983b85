"""Paper settings for TASAD on one MVTec AD category (Shah et al., 2023).

An alias of the installed `tasad_jax/config/presets/default.py`."""

from tasad_jax.config.presets.default import get_config  # pylint: disable=unused-import
