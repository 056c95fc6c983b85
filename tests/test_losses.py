"""SSIM and the stage losses."""

import jax
import jax.numpy as jnp
import numpy as np

from tasad_jax.core import losses


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
