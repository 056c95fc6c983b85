"""SSIM and the stage losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasad_jax.config import saved, schema
from tasad_jax.core import losses, sharding, train_state
from tasad_jax.fine import stages
from tasad_jax.runtime.errors import UserInputError


def _mask():
  m = np.zeros((2, 32, 32, 1), np.float32)
  m[:, 8:20, 10:24] = 1.0
  return jnp.asarray(m)


def test_ssim_of_identical_maps_is_one():
  m = _mask()
  assert abs(float(losses.ssim(m, m)) - 1.0) < 1e-5
  loss, parts = losses.cas_loss(m, m)
  assert abs(float(loss)) < 1e-5 and float(parts['mse']) == 0.0


def test_ssim_falls_as_noise_grows():
  m = _mask()
  values = []
  for sigma in (0.0, 0.05, 0.2, 0.5):
    noise = sigma * jax.random.normal(jax.random.key(1), m.shape)
    values.append(float(losses.ssim(m + noise, m)))
  assert all(a > b for a, b in zip(values, values[1:])), values
  assert values[-1] < 0.5


def test_mse_and_fas_loss():
  m = _mask()
  pred = jnp.zeros_like(m)
  expected = float(np.mean(np.asarray(m) ** 2))
  assert abs(float(losses.mse(pred, m)) - expected) < 1e-7
  loss, parts = losses.fas_loss(pred, m)
  assert float(loss) == float(parts['mse'])
  grad = jax.grad(lambda p: losses.cas_loss(p, m)[0])(pred)
  assert bool(jnp.isfinite(grad).all()) and float(jnp.abs(grad).sum()) > 0


def _logits_and_mask(seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 3, (2, 16, 16, 1)).astype(np.float32)
  mask = (rng.random((2, 16, 16, 1)) < 0.05).astype(np.float32)
  return logits, mask


def _reference_focal(logits, mask, gamma, alpha):
  """torchvision.ops.sigmoid_focal_loss, mean reduction, in float64."""
  x, y = logits.astype(np.float64), mask.astype(np.float64)
  p = 1 / (1 + np.exp(-x))
  ce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
  p_t = p * y + (1 - p) * (1 - y)
  loss = ce * (1 - p_t) ** gamma
  if alpha >= 0:
    loss *= alpha * y + (1 - alpha) * (1 - y)
  return loss.mean()


@pytest.mark.parametrize('gamma,alpha', [(2.0, -1.0), (2.0, 0.25), (0.0, -1.0)])
def test_focal_loss_matches_the_reference_formula(gamma, alpha):
  logits, mask = _logits_and_mask()
  got = float(losses.focal(jnp.asarray(logits), jnp.asarray(mask), gamma, alpha))
  np.testing.assert_allclose(got, _reference_focal(logits, mask, gamma, alpha),
                             rtol=1e-5)
  if gamma == 0.0 and alpha < 0:  # Focal with gamma 0 is the cross-entropy.
    np.testing.assert_allclose(
        got, float(losses.bce(jnp.asarray(logits), jnp.asarray(mask))),
        rtol=1e-6)


def test_soft_dice_per_image():
  p = np.zeros((2, 8, 8, 1), np.float32)
  m = np.zeros_like(p)
  m[0, :4] = 1.0
  p[0, :2] = 1.0  # Image 0: half the defect found; image 1: empty, empty.
  got = float(losses.soft_dice(jnp.asarray(p), jnp.asarray(m), smooth=1.0))
  image0 = 1 - (2 * 16 + 1) / (16 + 32 + 1)
  np.testing.assert_allclose(got, (image0 + 0.0) / 2, rtol=1e-6)


def test_paper_losses_are_unchanged_and_map_the_raw_output():
  m = _mask()
  pred = m * 0.7 + 0.1 * jax.random.normal(jax.random.key(0), m.shape)
  loss, parts = losses.cas_loss(pred, m)
  assert float(loss) == float(losses.mse(pred, m) + (1.0 - losses.ssim(pred, m)))
  assert set(parts) == {'mse', 'ssim'}
  assert not losses.cas_loss.on_logits and losses.cas_loss.to_map(pred) is pred


def test_a_logit_loss_makes_the_map_a_sigmoid_and_sums_weighted_terms():
  logits, mask = _logits_and_mask(1)
  x, y = jnp.asarray(logits), jnp.asarray(mask)
  loss_fn = losses.SegmentationLoss(('focal', 'dice', 'mse'), (1.0, 0.5, 2.0))
  assert loss_fn.on_logits
  np.testing.assert_allclose(loss_fn.to_map(x), jax.nn.sigmoid(x))
  loss, parts = loss_fn(x, y)
  p = jax.nn.sigmoid(x)
  expected = (losses.focal(x, y) + 0.5 * losses.soft_dice(p, y)
              + 2.0 * losses.mse(p, y))
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)
  assert set(parts) == {'focal', 'dice', 'mse'}


@pytest.mark.parametrize('field,value,named', [
    ('cas_loss', ('l1',), 'config.model.cas_loss:'),
    ('fas_loss', ('mse', 'mse'), 'config.model.fas_loss:'),
    ('fas_loss', (), 'config.model.fas_loss:'),
    ('cas_loss_weights', (1.0,), 'config.model.cas_loss_weights:'),
    ('cas_loss_weights', ('one', 'two'), 'config.model.cas_loss_weights:'),
    ('fas_loss_weights', (-1.0,), 'config.model.fas_loss_weights:'),
    ('focal_gamma', -1.0, 'config.model.focal_gamma:'),
    ('focal_alpha', 2.0, 'config.model.focal_alpha:'),
])
def test_bad_loss_settings_are_one_line_naming_the_field(tiny_config, field,
                                                         value, named):
  tiny_config.model[field] = value
  found = schema.problems(tiny_config, schema.PREDICT)
  assert len(found) == 1 and found[0].startswith(named), found


def test_both_stages_map_through_their_loss(tiny_config):
  """With logit losses the coarse and fine maps (what thresholds, seeds,
  export and the predictor see) are the sigmoids of the networks' outputs."""
  tiny_config.model.cas_loss = ('focal', 'dice')
  tiny_config.model.fas_loss = ('bce',)
  fine = stages.build_stage(tiny_config, 'fas')
  mesh = sharding.make_mesh()
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  coarse_vars = fine.coarse.inference_variables(fine.coarse.create_state(mesh))
  fine_vars = fine.inference_variables(fine.create_state(mesh))
  raw = fine.coarse.model.apply(
      train_state.network_variables(coarse_vars, 'segmenter'), x, train=False)
  np.testing.assert_allclose(fine.coarse.anomaly_map(coarse_vars, x),
                             jax.nn.sigmoid(raw), rtol=1e-6)
  np.testing.assert_allclose(fine.apply(fine_vars, x), jax.nn.sigmoid(
      fine.model.apply(fine_vars, x, train=False)), rtol=1e-6)


def test_a_workdir_is_read_with_the_map_it_was_trained_for(tiny_config,
                                                           tiny_workdir):
  """A workdir trained on raw maps refuses a logit loss (its maps would be
  read as sigmoids), in one line naming the field; other terms are fine."""
  tiny_config.model.cas_loss = ('focal',)
  with pytest.raises(UserInputError, match=r'^config\.model\.cas_loss: .*raw'):
    saved.check_matches(tiny_config, tiny_workdir)
  tiny_config.model.cas_loss = ('mse',)
  tiny_config.model.fas_loss = ('mse', 'ssim')
  saved.check_matches(tiny_config, tiny_workdir)
