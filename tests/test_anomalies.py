"""Pseudo-anomaly ops and their statistics over a few hundred samples."""

import numpy as np
import pytest
import tensorflow as tf

from tasad_jax.config import schema
from tasad_jax.data import colour_ops, pipeline, pseudo_anomalies

P = pseudo_anomalies.AnomalyParams()


def _seed(i):
  return tf.constant([7, i], tf.int64)


def test_saim_pastes_ten_percent_of_whole_segments():
  size, side = 40, 10  # A 4x4 grid of 16 square segments, labels 1..16.
  segments = (np.arange(size)[:, None] // side * (size // side)
              + np.arange(size)[None, :] // side + 1)
  image = tf.zeros([size, size, 3])
  source = tf.ones([size, size, 3])
  for i in range(20):
    out, mask = pseudo_anomalies.saim(image, source, tf.constant(segments), 16,
                               _seed(i), P)
    m = mask.numpy()[..., 0]
    assert m.sum() == side * side  # max(1, floor(1.6)) = 1 whole segment.
    cells = m.reshape(4, side, 4, side)
    assert ((cells.min(axis=(1, 3)) == cells.max(axis=(1, 3)))).all()
    np.testing.assert_array_equal(out.numpy(), np.repeat(mask.numpy(), 3, -1))
  many = np.arange(size * size).reshape(size, size) // 16 + 1  # 100 segments.
  _, mask = pseudo_anomalies.saim(image, source, tf.constant(many), 100, _seed(0), P)
  assert mask.numpy().sum() == 10 * 16  # 10% of 100, drawn without repeats.


def test_augment_source_stays_in_range_and_changes_colours():
  src = tf.random.stateless_uniform([32, 32, 3], [1, 2])
  outs = [colour_ops.augment_source(src, _seed(i), P).numpy() for i in range(20)]
  for out in outs:
    assert out.min() >= 0.0 and out.max() <= 1.0
  assert np.mean([np.abs(o - src.numpy()).mean() > 0.01 for o in outs]) > 0.9


def _pil(image, fn, *args):
  from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top
  return np.asarray(getattr(ImageOps, fn)(Image.fromarray(image), *args))


def test_draem_colour_ops_match_pil():
  """equalize, posterize and solarize as PIL's (imgaug's pillike ops)."""
  rng = np.random.default_rng(0)
  image = (rng.beta(2, 5, (24, 20, 3)) * 255).astype(np.uint8)
  image[..., 2] = 77  # A flat channel stays as it is.
  x = tf.constant(image / 255.0, tf.float32)
  ops = colour_ops.COLOUR_OPS
  got = np.round(ops['equalize'](x, _seed(0), P).numpy() * 255)
  np.testing.assert_array_equal(got, _pil(image, 'equalize'))
  posterized = {bits: _pil(image, 'posterize', bits) for bits in range(1, 9)}
  seen = set()
  for i in range(30):
    got = np.round(ops['posterize'](x, _seed(i), P).numpy() * 255)
    bits = [b for b, want in posterized.items() if np.array_equal(got, want)]
    assert bits, i
    seen.add(bits[0])
  assert len(seen) >= 6  # 1 to 8 bits kept.
  solarized = 0
  for i in range(30):
    got = np.round(ops['solarize'](x, _seed(i), P).numpy() * 255)
    if not np.array_equal(got, image):
      solarized += 1  # Some threshold in [32, 128] of PIL's solarize.
      assert any(np.array_equal(got, _pil(image, 'solarize', t))
                 for t in range(32, 130)), i
  assert 5 < solarized < 25  # Half the time.


def test_draem_colour_ops_keep_what_they_should():
  src = tf.random.stateless_uniform([32, 32, 3], [1, 2])
  ops = colour_ops.COLOUR_OPS
  np.testing.assert_allclose(ops['invert'](src, _seed(0), P), 1 - src.numpy())
  # Hue and saturation move; the value (max of RGB) does not.
  shifted = ops['hue_saturation'](src, _seed(1), P).numpy()
  np.testing.assert_allclose(shifted.max(-1), src.numpy().max(-1), atol=1e-5)
  assert np.abs(shifted - src.numpy()).mean() > 0.01
  turned = ops['rotate'](src, _seed(2), P).numpy()
  np.testing.assert_allclose(turned[15:17, 15:17], src.numpy()[15:17, 15:17],
                             atol=0.2)
  assert np.abs(turned - src.numpy()).mean() > 0.05


def test_draem_colour_ops_in_the_stream_and_checked():
  params = pseudo_anomalies.AnomalyParams(
      colour_ops=colour_ops.DRAEM_COLOUR_OPS)
  src = tf.random.stateless_uniform([32, 32, 3], [1, 2])
  outs = [colour_ops.augment_source(src, _seed(i), params).numpy()
          for i in range(20)]
  assert all(o.min() >= 0.0 and o.max() <= 1.0 for o in outs)
  assert np.mean([np.abs(o - src.numpy()).mean() > 0.01 for o in outs]) > 0.9
  with pytest.raises(ValueError, match='config.anomaly.colour_ops'):
    pseudo_anomalies.AnomalyParams(colour_ops=('gamma', 'sepia'))
  with pytest.raises(ValueError, match='config.anomaly.num_augmentations'):
    pseudo_anomalies.AnomalyParams(num_augmentations=4, colour_ops=('gamma',))


def test_perlin_blend_and_beta_range():
  image = tf.random.stateless_uniform([64, 64, 3], [3, 4])
  source = tf.random.stateless_uniform([64, 64, 3], [5, 6])
  betas, anomalous = [], 0
  for i in range(100):
    out, mask, beta = pseudo_anomalies.perlin(image, source, _seed(i), P)
    beta = float(beta)
    betas.append(beta)
    m = mask.numpy()
    assert set(np.unique(m)) <= {0.0, 1.0}
    expected = image * (1 - m) + ((1 - beta) * source + beta * image) * m
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-6)
    anomalous += m.any()
  assert min(betas) >= 0.0 and max(betas) < 0.8
  assert 0.3 < np.mean(betas) < 0.5  # Uniform on [0, 0.8).
  assert anomalous > 30  # Thresholds t ~ U[0, 1) leave some masks empty.


def test_perlin_noise_resolutions():
  smooth = pseudo_anomalies.perlin_noise(64, 64, 1, 1, _seed(0)).numpy()
  rough = pseudo_anomalies.perlin_noise(64, 64, 32, 32, _seed(0)).numpy()
  assert smooth.shape == (64, 64) and np.abs(smooth).max() < 1.5
  step = lambda x: np.abs(np.diff(x, axis=1)).mean()
  assert step(rough) > 5 * step(smooth)


def _samples(config, n=200, stage='cas'):
  data = pipeline.load_train_data(config, stage)
  ds = pipeline.train_dataset(data, config, stage, batch_size=n,
                                    process_index=0, process_count=1)
  return next(ds.as_numpy_iterator())


@pytest.fixture(scope='module')
def saim_batch():
  from tasad_jax.config.presets import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.anomaly.methods = ('saim',)
  return _samples(config)


def test_half_of_the_samples_are_normal(saim_batch):
  labels = saim_batch['label']
  assert 0.4 <= labels.mean() <= 0.6  # 200 draws of p = 0.5: 3 sigma.
  normal = labels == 0
  np.testing.assert_array_equal(saim_batch['augmented'][normal],
                                saim_batch['image'][normal])
  assert saim_batch['mask'][normal].max() == 0


def test_output_equals_image_outside_the_mask(saim_batch):
  outside = saim_batch['mask'] == 0
  diff = np.abs(saim_batch['augmented'] - saim_batch['image'])
  assert diff[np.broadcast_to(outside, diff.shape)].max() == 0
  assert diff[np.broadcast_to(~outside, diff.shape)].mean() > 0.02


def test_values_shapes_and_dtypes(saim_batch):
  for key in ('image', 'augmented'):
    assert saim_batch[key].dtype == np.float32
    assert saim_batch[key].shape == (200, 32, 32, 3)
    assert 0.0 <= saim_batch[key].min() and saim_batch[key].max() <= 1.0
  assert saim_batch['mask'].shape == (200, 32, 32, 1)
  assert set(np.unique(saim_batch['mask'])) == {0.0, 1.0}
  assert saim_batch['label'].dtype == np.int32
  np.testing.assert_array_equal(saim_batch['label'],
                                saim_batch['mask'].max(axis=(1, 2, 3)))


def test_saim_pieces_grow_as_segments_fall(tiny_config):
  """Fewer SLIC segments give larger pasted pieces (large/medium/small
  anomalies); the pasted share of the image stays near saim_fraction."""
  from skimage import measure  # pylint: disable=g-import-not-at-top
  tiny_config.data.image_size = 64
  tiny_config.anomaly.methods = ('saim',)
  tiny_config.anomaly.normal_probability = 0.0
  piece, share = {}, {}
  for n in (30, 250):
    tiny_config.anomaly.saim_n_segments = (n,)
    masks = _samples(tiny_config, n=100)['mask'][..., 0]
    areas = [r.area for m in masks for r in measure.regionprops(
        measure.label(m > 0, connectivity=1))]
    piece[n], share[n] = np.mean(areas), masks.mean()
  assert piece[30] > 3 * piece[250]
  for n in share:
    assert 0.05 < share[n] < 0.2, share


def test_perlin_only_stream(tiny_config):
  tiny_config.anomaly.methods = ('perlin',)
  batch = _samples(tiny_config, n=200)
  assert 0.15 <= batch['label'].mean() <= 0.5  # Half normal, some t too high.
  m = batch['mask'] > 0
  diff = np.abs(batch['augmented'] - batch['image'])
  assert diff[np.broadcast_to(~m, diff.shape)].max() == 0


def test_unknown_method_is_a_config_error(tiny_config):
  from tasad_jax.runtime.errors import UserInputError  # pylint: disable=g-import-not-at-top
  tiny_config.anomaly.methods = ('saim', 'cutpaste')
  with pytest.raises(UserInputError, match='config.anomaly.methods'):
    schema.check(tiny_config)
