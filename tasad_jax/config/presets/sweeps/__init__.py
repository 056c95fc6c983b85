"""Installed benchmark sweeps (`tasad-benchmark --sweep=<name>`); see
`tasad_jax.benchmark.sweep` for the fields."""

import ml_collections

# Each method's own settings in a sweep: its pseudo-anomaly kind where it has
# one (as README's commands for each method give).
METHOD_OVERRIDES = {
    'anoseg': {'anomaly': {'coarse_methods': ('anoseg_hard',)}},
    'draem': {'anomaly': {'coarse_methods': ('draem_perlin',)}},
}
METHODS = ('tasad_cas', 'destseg', 'anoseg', 'cavga', 'draem')


def method_overrides(**extra) -> ml_collections.ConfigDict:
  """METHOD_OVERRIDES with `extra` ({method: nested fields}) merged in."""
  out = ml_collections.ConfigDict(METHOD_OVERRIDES)
  for method, fields in extra.items():
    if method not in out:
      out[method] = ml_collections.ConfigDict()
    out[method].update(fields)
  return out
