"""Where pseudo-anomaly kinds that `data` does not define are registered.

A coarse method may own a kind (AnoSeg's `anoseg_hard`): its module, made of
TensorFlow ops, registers the kind when imported. The method says which module
that is when it registers (`methods.registry`), without importing TensorFlow;
the stream imports the module the first time a config names the kind
(`pseudo_anomalies.AnomalyParams`). No TensorFlow here.
"""

from __future__ import annotations

import importlib

MODULES: dict[str, str] = {}  # Kind name -> the module that registers it.


def provide(name: str, module: str) -> None:
  """Records that importing `module` registers the kind `name`."""
  MODULES[name] = module


def load(names) -> None:
  """Imports the modules of the kinds in `names` that others provide."""
  for name in names:
    if name in MODULES:
      importlib.import_module(MODULES[name])
