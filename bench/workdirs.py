"""Workdirs the benches predict with: a throwaway tile-mode model, or a copy
of a trained one switched to 'tile' (imported by the benches, not run)."""

import json
import os
import shutil

# predict.py runs as from a shell: without what importing TensorFlow for the
# throwaway training sets in this process's environment (TPU_ML_PLATFORM,
# KMP_*, ...), with which its peak was 1.5 GB instead of 0.65 at 4 megapixels.
SHELL_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')


def train(workdir: str, tile: int, stride: int = 0, width: int = 0) -> None:
  """Trains the tiny config's networks (or `width`) on `tile`-pixel tiles,
  2 + 2 steps: its weights do not matter to a speed or memory bench, its
  shapes and programs do."""
  from tasad_jax.config.presets import tiny  # pylint: disable=g-import-not-at-top
  from tasad_jax.training import trainer  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.data.resize, config.data.image_size = 'tile', tile
  config.data.tile_stride = stride
  if width:
    config.model.width = width
  config.train.cas_steps, config.train.fas_steps = 2, 2
  config.train.checkpoint_every = 2
  trainer.train_and_evaluate(config, workdir)


def tile_copy(source: str, workdir: str, **data) -> None:
  """A copy of a trained workdir that predicts in 'tile' mode, with the
  `config.data` fields given (e.g. stride=..., whole_image_pixels=...)."""
  shutil.copytree(source, workdir, ignore=shutil.ignore_patterns('eval'))
  edit(workdir, resize='tile', **data)


def edit(workdir: str, **data) -> None:
  """Sets fields of a workdir's config.data (`stride`: tile_stride)."""
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    config = json.load(f)
  if 'stride' in data:
    data['tile_stride'] = data.pop('stride')
  config['data'].update(data)
  with open(path, 'w') as f:
    json.dump(config, f)
