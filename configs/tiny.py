"""Tiny settings for tests: small images, few sources, small batches.

An alias of the installed `tasad_jax/config/presets/tiny.py`."""

from tasad_jax.config.presets.tiny import get_config  # pylint: disable=unused-import
