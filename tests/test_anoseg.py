"""AnoSeg: hard augmentation, coordinate channels, training, end to end."""

import json
import os
import shutil

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from conftest import run_script, train_steps
from method_runs import method_run
from tasad_jax.config.presets import tiny
from tasad_jax.data import pseudo_anomalies
from tasad_jax import methods
from tasad_jax.core import metrics, sharding
from tasad_jax.inference import predictor, thresholds
from tasad_jax.runtime.errors import UserInputError
from tasad_jax.methods import anoseg, anoseg_hard

P = pseudo_anomalies.AnomalyParams(methods=('anoseg_hard',))


def _anoseg_config(**settings):
  config = tiny.get_config()
  config.coarse.name = 'anoseg'
  config.coarse.anoseg.disc_width = 8
  for k, v in settings.items():
    config.coarse.anoseg[k] = v
  return config


def test_hard_augmentation_mask_is_exactly_the_pasted_box():
  image = tf.random.stateless_uniform([40, 40, 3], [1, 2])
  areas = []
  for i in range(30):
    out, mask = anoseg_hard.anoseg_hard(image, tf.constant([5, i], tf.int64), P)
    m, changed = mask.numpy()[..., 0], np.abs(out.numpy() - image.numpy()).max(-1)
    ys, xs = np.nonzero(m)
    box = np.zeros_like(m)
    box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 1
    np.testing.assert_array_equal(m, box)  # One filled rectangle, {0, 1}.
    assert (changed[m == 0] == 0).all()  # Nothing changes outside it...
    assert (changed[m == 1] > 0).mean() > 0.95  # ...nearly every pixel inside.
    side = np.array([ys.max() - ys.min() + 1, xs.max() - xs.min() + 1]) / 40
    assert (side >= 0.1 - 1e-6).all() and (side <= 0.5 + 1e-6).all()
    areas.append(m.mean())
  assert len(set(areas)) > 10  # Boxes of many sizes.


def test_hard_augmentation_in_the_stream_and_normal_samples_are_empty():
  image = tf.random.stateless_uniform([32, 32, 3], [3, 4])
  source = tf.zeros([32, 32, 3])
  segments, counts = tf.ones([1, 32, 32], tf.int32), tf.constant([1])
  for probability, anomalous in ((1.0, False), (0.0, True)):
    params = pseudo_anomalies.AnomalyParams(methods=('saim',),
                                     coarse_methods=('anoseg_hard',),
                                     normal_probability=probability)
    for i in range(5):
      sample = pseudo_anomalies.synthesize(image, source, segments, counts,
                                    tf.constant([9, i], tf.int64),
                                    params.for_stage('cas'))
      mask = sample['mask'].numpy()
      assert int(sample['label']) == int(anomalous)
      assert (mask.any()) == anomalous
      if not anomalous:
        np.testing.assert_array_equal(sample['augmented'].numpy(), image.numpy())
      else:  # The source (zeros) is never pasted: the image itself is.
        assert sample['augmented'].numpy()[mask[..., 0] > 0].mean() > 0.05
  params = pseudo_anomalies.AnomalyParams(coarse_methods=('anoseg_hard',))
  assert params.for_stage('cas').methods == ('anoseg_hard',)
  assert params.for_stage('fas').methods == ('saim', 'perlin')
  with pytest.raises(ValueError, match='coarse_methods'):
    pseudo_anomalies.AnomalyParams(coarse_methods=('nope',))


def test_coord_channels_are_x_then_y_in_minus_one_to_one():
  c = np.asarray(anoseg.coord_channels(2, 4, 5))
  assert c.shape == (2, 4, 5, 2)
  np.testing.assert_allclose(c[0, 0, :, 0], [-1, -0.5, 0, 0.5, 1])
  np.testing.assert_allclose(c[1, :, 3, 1], [-1, -1 / 3, 1 / 3, 1], atol=1e-6)
  assert (c[..., 0] == c[:, :1, :, 0]).all()  # x is constant down a column.
  assert (c[..., 1] == c[:, :, :1, 1]).all()  # y is constant along a row.
  # The generator's first conv takes them.
  x = np.zeros((1, 32, 32, 3), np.float32)
  for coords, channels in ((True, 5), (False, 3)):
    gen = anoseg.Generator(width=4, coords=coords)
    shapes = jax.eval_shape(gen.init, jax.random.key(0), x)
    kernel = shapes['params']['segmenter']['ConvBNReLU_0']['Conv_0']['kernel']
    assert kernel.shape[2] == channels  # RGB (+ x + y).


def _fixed_batch(rng, n=4, size=32):
  image = (0.5 + 0.05 * rng.random((n, size, size, 3))).astype(np.float32)
  mask = np.zeros((n, size, size, 1), np.float32)
  mask[: n // 2, 8:20, 10:24] = 1.0
  augmented = image * (1 - mask) + mask * np.array([0.1, 0.2, 0.9])
  return {'image': image, 'augmented': augmented.astype(np.float32),
          'mask': mask}


def test_steps_lower_the_pixel_loss_and_move_the_discriminator():
  config = _anoseg_config(gen_learning_rate=1e-3, disc_learning_rate=1e-3)
  config.model.width = 8
  config.train.cas_steps = 15
  mesh = sharding.make_mesh()
  method = methods.get(config)
  state = method.create_state(mesh)
  first_disc = jax.tree_util.tree_map(np.asarray, state.params['disc'])
  state, history = train_steps(method, state,
                               _fixed_batch(np.random.default_rng(0)), 15)
  assert history[-1]['pixel'] < 0.8 * history[0]['pixel']
  assert history[-1]['reconstruction'] < history[0]['reconstruction']
  disc = [h['disc_loss'] for h in history]
  assert max(disc) - min(disc) > 1e-3
  changed = [not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(first_disc),
      jax.tree_util.tree_leaves(state.params['disc']))]
  assert all(changed)
  assert int(state.step) == 15
  # Inference carries the generator only.
  assert set(method.inference_variables(state)['params']) == {'gen'}


def test_bad_settings_name_the_field():
  with pytest.raises(UserInputError, match='config.coarse.anoseg.pixel_loss'):
    methods.get(_anoseg_config(pixel_loss='l2'))
  with pytest.raises(UserInputError, match='config.coarse.anoseg.adversarial_weight'):
    methods.get(_anoseg_config(adversarial_weight=-1.0))


def test_anoseg_with_fas_end_to_end(tmp_path):
  """anoseg + FAS (`method_runs`; predict and export: the contract test):
  evaluate.py with the method's flags (IoU at the thresholds); the maps beat
  a random map on pixel AP."""
  _, trained_run, root, _ = method_run('anoseg')
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained_run, workdir, ignore=shutil.ignore_patterns('eval'))
  flags = [f'--workdir={workdir}', f'--config.data.root={root}',
           '--config.data.category=tile', '--config.coarse.name=anoseg',
           '--config.model.width=8', '--config.coarse.anoseg.disc_width=8']
  result = run_script('evaluate.py', *flags)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'anoseg+fas' in result.stdout and 'pixel_iou_best' in result.stdout
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    report = json.load(f)
  assert report['coarse'] == 'anoseg'
  trained = thresholds.load(workdir)
  masks = np.stack([np.asarray(Image.open(os.path.join(
      root, 'tile/ground_truth/blob', f'{i:03d}_mask.png'))) > 0
                    for i in range(4)])
  random_ap = masks.sum() / (masks.size / 4 * 7)  # Positive share of 7 images.
  # 26x here (0.69 vs 0.027). At 40 steps the map had only begun to form:
  # 1.9x on one CPU, 1.1x on another (float round-off differs by CPU).
  assert report['cas']['pixel_ap'] > 1.5 * random_ap, (report['cas'], random_ap)
  # IoU at the normal-data threshold: the same as computed here from the maps.
  model = predictor.load(workdir)
  test_images = [os.path.join(root, 'tile/test', d, f'{i:03d}.png')
                 for d, n in (('blob', 4), ('good', 3)) for i in range(n)]
  x = np.stack([np.asarray(Image.open(p)) for p in test_images])
  live = model.runner(x.astype(np.float32) / 255.0)
  all_masks = np.concatenate([masks, np.zeros((3, 32, 32), bool)])
  for method in ('cas', 'tasad'):
    t = trained['per_method'][method]['pixel']
    assert report[method]['pixel_iou_at_threshold'] == pytest.approx(
        metrics.iou_at(live[f'{method}_map'], all_masks, t), abs=1e-4)
    assert 0.0 <= report[method]['pixel_iou_best'] <= 1.0
