"""Coarse stages, chosen by `config.coarse.name`.

    tasad_cas  TASAD's coarse segmenter (default; Shah et al., 2023)
    destseg    DeSTSeg (Zhang et al., CVPR 2023): frozen ResNet-18 teacher,
               denoising student, segmentation net on their feature distances

TASAD's fine stage (FAS), evaluation, predict and export work on any of them.
A new method subclasses `base.CoarseMethod` and is registered here.
"""

from __future__ import annotations

from tasad_jax.errors import UserInputError
from tasad_jax.methods import base, destseg, tasad_cas

REGISTRY: dict[str, type[base.CoarseMethod]] = {
    'tasad_cas': tasad_cas.TasadCas,
    'destseg': destseg.DeSTSeg,
}


def name_of(config) -> str:
  """config.coarse.name, 'tasad_cas' for configs written before it existed."""
  coarse = config.get('coarse') if hasattr(config, 'get') else None
  return (coarse or {}).get('name', 'tasad_cas')


def get(config) -> base.CoarseMethod:
  """The coarse method that `config.coarse.name` names, built for `config`."""
  name = name_of(config)
  if name not in REGISTRY:
    raise UserInputError(f'config.coarse.name: unknown coarse method {name!r}; '
                         f'use one of {sorted(REGISTRY)}')
  method = REGISTRY[name](config)
  method.check_config()
  return method
