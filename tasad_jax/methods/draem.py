"""DRAEM (Zavrtanik, Kristan, Skočaj, ICCV 2021) as a coarse stage.

Checked against the reference code (VitjanZ/DRAEM):

* Reconstructive subnetwork: an encoder-decoder without skips, base width
  `recon_width` (w; 128 in the paper). Encoder blocks [w, w], [2w, 2w],
  [4w, 4w], [8w, 8w], [8w, 8w] with a 2x2 max-pool between them; decoder
  four times (bilinear x2, align_corners=True, then a conv) to 8w, 4w, 2w, w,
  each followed by two convs ([8w, 4w], [4w, 2w], [2w, w], [w, w]); a 3x3
  conv to 3 channels, no activation. Every other conv is 3x3 + BatchNorm +
  ReLU. 69,048,579 parameters at w = 128.
* Discriminative subnetwork: a U-Net of base width `disc_width` (64) on the
  reconstruction and the input concatenated (6 channels): encoder blocks
  [w, w], [2w, 2w], [4w, 4w], [8w, 8w], [8w, 8w], [8w, 8w] with five
  max-pools; five up-steps (bilinear x2, a conv to 8w, 4w, 2w, w, w), each
  concatenated with the encoder block of its size and two convs; a 3x3 conv
  to two logits (normal, anomalous). 28,374,146 parameters at w = 64;
  97,422,725 in all (the paper's 97.4M; `parameter_counts`, checked in the
  tests against a count of the reference's layers).
* One jitted step trains both: L2 + (1 - SSIM) of the reconstruction against
  the clean image (SSIM 11x11, sigma 1.5, zero padding, over the 3 channels)
  plus the focal loss (gamma 2, label smoothing 1e-5) of the softmax against
  the mask. The focal gradient reaches the reconstruction (no stop-gradient,
  as the reference). Adam, lr `learning_rate` (1e-4) under config.train's
  schedule (x0.2 at 80% and 90%: the paper's).
* Pseudo-anomalies: the method's own kind `draem_perlin`
  (`tasad_jax.methods.draem_perlin`): Perlin noise, rotated, thresholded at
  0.5, blends a colour-augmented texture with opacity 1 - beta; with
  config.anomaly.normal_probability 0.5 (DRAEM's) half the samples stay
  normal. As the reference, 30% of the images (normal ones too) are first
  rotated by up to 90 degrees (`config.anomaly.draem_image_rotation_probability`;
  0 keeps the orientation, for products where it matters or whose defects
  look like the zero-filled corners). The paper's
  setting is `config.anomaly.coarse_methods=('draem_perlin',)`.
* Map: the anomaly-class softmax probability. Image score: the maximum of
  its mean-filtered map (`config.model.score_window`, 21 at 256² as DRAEM's).

Ours: the texture's colour augmentation is, by default, the project's (3 of
TASAD's 4 ops); DRAEM's 3 of imgaug's 10 is one flag away:
`config.anomaly.colour_ops=colour_ops.DRAEM_COLOUR_OPS` (README).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tasad_jax.core import losses, sharding, stage
from tasad_jax.core.train_state import (Optimizer, TrainState, all_finite,
                                        finish_step, lr_schedule,
                                        split_networks)
from tasad_jax.methods import base, registry
from tasad_jax.models.segmenter import (ConvBNReLU, max_pool_2x2,
                                        output_conv, upsample2x_align_corners)
from tasad_jax.runtime.errors import UserInputError

RECONSTRUCTIVE, DISCRIMINATIVE = 'reconstructive', 'discriminative'
PERLIN_KIND = 'draem_perlin'
# Settings of the kind, fields of config.anomaly (`methods.draem_perlin`).
PERLIN_SETTINGS = {
    'draem_threshold': 0.5,  # draem_perlin: mask = rotated Perlin noise > this (DRAEM's 0.5).
    'draem_noise_rotation': 90.0,  # draem_perlin: noise rotated by an angle uniform in +-this (degrees).
    'draem_image_rotation_probability': 0.3,  # draem_perlin: share of images (normal too) rotated first (DRAEM's 0.3).
    'draem_image_rotation': 90.0,  # draem_perlin: those turned by an angle uniform in +-this (degrees; zeros outside).
}


def _blocks(x: jax.Array, features: tuple[int, ...], train: bool, dtype,
            name: str) -> jax.Array:
  for i, f in enumerate(features):
    x = ConvBNReLU(f, dtype=dtype, name=f'{name}_{i}')(x, train)
  return x


def _encoder(x: jax.Array, multiples: tuple[int, ...], w: int, train: bool,
             dtype) -> list[jax.Array]:
  """Blocks of two convs (multiple * w channels) with a 2x2 max-pool
  before every block but the first; the output of each block."""
  outputs = []
  for i, m in enumerate(multiples):
    if i:
      x = max_pool_2x2(x)
    x = _blocks(x, (m * w, m * w), train, dtype, f'enc{i}')
    outputs.append(x)
  return outputs


class Reconstructive(nn.Module):
  """DRAEM's reconstructive subnetwork: images [N, H, W, 3] (H, W multiples
  of 16) to reconstructions of the same shape."""
  width: int = 128
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    w, dt = self.width, self.dtype
    x = _encoder(x.astype(dt), (1, 2, 4, 8, 8), w, train, dt)[-1]
    for i, (up, a, b) in enumerate(((8, 8, 4), (4, 4, 2), (2, 2, 1),
                                    (1, 1, 1))):
      x = upsample2x_align_corners(x)
      x = _blocks(x, (up * w, a * w, b * w), train, dt, f'dec{i}')
    return output_conv(3, w, dt, 'out')(x).astype(jnp.float32)


class Discriminative(nn.Module):
  """DRAEM's discriminative U-Net: [N, H, W, C] (H, W multiples of 32) to
  two-class logits [N, H, W, 2]."""
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    w, dt = self.width, self.dtype
    skips = _encoder(x.astype(dt), (1, 2, 4, 8, 8, 8), w, train, dt)
    x = skips[-1]
    for i, m in enumerate((8, 4, 2, 1, 1)):
      x = _blocks(upsample2x_align_corners(x), (m * w,), train, dt, f'up{i}')
      x = jnp.concatenate([x, skips[-2 - i]], axis=-1)
      x = _blocks(x, (m * w, m * w), train, dt, f'dec{i}')
    return output_conv(2, w, dt, 'out')(x).astype(jnp.float32)


def focal_loss(probabilities: jax.Array, mask: jax.Array, gamma: float,
               smooth: float) -> jax.Array:
  """DRAEM's focal loss of two-class probabilities [..., 2] against a {0, 1}
  mask [..., 1]: mean of -(1 - p_t)^gamma log p_t, with p_t the probability
  of the true class against a one-hot clipped to [smooth, 1 - smooth], plus
  smooth (the reference's formula)."""
  target = jnp.concatenate([1.0 - mask, mask], axis=-1)
  target = jnp.clip(target, smooth, 1.0 - smooth)
  p_t = jnp.sum(target * probabilities, axis=-1) + smooth
  return jnp.mean(-((1.0 - p_t) ** gamma) * jnp.log(p_t))


def parameter_counts(recon_width: int, disc_width: int) -> dict[str, int]:
  """Parameters of both subnetworks at these widths (traced, not run)."""

  def count(module: nn.Module, channels: int) -> int:
    x = jax.ShapeDtypeStruct((1, 32, 32, channels), jnp.float32)
    params = jax.eval_shape(module.init, jax.random.key(0), x)['params']
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))

  return {RECONSTRUCTIVE: count(Reconstructive(recon_width), 3),
          DISCRIMINATIVE: count(Discriminative(disc_width), 6)}


@registry.register
class Draem(base.CoarseMethod):
  """DRAEM: reconstruction, then segmentation of input and reconstruction."""

  method = 'draem'
  defaults = {
      'recon_width': 128,  # Base width of the reconstructive subnetwork (paper 128).
      'disc_width': 64,  # Base width of the discriminative U-Net (paper 64).
      'learning_rate': 1e-4,  # Adam, both subnetworks, under config.train's schedule (paper 1e-4).
      'focal_gamma': 2.0,  # Focal loss exponent (paper 2).
      'focal_smooth': 1e-5,  # Focal loss label smoothing (reference code 1e-5).
      'ssim_weight': 1.0,  # Weight of 1 - SSIM of the reconstruction (paper 1).
      'focal_weight': 1.0,  # Weight of the focal loss (paper 1).
  }
  pseudo_anomaly_kinds = {PERLIN_KIND: 'tasad_jax.methods.draem_perlin'}
  anomaly_defaults = PERLIN_SETTINGS

  def __init__(self, config):
    super().__init__(config)
    d, dtype = self.settings, jnp.dtype(config.model.dtype)
    self.reconstructive = Reconstructive(int(d.recon_width), dtype)
    self.discriminative = Discriminative(int(d.disc_width), dtype)
    self.lr = lr_schedule(config.train, float(d.learning_rate), self.num_steps)

  def check_config(self) -> None:
    d, size = self.settings, self.config.data.image_size
    if not isinstance(size, int) or size % 32:
      raise UserInputError(f'config.data.image_size: {size!r} must be a '
                           'multiple of 32 for draem (five 2x poolings)')
    for field in ('recon_width', 'disc_width'):
      if int(d[field]) < 1:
        raise UserInputError(f'config.coarse.draem.{field}: must be >= 1')
    if not 0 <= d.focal_smooth < 0.5:
      raise UserInputError('config.coarse.draem.focal_smooth: must be in '
                           f'[0, 0.5), got {d.focal_smooth}')
    if d.learning_rate <= 0:
      raise UserInputError('config.coarse.draem.learning_rate: must be > 0')

  # Model.

  def create_state(self, mesh) -> TrainState:
    size = self.config.data.image_size

    def init(key):
      k_rec, k_disc = jax.random.split(key)
      image = jnp.zeros((1, size, size, 3))
      return {RECONSTRUCTIVE: self.reconstructive.init(k_rec, image),
              DISCRIMINATIVE: self.discriminative.init(
                  k_disc, jnp.zeros((1, size, size, 6)))}

    state = TrainState.create(
        stage.jit_init(init)(self.init_key()),
        [Optimizer('adam', (RECONSTRUCTIVE, DISCRIMINATIVE),
                   optax.adam(self.lr))])
    return jax.device_put(state, sharding.replicated(mesh))

  def _forward(self, variables: dict, images: jax.Array, train: bool):
    """(reconstruction, logits, {network: new batch stats} or None)."""
    mutable = ['batch_stats'] if train else False
    rec = self.reconstructive.apply(variables[RECONSTRUCTIVE], images,
                                    train=train, mutable=mutable)
    rec, rec_stats = rec if train else (rec, None)
    joined = jnp.concatenate([rec, images.astype(jnp.float32)], axis=-1)
    logits = self.discriminative.apply(variables[DISCRIMINATIVE], joined,
                                       train=train, mutable=mutable)
    if not train:
      return rec, logits, None
    logits, disc_stats = logits
    return rec, logits, {RECONSTRUCTIVE: rec_stats['batch_stats'],
                         DISCRIMINATIVE: disc_stats['batch_stats']}

  def anomaly_map(self, variables, images: jax.Array) -> jax.Array:
    _, logits, _ = self._forward(split_networks(variables), images, False)
    return jax.nn.softmax(logits, axis=-1)[..., 1:]

  # Training.

  def _step(self, state: TrainState, batch, rng, context):
    """Both subnetworks, one Adam update of the summed loss."""
    del rng, context
    d = self.settings

    def loss_fn(params):
      variables = {n: {'params': params[n],
                       'batch_stats': state.batch_stats[n]} for n in params}
      rec, logits, stats = self._forward(variables, batch['augmented'], True)
      l2 = losses.mse(rec, batch['image'])
      ssim = losses.ssim(rec, batch['image'], padding='same')
      focal = focal_loss(jax.nn.softmax(logits, axis=-1), batch['mask'],
                         d.focal_gamma, d.focal_smooth)
      loss = l2 + d.ssim_weight * (1.0 - ssim) + d.focal_weight * focal
      return loss, (stats, {'l2': l2, 'ssim': ssim, 'focal': focal})

    (loss, (stats, parts)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    finite = all_finite(loss, grads)
    updated = state.apply_gradients('adam', grads, stats)
    return finish_step(state, updated, finite), {
        'loss': loss, 'learning_rate': self.lr(state.step), **parts}, finite

  def phases(self) -> list[stage.Phase]:
    return [stage.Phase(0, self._step)]

  def batch_keys(self) -> tuple[str, ...]:
    return ('image', 'augmented', 'mask')

  def summary_images(self, state, batch, context, mesh):
    """Input, reconstruction, mask and map of up to 4 of this process's
    samples."""
    del context
    images = batch['augmented']
    rec, maps = _summary_forward(self, mesh)(
        state.variables, sharding.to_global({'x': images}, mesh)['x'])
    n = min(4, len(images))
    return {'input': np.asarray(images[:n]),
            'reconstruction': np.clip(sharding.to_local(rec)[:n], 0.0, 1.0),
            'mask': np.asarray(batch['mask'][:n]),
            'map': sharding.to_local(maps)[:n]}


@functools.lru_cache(maxsize=4)
def _summary_forward(method: Draem, mesh):
  """Jitted (reconstruction, map) of a method's variables and images."""

  def forward(variables, images):
    rec, logits, _ = method._forward(  # pylint: disable=protected-access
        split_networks(variables), images, False)
    return rec, jax.nn.softmax(logits, axis=-1)[..., 1:]
  return stage.make_predict(forward, mesh)
