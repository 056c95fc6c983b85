"""AnoSeg as a coarse stage: hard augmentation, coordinate channels, the
adversarial step, multi-device training, and AnoSeg + FAS end to end."""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_script, write_easy_tree
from configs import tiny
from tasad_jax import (anomalies, exporting, methods, metrics, predictor,
                       sharding, stage, train)
from tasad_jax.methods import anoseg
from test_train import loss_curve

P = anomalies.AnomalyParams(methods=('anoseg_hard',))


def _seeds(i):
  return tf.constant([[i, 1], [i, 2]], tf.int64)


def test_hard_augmentation_mask_is_exactly_the_pasted_rectangle():
  rng = np.random.default_rng(0)
  image = tf.constant(rng.random((32, 32, 3)), tf.float32)
  empty = tf.zeros((1, 32, 32), tf.int32)
  for i in range(20):
    out, mask = anomalies.anoseg_hard(image, image, empty, tf.ones([1]),
                                      _seeds(i), P)
    out, mask = out.numpy(), mask.numpy()[..., 0]
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert mask.sum() == len(rows) * len(cols) > 0  # One full rectangle.
    assert 0.1 * 32 - 1 <= len(rows) <= 0.5 * 32 + 1
    outside = mask == 0
    np.testing.assert_array_equal(out[outside], image.numpy()[outside])
    changed = np.abs(out - image.numpy()).max(-1) > 1e-6
    assert changed[mask > 0].mean() > 0.5  # The pasted copy differs inside.


def test_quadrant_permutation_moves_whole_quadrants():
  image = tf.reshape(tf.range(16, dtype=tf.float32), (4, 4, 1))
  out = anomalies.quadrant_permutation(image, tf.constant([3, 2, 1, 0])).numpy()
  np.testing.assert_array_equal(out[:2, :2, 0], image.numpy()[2:, 2:, 0])
  np.testing.assert_array_equal(out[2:, 2:, 0], image.numpy()[:2, :2, 0])


def test_normal_samples_have_empty_masks():
  image = tf.constant(np.random.default_rng(1).random((32, 32, 3)), tf.float32)
  for i in range(20):
    sample = anomalies.synthesize(image, image, tf.zeros((1, 32, 32), tf.int32),
                                  tf.ones([1], tf.int32),
                                  tf.constant([i, 7], tf.int64), P)
    if int(sample['label']) == 0:
      assert float(tf.reduce_max(sample['mask'])) == 0.0
      np.testing.assert_array_equal(sample['augmented'], image)
    else:
      assert float(tf.reduce_sum(sample['mask'])) > 0


def test_coordinate_channels():
  grid = np.asarray(anoseg.coord_channels(2, 4, 5))
  assert grid.shape == (2, 4, 5, 2)
  np.testing.assert_allclose(grid[0, 0, :, 0], np.linspace(-1, 1, 5), rtol=1e-6)  # x.
  np.testing.assert_allclose(grid[0, :, 0, 1], np.linspace(-1, 1, 4), rtol=1e-6)  # y.
  assert (grid[1] == grid[0]).all()


def _config():
  config = tiny.get_config()
  config.coarse.name = 'anoseg'
  config.anomaly.methods = ('anoseg_hard',)
  return config


def test_steps_lower_the_pixel_loss_and_move_the_discriminator():
  config = _config()
  config.coarse.anoseg.learning_rate = 2e-3
  mesh = sharding.make_mesh()
  method = methods.get(config)
  state = method.create_state(mesh)
  program = stage.compile_phases(method, state, mesh)(0)
  rng = np.random.default_rng(2)
  mask = np.zeros((4, 32, 32, 1), np.float32)
  mask[:2, 8:20, 10:24] = 1
  images = rng.random((4, 32, 32, 3)).astype(np.float32) * 0.3 + 0.35
  augmented = np.where(mask > 0, 1.0 - images, images).astype(np.float32)
  batch = sharding.to_global({'augmented': augmented, 'mask': mask}, mesh)
  history = []
  with jax.set_mesh(mesh):
    for _ in range(80):  # The tiny net first calibrates, then localises.
      state, m, finite = program(state, batch, None)
      assert bool(finite)
      history.append({k: float(v) for k, v in m.items()})
  assert history[-1]['pixel'] < 0.5 * history[0]['pixel']
  maps = np.asarray(method.anomaly_map(method.inference_variables(state),
                                       augmented))
  assert metrics.average_precision(maps, mask > 0) > 3 * mask.mean()
  assert len({round(h['discriminator'], 6) for h in history}) > 5
  # The discriminator does not reach inference.
  assert set(method.inference_variables(state)) == {'generator'}


def test_four_devices_give_the_single_device_anoseg_losses():
  one, four = loss_curve(1, coarse='anoseg'), loss_curve(4, coarse='anoseg')
  np.testing.assert_allclose(four['losses'], one['losses'], rtol=2e-4)


def test_anoseg_with_fas_end_to_end(tmp_path):
  """anoseg + FAS: train, evaluate.py (with IoU), predictor, StableHLO export."""
  root = str(tmp_path / 'data')
  write_easy_tree(root, 'plain')
  config = _config()
  config.data.root, config.data.category = root, 'plain'
  config.train.cas_steps, config.train.fas_steps = 4, 2
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  result = run_script('evaluate.py', f'--workdir={workdir}',
                      f'--config.data.root={root}', '--config.data.category=plain',
                      '--config.coarse.name=anoseg',
                      "--config.anomaly.methods=('anoseg_hard',)")
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'anoseg+fas' in result.stdout
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    report = json.load(f)
  assert report['coarse'] == 'anoseg'
  assert 0 <= report['tasad']['pixel_iou_best'] <= 1
  assert 'pixel_iou_at_threshold' in report['tasad']
  model = predictor.load(workdir)
  images = np.random.default_rng(3).integers(0, 256, (2, 40, 50, 3), np.uint8)
  assert model.predict(images)['anomaly_maps'].shape == (2, 40, 50)
  path = str(tmp_path / 'model.stablehlo')
  exporting.export_stablehlo(model, path)
  with open(path, 'rb') as f:
    exported = jax.export.deserialize(f.read())
  x = model.preprocess(images)[0]
  maps, _ = exported.call(x)
  np.testing.assert_allclose(maps, model.runner(x)['tasad_map'], atol=1e-5)


@pytest.mark.parametrize('field,value', [('pixel_loss', 'dice'),
                                         ('adversarial_loss', 'wgan')])
def test_bad_anoseg_settings_name_the_field(field, value):
  config = _config()
  config.coarse.anoseg[field] = value
  with pytest.raises(Exception, match=f'config.coarse.anoseg.{field}'):
    methods.get(config)
