"""Aliases of the configs installed with the package (`tasad_jax.config.presets`)."""
