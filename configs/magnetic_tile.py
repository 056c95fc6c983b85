"""Magnetic Tile Defect dataset (Huang et al.) on 2 CPU cores within an hour.

An alias of the installed `tasad_jax/config/presets/magnetic_tile.py`."""

from tasad_jax.config.presets.magnetic_tile import get_config  # pylint: disable=unused-import
