"""Each registered coarse method trained with TASAD's fine stage on top and
evaluated, once per test session (`conftest.shared_workdir`): the runs that
the contract test (test_method_contract.py) and each method's own end-to-end
test read, so no method is trained twice.

A recipe writes the method's data and gives its config; a method without a
recipe (a new one, a plug-in) runs with its defaults on `write_easy_tree`'s
data for 2 + 2 steps.
"""

import json
import os

import jax
import numpy as np
from PIL import Image

from conftest import shared_workdir, write_easy_tree, write_tree
from method_settings import small_config


def write_blobs(root, category='tile', size=32):
  """Near-uniform tiles; defects are blue boxes (masks exact)."""
  rng = np.random.default_rng(0)
  base = os.path.join(root, category)

  def tile():
    x = np.array([0.55, 0.45, 0.35]) + 0.03 * rng.standard_normal((size, size, 3))
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)

  for folder in ('train/good', 'test/good', 'test/blob', 'ground_truth/blob'):
    os.makedirs(os.path.join(base, folder))
  for i in range(12):
    Image.fromarray(tile()).save(os.path.join(base, 'train/good', f'{i:03d}.png'))
  for i in range(3):
    Image.fromarray(tile()).save(os.path.join(base, 'test/good', f'{i:03d}.png'))
  for i in range(4):
    img, mask = tile(), np.zeros((size, size), np.uint8)
    y, x, h, w = 4 + 5 * i, 3 + 4 * i, 6 + i, 8 - i
    img[y:y + h, x:x + w] = (30, 60, 220)
    mask[y:y + h, x:x + w] = 255
    Image.fromarray(img).save(os.path.join(base, 'test/blob', f'{i:03d}.png'))
    Image.fromarray(mask).save(os.path.join(base, 'ground_truth/blob',
                                            f'{i:03d}_mask.png'))


def _destseg(root):
  """Dark disks on grey parts; 200 steps make DeSTSeg's maps beat chance."""
  config = small_config('destseg')
  config.data.root, config.data.category = root, 'plain'
  config.train.cas_steps, config.train.fas_steps = 200, 3
  config.coarse.destseg.student_fraction = 0.3
  config.train.checkpoint_every, config.train.log_every = 200, 20
  return config


def _anoseg(root):
  """Blue boxes on near-uniform tiles, AnoSeg's hard augmentation."""
  config = small_config('anoseg')
  config.coarse.anoseg.gen_learning_rate = 2e-3
  config.coarse.anoseg.disc_learning_rate = 2e-3
  config.data.root, config.data.category = root, 'tile'
  config.anomaly.coarse_methods = ('anoseg_hard',)
  config.anomaly.normal_probability = 0.3
  config.model.width = 8
  config.train.batch_size = 8
  config.train.cas_steps, config.train.fas_steps = 80, 2
  config.train.checkpoint_every, config.train.log_every = 80, 20
  return config


def _cavga(root):
  """CAVGA-Rw on one real defect per type of `write_tree`'s category."""
  config = small_config('cavga')
  config.coarse.cavga.weak = True
  config.data.root, config.data.category = root, 'widget'
  config.train.cas_steps, config.train.fas_steps = 3, 2
  config.data.labelled_anomalies, config.data.labelled_rate = 'test:1', 0.5
  return config


def _draem(root):
  """Dark disks on grey parts, DRAEM's own Perlin pseudo-anomalies."""
  config = small_config('draem')
  config.data.root, config.data.category = root, 'plain'
  config.anomaly.coarse_methods = ('draem_perlin',)
  # Rotated normal images get black corners, which look like these dark
  # disks: with them the tiny run learns that dark is normal (image AUROC 0).
  config.anomaly.draem_image_rotation_probability = 0.0
  config.coarse.draem.learning_rate = 2e-3
  config.train.batch_size = 8
  config.train.cas_steps, config.train.fas_steps = 100, 3
  config.train.checkpoint_every, config.train.log_every = 100, 20
  return config


def _default(name):
  def config_of(root):
    config = small_config(name)
    config.data.root, config.data.category = root, 'plain'
    config.train.cas_steps, config.train.fas_steps = 2, 2
    config.train.checkpoint_every = 2
    return config
  return config_of


def _easy(root):
  return {'chance': write_easy_tree(root, 'plain')}


# Method -> (writes its data at a root and returns what the tests need of
# it, its config for that root).
RECIPES = {'destseg': (_easy, _destseg),
           'anoseg': (lambda root: write_blobs(root) or {}, _anoseg),
           'cavga': (write_tree, _cavga),
           'draem': (_easy, _draem)}


def method_run(name):
  """(config, workdir, root, info) of `name`'s run: trained (both stages,
  thresholds) and evaluated into `<workdir>/eval`. Read it; copy it before
  changing it. (TASAD's own is the session's tiny run: `tiny_evaluated`.)"""
  from tasad_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from tasad_jax.training import trainer  # pylint: disable=g-import-not-at-top
  write, config_of = RECIPES.get(name, (_easy, _default(name)))

  def build(path):
    info = write(os.path.join(path, 'data'))
    config = config_of(os.path.join(path, 'data'))
    workdir = os.path.join(path, 'run')
    trainer.train_and_evaluate(config, workdir)
    evaluate.evaluate(config, workdir, [config.data.category])
    with open(os.path.join(path, 'info.json'), 'w') as f:
      json.dump(info, f)

  path = shared_workdir(f'method_{name}', build)
  with open(os.path.join(path, 'info.json')) as f:
    info = json.load(f)
  root = os.path.join(path, 'data')
  return config_of(root), os.path.join(path, 'run'), root, info


def assert_resume_is_exact(config, batch, directory, steps=4):
  """`steps` steps of config's coarse method on `batch` (numpy) from its
  initial state equal, bit for bit, half of them, a checkpoint, a new method
  restoring it and the other half."""
  from tasad_jax import methods  # pylint: disable=g-import-not-at-top
  from tasad_jax.core import sharding, stage  # pylint: disable=g-import-not-at-top
  from tasad_jax.runtime import checkpointing  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  batch = sharding.to_global(batch, mesh)

  def run(method, state, n):
    program_at = stage.compile_phases(method, state, mesh)
    with jax.set_mesh(mesh):
      for _ in range(n):
        state, _, _ = program_at(int(state.step))(state, batch, None)
    return state

  method = methods.get(config)
  straight = run(method, method.initial_state(mesh), steps)
  half = run(method, method.initial_state(mesh), steps // 2)
  ckpt = checkpointing.Checkpointer(os.path.join(str(directory), 'cas'))
  ckpt.save(steps // 2, half)
  ckpt.wait()
  resumed_method = methods.get(config.copy_and_resolve_references())
  restored = ckpt.restore(resumed_method.abstract_state(mesh))
  ckpt.close()
  resumed = run(resumed_method, restored, steps - steps // 2)
  host = lambda s: jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.asarray, s))  # pylint: disable=unnecessary-lambda-assignment
  for a, b in zip(host(straight), host(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
