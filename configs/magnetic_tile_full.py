"""Magnetic Tile Defect dataset (Huang et al.) at paper width and size, for an

An alias of the installed `tasad_jax/config/presets/magnetic_tile_full.py`."""

from tasad_jax.config.presets.magnetic_tile_full import get_config  # pylint: disable=unused-import
