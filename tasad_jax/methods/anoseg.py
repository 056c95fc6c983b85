"""AnoSeg (Song, Kong et al., arXiv 2110.03396, 2021) as a coarse stage.

From the paper's abstract and summary:

* Hard augmentation makes the training anomalies: the pseudo-anomaly kind
  `anoseg_hard` (`tasad_jax.anomalies`; rotated, quadrant-permuted,
  colour-jittered copy of the image pasted into a rectangle). Use it with
  `--config.anomaly.methods="('anoseg_hard',)"`; the method trains on any kind.
* Generator: a segmentation network whose input is the image with two
  coordinate channels (x and y in [-1, 1], CoordConv) concatenated; it maps
  it to an anomaly map in [0, 1] and, as extra outputs, a reconstruction of
  the image. Pixel loss of the map against the reference mask; masked
  reconstruction loss (L1, only outside the mask: the normal regions).
* Discriminator on (image, anomaly map) pairs: the real pair carries the
  reference mask, the fake one the predicted map.
* One jitted step updates the discriminator, then the generator.
* The map serves detection: the image score is the max of the mean-filtered
  map, as for TASAD.

Ours, where the abstract is silent (each a field of config.coarse.anoseg):
the generator is TASAD's encoder-decoder (`models.Segmenter`, 1 + 3 output
channels) at `width` (0: config.model.width); the discriminator a PatchGAN
(4x4 stride-2 convolutions, LeakyReLU 0.2, no normalisation) of `disc_width`;
pixel loss BCE (or L1), adversarial loss least squares (or BCE); loss weights
1 / 0.1 / 1; Adam (beta1 0.5) with lr 2e-4 for both networks.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tasad_jax import models, sharding, stage
from tasad_jax.errors import UserInputError
from tasad_jax.methods import base, registry
from tasad_jax.train_state import (Optimizer, TrainState, all_finite,
                                   finish_step, network_variables)


def coord_channels(n: int, height: int, width: int) -> jax.Array:
  """[n, H, W, 2]: x (columns) and y (rows), each linear from -1 to 1."""
  y = jnp.linspace(-1.0, 1.0, height)[:, None]
  x = jnp.linspace(-1.0, 1.0, width)[None, :]
  grid = jnp.stack([jnp.broadcast_to(x, (height, width)),
                    jnp.broadcast_to(y, (height, width))], axis=-1)
  return jnp.broadcast_to(grid, (n, height, width, 2))


class Discriminator(nn.Module):
  """PatchGAN on an (image, map) pair: one logit per patch."""
  width: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, maps: jax.Array) -> jax.Array:
    x = jnp.concatenate([images, maps], axis=-1).astype(self.dtype)
    for features in (self.width, 2 * self.width, 4 * self.width):
      x = nn.leaky_relu(nn.Conv(features, (4, 4), strides=2, padding=1,
                                dtype=self.dtype)(x), 0.2)
    return nn.Conv(1, (3, 3), padding=1, dtype=self.dtype)(x).astype(jnp.float32)


def _adversarial(logits: jax.Array, real: bool, kind: str) -> jax.Array:
  target = jnp.ones_like(logits) if real else jnp.zeros_like(logits)
  if kind == 'lsgan':
    return jnp.mean(jnp.square(logits - target))
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, target))


@registry.register
class AnoSeg(base.CoarseMethod):
  """AnoSeg: coordinate-channel segmenter, adversarial on (image, map) pairs."""

  method = 'anoseg'
  defaults = {
      'width': 0,  # Generator width (0: config.model.width).
      'disc_width': 32,  # Discriminator width.
      'coord_channels': True,  # Concatenate x, y in [-1, 1] to the input (CoordConv).
      'pixel_loss': 'bce',  # 'bce' or 'l1' of the map against the reference mask.
      'adversarial_loss': 'lsgan',  # 'lsgan' or 'bce'.
      'pixel_weight': 1.0,  # Weight of the pixel loss.
      'adversarial_weight': 0.1,  # Weight of the generator's adversarial loss.
      'reconstruction_weight': 1.0,  # Weight of the masked (normal-region) reconstruction L1.
      'learning_rate': 2e-4,  # Adam lr of generator and discriminator.
      'beta1': 0.5,  # Adam beta1 (GAN practice).
  }

  def __init__(self, config):
    super().__init__(config)
    a = self.settings
    dtype = jnp.dtype(config.model.dtype)
    self.generator = models.Segmenter(width=a.width or config.model.width,
                                      dtype=dtype, out_channels=4)
    self.discriminator = Discriminator(a.disc_width, dtype)
    tx = optax.adam(a.learning_rate, b1=a.beta1)
    self.optimizers = [Optimizer('generator', ('generator',), tx),
                       Optimizer('discriminator', ('discriminator',), tx)]

  def check_config(self) -> None:
    a = self.settings
    if a.pixel_loss not in ('bce', 'l1'):
      raise UserInputError(f'config.coarse.anoseg.pixel_loss: {a.pixel_loss!r}; '
                           "use 'bce' or 'l1'")
    if a.adversarial_loss not in ('lsgan', 'bce'):
      raise UserInputError('config.coarse.anoseg.adversarial_loss: '
                           f"{a.adversarial_loss!r}; use 'lsgan' or 'bce'")
    size = self.config.data.image_size
    if size % 8:
      raise UserInputError(f'config.data.image_size: {size} must be a multiple '
                           'of 8 for anoseg (discriminator strides)')

  def _inputs(self, images: jax.Array) -> jax.Array:
    if not self.settings.coord_channels:
      return images
    n, h, w, _ = images.shape
    return jnp.concatenate([images, coord_channels(n, h, w)], axis=-1)

  def create_state(self, mesh) -> TrainState:
    size = self.config.data.image_size
    k_gen, k_disc = jax.random.split(self.init_key())
    x = jnp.zeros((1, size, size, 3))

    def init():
      return {'generator': self.generator.init(k_gen, self._inputs(x)),
              'discriminator': self.discriminator.init(
                  k_disc, x, jnp.zeros((1, size, size, 1)))}

    state = TrainState.create(jax.jit(init)(), self.optimizers)
    return jax.device_put(state, sharding.replicated(mesh))

  def _generate(self, variables, images, train: bool):
    """(map logits [N, S, S, 1], reconstruction [N, S, S, 3], new stats)."""
    out = self.generator.apply(variables, self._inputs(images), train=train,
                               mutable=['batch_stats'] if train else False)
    out, updates = out if train else (out, {})
    return out[..., :1], jax.nn.sigmoid(out[..., 1:]), updates.get('batch_stats')

  def _step(self, state: TrainState, batch, rng, context):
    """Discriminator update on (image, mask) vs (image, map), then generator."""
    del rng, context
    a = self.settings
    images, mask = batch['augmented'], batch['mask']
    gen_vars = state.network('generator')
    logits, _, _ = self._generate(gen_vars, images, train=True)
    fake_map = jax.lax.stop_gradient(jax.nn.sigmoid(logits))

    def disc_loss(params):
      d = {'params': params}
      return 0.5 * (
          _adversarial(self.discriminator.apply(d, images, mask), True,
                       a.adversarial_loss) +
          _adversarial(self.discriminator.apply(d, images, fake_map), False,
                       a.adversarial_loss))

    d_loss, d_grads = jax.value_and_grad(disc_loss)(
        state.params['discriminator'])
    updated = state.apply_gradients('discriminator', {'discriminator': d_grads})
    disc = {'params': updated.params['discriminator']}

    def gen_loss(params):
      logits, recon, stats = self._generate(
          {'params': params, 'batch_stats': gen_vars['batch_stats']}, images,
          train=True)
      if a.pixel_loss == 'bce':
        pixel = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, mask))
      else:
        pixel = jnp.mean(jnp.abs(jax.nn.sigmoid(logits) - mask))
      adversarial = _adversarial(self.discriminator.apply(
          disc, images, jax.nn.sigmoid(logits)), True, a.adversarial_loss)
      normal = 1.0 - mask
      reconstruction = jnp.sum(jnp.abs(recon - images) * normal) / jnp.maximum(
          3.0 * jnp.sum(normal), 1.0)
      total = (a.pixel_weight * pixel + a.adversarial_weight * adversarial +
               a.reconstruction_weight * reconstruction)
      return total, (stats, pixel, adversarial, reconstruction)

    (g_loss, (stats, pixel, adversarial, reconstruction)), g_grads = (
        jax.value_and_grad(gen_loss, has_aux=True)(state.params['generator']))
    updated = updated.apply_gradients('generator', {'generator': g_grads},
                                      {'generator': stats})
    finite = all_finite(g_loss, d_loss, g_grads, d_grads)
    return finish_step(state, updated, finite), {
        'loss': g_loss, 'pixel': pixel, 'adversarial': adversarial,
        'reconstruction': reconstruction, 'discriminator': d_loss}, finite

  def phases(self) -> list[stage.Phase]:
    return [stage.Phase(0, self._step, 'adversarial')]

  def inference_variables(self, state: TrainState) -> dict:
    """The generator alone: the discriminator never reaches inference."""
    return {'generator': state.network('generator')}

  def anomaly_map(self, variables, images: jax.Array) -> jax.Array:
    logits, _, _ = self._generate(_generator(variables), images, train=False)
    return jax.nn.sigmoid(logits)


def _generator(variables: dict) -> dict:
  """The generator's flax variables, from inference or full-state variables."""
  if 'generator' in variables:
    return variables['generator']
  return network_variables(variables, 'generator')
