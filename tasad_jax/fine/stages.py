"""The trainable stages by their `config.stages` name: the coarse method of
`config.coarse.name` and TASAD's fine stage on top of it."""

from __future__ import annotations

from tasad_jax import methods
from tasad_jax.core import names, stage
from tasad_jax.fine import fas
from tasad_jax.runtime.errors import UserInputError

STAGES = {names.COARSE_STAGE: methods.get, names.FINE_STAGE: fas.FineStage}


def build_stage(config, name: str) -> stage.Stage:
  """The stage that `name` ('cas' or 'fas') names, for `config`, checked."""
  if name not in STAGES:
    raise UserInputError(f'config.stages: unknown stage {name!r}; use '
                         f'{tuple(STAGES)}')
  built = STAGES[name](config)
  built.check_config()
  return built
