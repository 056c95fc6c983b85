"""AnoSeg (Song, Kong et al., arXiv 2110.03396, 2021) as a coarse stage.

What the paper's abstract gives, and what we chose where it is silent (marked
"ours"; every choice is a field of config.coarse.anoseg):

* Hard augmentation: synthetic anomalies with reference masks made from the
  normal image itself, AnoSeg's own pseudo-anomaly kind `anoseg_hard`
  (`tasad_jax.methods.anoseg_hard`; its settings `HARD_AUGMENTATION`): a copy rotated by 90/180/270 degrees, its quadrants
  permuted (probability 0.5, ours), strongly colour-jittered, pasted inside a
  random rectangle (ours: a rectangle, not a Perlin region), whose sides are
  10-50% of the image's (ours). The stream's kinds are config.anomaly's; the
  paper's setting is `config.anomaly.coarse_methods=('anoseg_hard',)`.
* Generator: the image with two coordinate channels (x and y in [-1, 1],
  CoordConv) concatenated to it, through TASAD's encoder-decoder (ours: the
  project's `models.Segmenter`, config.model's width, skip, levels and
  widths) with 4 output channels: one anomaly-map logit (map = sigmoid, in
  [0, 1]) and an RGB reconstruction (sigmoid).
* Losses of the generator: pixel-wise loss of the map against the reference
  mask (`pixel_loss`: BCE (ours, default) or L1), adversarial loss through the
  discriminator (`adversarial_loss`: least squares (ours, default) or
  non-saturating BCE), and a masked L1 reconstruction of the clean image, only
  outside the mask; weighted by `*_weight`.
* Discriminator (ours: a PatchGAN of `disc_layers` 4x4 stride-2 convs with
  leaky ReLU, no normalisation) on (image, map) pairs: real = (input image,
  reference mask), fake = (input image, predicted map).
* One step updates the discriminator on the generator's current maps, then
  the generator against the updated discriminator (the same forward pass).
  Adam (b1 = `adam_b1`, ours 0.5) with config.train's decay schedule.
* Image score: from the map; max of the 21x21 mean-filtered map (ours, as
  TASAD) or the mean of the top-k values (`score`).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tasad_jax.models import segmenter
from tasad_jax.core import scoring, sharding, stage
from tasad_jax.runtime.errors import UserInputError
from tasad_jax.methods import base, registry
from tasad_jax.models import segmenter_stage
from tasad_jax.core.train_state import (Optimizer, TrainState, all_finite,
                                        finish_step, lr_schedule,
                                        network_variables)


def coord_channels(n: int, h: int, w: int, dtype=jnp.float32) -> jax.Array:
  """CoordConv channels [n, h, w, 2]: x (across the width) then y (down the
  height), each linearly from -1 at the first pixel to 1 at the last."""
  xs = jnp.linspace(-1.0, 1.0, w, dtype=dtype)
  ys = jnp.linspace(-1.0, 1.0, h, dtype=dtype)
  grid = jnp.stack([jnp.broadcast_to(xs[None, :], (h, w)),
                    jnp.broadcast_to(ys[:, None], (h, w))], axis=-1)
  return jnp.broadcast_to(grid[None], (n, h, w, 2))


class Generator(nn.Module):
  """Image (+ coordinates) -> (map logits [N, H, W, 1], reconstruction
  [N, H, W, 3] in [0, 1]); `skip`, `levels`, `widths` are the segmenter's
  (config.model's)."""
  width: int = 128
  coords: bool = True
  dtype: Any = jnp.float32
  skip: str = 'none'
  levels: int = 2
  widths: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False):
    if self.coords:
      n, h, w, _ = x.shape
      x = jnp.concatenate([x, coord_channels(n, h, w, x.dtype)], axis=-1)
    out = segmenter.Segmenter(self.width, self.dtype, out_channels=4,
                              skip=self.skip, levels=self.levels,
                              widths=self.widths, name='segmenter')(x, train)
    return out[..., :1], jax.nn.sigmoid(out[..., 1:])


class Discriminator(nn.Module):
  """PatchGAN on concat(image, map): one logit per patch."""
  width: int = 32
  layers: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, amap: jax.Array) -> jax.Array:
    x = jnp.concatenate([image, amap], axis=-1).astype(self.dtype)
    for i in range(self.layers):
      x = nn.Conv(self.width * 2 ** i, (4, 4), strides=(2, 2), dtype=self.dtype,
                  kernel_init=nn.initializers.normal(0.02))(x)
      x = nn.leaky_relu(x, 0.2)
    x = nn.Conv(1, (3, 3), dtype=self.dtype,
                kernel_init=nn.initializers.normal(0.02))(x)
    return x.astype(jnp.float32)


def pixel_loss(logits: jax.Array, mask: jax.Array, kind: str) -> jax.Array:
  """Mean BCE (from logits) or L1 (of the sigmoid map) against the mask."""
  if kind == 'bce':
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, mask))
  return jnp.mean(jnp.abs(jax.nn.sigmoid(logits) - mask))


def discriminator_loss(real: jax.Array, fake: jax.Array, kind: str) -> jax.Array:
  """The discriminator's loss on its real and fake patch logits."""
  if kind == 'lsgan':
    return 0.5 * (jnp.mean(jnp.square(real - 1.0)) + jnp.mean(jnp.square(fake)))
  return 0.5 * (jnp.mean(optax.sigmoid_binary_cross_entropy(real, jnp.ones_like(real)))
                + jnp.mean(optax.sigmoid_binary_cross_entropy(fake, jnp.zeros_like(fake))))


def generator_adversarial_loss(fake: jax.Array, kind: str) -> jax.Array:
  """The generator's adversarial loss: its maps should be judged real."""
  if kind == 'lsgan':
    return jnp.mean(jnp.square(fake - 1.0))
  return jnp.mean(optax.sigmoid_binary_cross_entropy(fake, jnp.ones_like(fake)))


def masked_reconstruction_loss(reconstruction: jax.Array, image: jax.Array,
                               mask: jax.Array) -> jax.Array:
  """Mean L1 between reconstruction and image over the pixels outside the mask."""
  normal = 1.0 - mask
  total = jnp.sum(jnp.abs(reconstruction - image) * normal)
  return total / jnp.maximum(3.0 * jnp.sum(normal), 1.0)


HARD_AUGMENTATION_KIND = 'anoseg_hard'
# The hard augmentation's settings: fields of config.anomaly (their paths),
# declared here with their defaults.
HARD_AUGMENTATION = {
    'anoseg_size_range': (0.1, 0.5),  # anoseg_hard: box sides, fractions of the image's (ours).
    'anoseg_rotations': (90, 180, 270),  # anoseg_hard: rotations of the copy, degrees.
    'anoseg_permute_probability': 0.5,  # anoseg_hard: chance to permute the copy's quadrants.
    'anoseg_brightness': 0.4,  # anoseg_hard: brightness shift up to +-this (ours).
    'anoseg_contrast_range': (0.4, 1.6),  # anoseg_hard: contrast factor (ours).
    'anoseg_saturation_range': (0.0, 2.0),  # anoseg_hard: saturation factor (ours).
    'anoseg_hue': 0.3,  # anoseg_hard: hue shift up to +-this of a turn (ours).
}


@registry.register
class AnoSeg(base.CoarseMethod):
  """AnoSeg: a segmentation network trained on hard augmentations with
  pixel-wise, adversarial and masked reconstruction losses."""

  method = 'anoseg'
  defaults = {
      'pixel_loss': 'bce',  # Map vs reference mask: 'bce' (ours) or 'l1'.
      'adversarial_loss': 'lsgan',  # 'lsgan' (least squares, ours) or 'bce' (non-saturating).
      'pixel_weight': 1.0,  # Weight of the pixel-wise loss.
      'adversarial_weight': 0.1,  # Weight of the generator's adversarial loss (ours).
      'reconstruction_weight': 1.0,  # Weight of the L1 reconstruction outside the mask.
      'coord_channels': True,  # Concatenate x, y in [-1, 1] to the generator input.
      'disc_width': 32,  # PatchGAN discriminator: channels of its first conv (ours).
      'disc_layers': 3,  # PatchGAN: number of stride-2 4x4 convs (ours).
      'gen_learning_rate': 1e-4,  # Adam lr of the generator (config.train's decay).
      'disc_learning_rate': 1e-4,  # Adam lr of the discriminator (same decay).
      'adam_b1': 0.5,  # Adam beta1 of both networks (GAN practice, ours).
      'score': 'mean_filter_max',  # Image score: 'mean_filter_max' (as TASAD) or 'top_k'.
      'top_k': 100,  # For score='top_k': mean of the k largest map values.
  }
  pseudo_anomaly_kinds = {HARD_AUGMENTATION_KIND: 'tasad_jax.methods.anoseg_hard'}
  anomaly_defaults = HARD_AUGMENTATION

  def __init__(self, config):
    super().__init__(config)
    s = self.settings
    dtype = jnp.dtype(config.model.dtype)
    m = config.model
    self.generator = Generator(m.width, bool(s.coord_channels), dtype, m.skip,
                               m.levels, segmenter_stage.widths(config))
    self.discriminator = Discriminator(s.disc_width, s.disc_layers, dtype)

  def check_config(self) -> None:
    segmenter_stage.check_segmenter_config(self.config)
    s, field = self.settings, 'config.coarse.anoseg.'
    choices = {'pixel_loss': ('bce', 'l1'), 'adversarial_loss': ('lsgan', 'bce'),
               'score': ('mean_filter_max', 'top_k')}
    for name, allowed in choices.items():
      if s[name] not in allowed:
        raise UserInputError(f'{field}{name}: {s[name]!r}; use one of {allowed}')
    for name in ('pixel_weight', 'adversarial_weight', 'reconstruction_weight'):
      if not s[name] >= 0:
        raise UserInputError(f'{field}{name}: must be >= 0, got {s[name]}')
    for name in ('disc_width', 'disc_layers', 'top_k'):
      if s[name] < 1:
        raise UserInputError(f'{field}{name}: must be >= 1, got {s[name]}')

  # Model.

  def create_state(self, mesh) -> TrainState:
    size = self.config.data.image_size
    x, m = jnp.zeros((1, size, size, 3)), jnp.zeros((1, size, size, 1))

    def init(key):
      k_gen, k_disc = jax.random.split(key)
      return {'gen': self.generator.init(k_gen, x, train=False),
              'disc': self.discriminator.init(k_disc, x, m)}

    variables = stage.jit_init(init)(self.init_key())
    s, t = self.settings, self.config.train

    def adam(lr):
      return optax.adam(lr_schedule(t, lr, self.num_steps), b1=s.adam_b1)
    state = TrainState.create(
        networks=variables,
        optimizers=[Optimizer('disc', ('disc',), adam(s.disc_learning_rate)),
                    Optimizer('gen', ('gen',), adam(s.gen_learning_rate))])
    return jax.device_put(state, sharding.replicated(mesh))

  def _generate(self, variables, images):
    return self.generator.apply(variables, images, train=False)

  def anomaly_map(self, variables, images: jax.Array) -> jax.Array:
    logits, _ = self._generate(network_variables(variables, 'gen'), images)
    return jax.nn.sigmoid(logits)

  def image_score(self, maps: jax.Array, outputs=None, valid=None
                  ) -> jax.Array:
    del outputs
    if self.settings.score == 'top_k':
      return scoring.top_k_mean(maps, self.settings.top_k, valid)
    return scoring.max_of_mean_filter(maps, self.score_window, valid)

  def score_reduction(self):
    if self.settings.score == 'top_k':
      return scoring.top_k_reduction(self.settings.top_k)
    return scoring.mean_filter_reduction(self.score_window)

  def whole_image(self) -> bool:
    """Not with coordinate channels: they span the network's input."""
    return not self.settings.coord_channels

  def inference_variables(self, state: TrainState) -> dict:
    """The generator only (the discriminator is for training)."""
    gen = state.network('gen')
    return {'params': {'gen': gen['params']},
            'batch_stats': {'gen': gen['batch_stats']}}

  # Training.

  def batch_keys(self) -> tuple[str, ...]:
    return ('image', 'augmented', 'mask')

  def _step(self, state: TrainState, batch, rng, context):
    """The discriminator on the current maps, then the generator."""
    del rng, context
    s = self.settings
    x, mask, clean = batch['augmented'], batch['mask'], batch['image']
    stats = state.batch_stats['gen']

    def forward(params):
      outputs, updates = self.generator.apply(
          {'params': params, 'batch_stats': stats}, x, train=True,
          mutable=['batch_stats'])
      return outputs, updates['batch_stats']

    (logits, reconstruction), backward, new_stats = jax.vjp(
        forward, state.params['gen'], has_aux=True)
    fake_map = jax.lax.stop_gradient(jax.nn.sigmoid(logits))

    def disc_loss_fn(params):
      real = self.discriminator.apply({'params': params}, x, mask)
      fake = self.discriminator.apply({'params': params}, x, fake_map)
      return discriminator_loss(real, fake, s.adversarial_loss)

    d_loss, d_grads = jax.value_and_grad(disc_loss_fn)(state.params['disc'])
    updated = state.apply_gradients('disc', {'disc': d_grads})
    disc_params = updated.params['disc']

    def gen_loss_fn(outputs):
      logits, reconstruction = outputs
      pixel = pixel_loss(logits, mask, s.pixel_loss)
      adversarial = generator_adversarial_loss(self.discriminator.apply(
          {'params': disc_params}, x, jax.nn.sigmoid(logits)), s.adversarial_loss)
      recon = masked_reconstruction_loss(reconstruction, clean, mask)
      total = (s.pixel_weight * pixel + s.adversarial_weight * adversarial
               + s.reconstruction_weight * recon)
      return total, {'pixel': pixel, 'adversarial': adversarial,
                     'reconstruction': recon}

    (g_loss, parts), output_grads = jax.value_and_grad(gen_loss_fn, has_aux=True)(
        (logits, reconstruction))
    (g_grads,) = backward(output_grads)
    updated = updated.apply_gradients('gen', {'gen': g_grads}, {'gen': new_stats})
    finite = all_finite(d_loss, g_loss, d_grads, g_grads)
    return finish_step(state, updated, finite), {
        'loss': g_loss, 'disc_loss': d_loss, **parts}, finite

  def phases(self) -> list[stage.Phase]:
    return [stage.Phase(0, self._step, 'anoseg')]

  def summary_images(self, state, batch, context, mesh):
    images = sharding.to_global({'x': batch['augmented']}, mesh)['x']
    maps, recon = (sharding.to_local(a) for a in _forward(self, mesh)(
        state.network('gen'), images))
    n = min(4, len(batch['mask']))
    return {'input': np.asarray(batch['augmented'][:n]),
            'mask': np.asarray(batch['mask'][:n]), 'prediction': maps[:n],
            'reconstruction': recon[:n]}


@functools.lru_cache(maxsize=4)
def _forward(method: AnoSeg, mesh):
  def fn(variables, images):
    logits, recon = method._generate(variables, images)  # pylint: disable=protected-access
    return jax.nn.sigmoid(logits), recon
  return stage.make_predict(fn, mesh)
