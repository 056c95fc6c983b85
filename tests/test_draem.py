"""DRAEM: its networks against the reference's layers, its losses against
the reference's formulas, its pseudo-anomaly, an exact resume, and a tiny run
(`method_runs`) that finds defects and held-out pseudo-anomalies in every
resize mode, exported with the reconstruction inside."""

import json
import os

import jax
import numpy as np
from scipy import ndimage

import tasad_jax
from conftest import copy_in_mode
from method_runs import assert_resume_is_exact, method_run
from method_settings import small_config
from tasad_jax import methods
from tasad_jax.core import losses, metrics, sharding
from tasad_jax.data import pipeline, pseudo_anomalies, sample_ops
from tasad_jax.deploy import export
from tasad_jax.methods import draem, draem_perlin
from tasad_jax.runtime.tf_host import tf
from tasad_jax.training import trainer


def _conv(cin, cout, norm=True):
  return 9 * cin * cout + cout + (2 * cout if norm else 0)


def _reference_counts(w, d):
  """Parameters of VitjanZ/DRAEM's model_unet.py, layer by layer."""
  encoder = lambda c, w, levels: sum(  # pylint: disable=unnecessary-lambda-assignment
      _conv(a, b) + _conv(b, b) for a, b in zip(
          (c,) + tuple(w * m for m in levels[:-1]), (w * m for m in levels)))
  recon = encoder(3, w, (1, 2, 4, 8, 8)) + sum(
      _conv(w * a, w * a) + _conv(w * a, w * a) + _conv(w * a, w * b)
      for a, b in ((8, 4), (4, 2), (2, 1), (1, 1))) + _conv(w, 3, False)
  disc = encoder(6, d, (1, 2, 4, 8, 8, 8)) + sum(
      _conv(d * a, d * b) + _conv(d * (b + s), d * b) + _conv(d * b, d * b)
      for a, b, s in ((8, 8, 8), (8, 4, 8), (4, 2, 4), (2, 1, 2), (1, 1, 1))
  ) + _conv(d, 2, False)
  return recon, disc


def test_networks_have_the_reference_parameters_and_shapes():
  counts = draem.parameter_counts(128, 64)
  assert tuple(counts.values()) == _reference_counts(128, 64)
  assert sum(counts.values()) == 97_422_725  # The paper's 97.4M.
  assert tuple(draem.parameter_counts(16, 8).values()) == _reference_counts(16, 8)
  key = jax.random.key(0)
  x = jax.ShapeDtypeStruct((2, 64, 96, 3), np.float32)
  rec = jax.eval_shape(lambda k, x: draem.Reconstructive(4).init_with_output(
      k, x)[0], key, x)
  assert rec.shape == (2, 64, 96, 3)
  x = jax.ShapeDtypeStruct((2, 64, 96, 6), np.float32)
  logits = jax.eval_shape(lambda k, x: draem.Discriminative(4).init_with_output(
      k, x)[0], key, x)
  assert logits.shape == (2, 64, 96, 2)


def test_focal_loss_is_the_reference_formula():
  rng = np.random.default_rng(0)
  probs = np.asarray(jax.nn.softmax(rng.normal(0, 2, (2, 5, 6, 2)), axis=-1))
  mask = (rng.random((2, 5, 6, 1)) > 0.7).astype(np.float32)
  smooth = 1e-5
  one_hot = np.clip(np.concatenate([1 - mask, mask], -1), smooth, 1 - smooth)
  p_t = (one_hot * probs).sum(-1) + smooth
  expected = np.mean(-(1 - p_t) ** 2 * np.log(p_t))
  np.testing.assert_allclose(draem.focal_loss(probs, mask, 2.0, smooth),
                             expected, rtol=1e-5)
  # gamma 0 and no smoothing: the cross-entropy of the true class.
  ce = -np.mean(np.log(np.where(mask[..., 0] > 0, probs[..., 1], probs[..., 0])))
  np.testing.assert_allclose(draem.focal_loss(probs, mask, 0.0, 0.0), ce,
                             rtol=1e-5)


def test_same_padded_ssim_is_the_reference_computation():
  """DRAEM's SSIM: 11x11 Gaussian (sigma 1.5) per channel, zero padding."""
  rng = np.random.default_rng(1)
  a = rng.random((2, 20, 24, 3)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
  g = np.exp(-(np.arange(11) - 5) ** 2 / (2 * 1.5 ** 2))
  window = np.outer(g, g) / g.sum() ** 2
  blur = lambda x: np.stack([[ndimage.correlate(  # pylint: disable=g-long-lambda
      x[n, ..., c].astype(np.float64), window, mode='constant')
      for c in range(3)] for n in range(2)]).transpose(0, 2, 3, 1)
  mu_a, mu_b = blur(a), blur(b)
  var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
  cov = blur(a * b) - mu_a * mu_b
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  expected = np.mean((2 * mu_a * mu_b + c1) * (2 * cov + c2) /
                     ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
  np.testing.assert_allclose(losses.ssim(a, b, padding='same'), expected,
                             rtol=1e-4)
  np.testing.assert_allclose(losses.ssim(a, a, padding='same'), 1.0, rtol=1e-5)


def test_noise_rotation_turns_about_the_centre():
  x = np.arange(81, dtype=np.float32).reshape(9, 9, 1)
  quarter = sample_ops.rotate(tf.constant(x), tf.constant(np.pi / 2)).numpy()
  np.testing.assert_allclose(quarter[..., 0], np.rot90(x[..., 0]), atol=1e-3)
  same = sample_ops.rotate(tf.constant(x), tf.constant(0.0)).numpy()
  np.testing.assert_allclose(same, x, atol=1e-4)


def _rotated_share(probability, samples=40):
  """Share of normal samples whose corners the image rotation blanked, with
  the middle kept (a constant image: a turn about the centre keeps the
  inscribed disc)."""
  params = pseudo_anomalies.AnomalyParams(
      methods=(draem.PERLIN_KIND,), normal_probability=1.0,
      settings=(('draem_image_rotation_probability', probability),))
  image = tf.fill([32, 32, 3], 0.5)
  turned = 0
  for i in range(samples):
    out = pseudo_anomalies.synthesize(
        image, image, tf.zeros([1, 32, 32], tf.int32), tf.ones([1], tf.int32),
        tf.constant([i, 3]), params)
    got = out['image'].numpy()
    np.testing.assert_array_equal(out['augmented'].numpy(), got)  # The target.
    np.testing.assert_allclose(got[12:20, 12:20], 0.5, atol=1e-5)
    corners = got[[0, 0, -1, -1], [0, -1, 0, -1]]
    turned += bool(np.any(corners < 0.25))
  return turned / samples


def test_images_are_rotated_first_as_the_reference_loader():
  """DRAEM rotates 30% of its images, normal ones too, before the anomaly;
  probability 0 keeps every image as it was."""
  assert _rotated_share(0.0) == 0.0
  assert _rotated_share(1.0) > 0.9
  assert 0.1 < _rotated_share(0.3) < 0.55


def test_pseudo_anomaly_blends_the_texture_inside_its_mask_only():
  params = pseudo_anomalies.AnomalyParams(methods=(draem.PERLIN_KIND,))
  image = tf.fill([64, 64, 3], 0.25)
  source = tf.fill([64, 64, 3], 0.75)
  areas = []
  for i in range(12):
    out, mask = draem_perlin.draem_perlin(image, source, tf.constant([i, 7]),
                                            params)
    out, mask = out.numpy(), mask.numpy()[..., 0]
    assert set(np.unique(mask)) <= {0.0, 1.0}
    np.testing.assert_allclose(out[mask == 0], 0.25, atol=1e-6)
    inside = out[mask == 1]
    if inside.size:  # One beta per sample, opacity 1 - beta in (0.2, 1].
      assert np.ptp(inside) < 1e-5 and 0.35 < inside.flat[0] <= 0.75 + 1e-6
    areas.append(mask.mean())
  # Noise in about [-1, 1] above 0.5: small to medium regions, some empty.
  assert 0.0 < np.mean(areas) < 0.3 and len(set(areas)) > 6, areas


def test_resume_is_bit_identical(tmp_path):
  config = small_config('draem')
  rng = np.random.default_rng(0)
  image = rng.random((4, 32, 32, 3)).astype(np.float32)
  mask = (rng.random((4, 32, 32, 1)) > 0.8).astype(np.float32)
  batch = {'image': image, 'augmented': np.where(mask > 0, 1 - image, image),
           'mask': mask}
  assert_resume_is_exact(config, batch, tmp_path)


def test_draem_with_fas_end_to_end():
  """draem + FAS (`method_runs`; train, evaluate, predict, StableHLO: the
  contract test): its maps find the tiny test split's holes and held-out
  pseudo-anomalies of its own kind, far above a random map."""
  config, workdir, _, info = method_run('draem')
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    report = json.load(f)
  # Measured: pixel AP 0.91 against a random map's 0.040, image AUROC 1.0.
  assert report['cas']['pixel_ap'] > 5 * info['chance'], report['cas']
  assert report['cas']['image_auroc'] >= 0.9, report['cas']
  assert report['coarse'] == 'draem'

  held_out = config.copy_and_resolve_references()
  held_out.seed = 12345  # Samples the run never drew.
  held_out.anomaly.normal_probability = 0.0
  stream = pipeline.train_dataset(pipeline.load_train_data(held_out, 'cas'),
                                  held_out, 'cas', batch_size=32)
  batch = next(stream.as_numpy_iterator())
  mesh = sharding.make_mesh()
  method = methods.get(config)
  state = trainer.restore_stage(config, workdir, 'cas', mesh)
  maps = np.asarray(method.anomaly_map(method.inference_variables(state),
                                       batch['augmented']))
  positive = batch['mask'] > 0.5
  ap = metrics.average_precision(maps.ravel(), positive.ravel())
  assert ap > 3 * positive.mean(), (ap, positive.mean())


def test_every_resize_mode_predicts_and_exports_with_the_reconstruction(
    tmp_path):
  """The squash run's weights in 'tile' (the whole image at once) and 'pad'
  modes: predict works, StableHLO and SavedModel give the live maps."""
  _, trained, _, _ = method_run('draem')
  rng = np.random.default_rng(0)
  # Tiles one by one share the whole-image program's networks (test_tiling).
  for mode, (h, w), whole in (('squash', (32, 32), 0), ('tile', (40, 52), 4096),
                             ('pad', (32, 20), 0)):
    model = tasad_jax.load(copy_in_mode(trained, str(tmp_path / f'{mode}{whole}'),
                                        mode, whole))
    images = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    live = model.predict(list(images))
    assert [m.shape for m in live['anomaly_maps']] == [(h, w)] * 2
    path = str(tmp_path / f'{mode}{whole}.stablehlo')
    export.export_stablehlo(model, path, h, w)
    with open(path, 'rb') as f:
      maps, scores = jax.export.deserialize(f.read()).call(
          images / np.float32(255.0))
    np.testing.assert_allclose(maps, np.stack(live['anomaly_maps']),
                               atol=1e-5, err_msg=mode)
    np.testing.assert_allclose(scores, live['scores'], atol=1e-5, err_msg=mode)
    if mode == 'squash':
      folder = str(tmp_path / 'saved_model')
      export.export_saved_model(model, folder)
      x = model.preprocess(list(images))[0]
      served = tf.saved_model.load(folder).signatures['serving_default'](
          images=tf.constant(x))
      np.testing.assert_allclose(served['anomaly_maps'].numpy(),
                                 np.asarray(model.runner(x)['tasad_map']),
                                 atol=1e-5)
