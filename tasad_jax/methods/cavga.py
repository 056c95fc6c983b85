"""CAVGA (Venkataramanan et al., "Attention Guided Anomaly Localization in
Images", ECCV 2020) as a coarse stage: CAVGA-R and, with `weak=True`, CAVGA-Rw.

Only the paper's abstract was at hand; what it leaves open is chosen here and
configurable under `config.coarse.cavga` (marked "ours").

* Encoder: a ResNet-18 trunk (`tasad_jax.models.resnet`, layers 1 to
  `encoder_layers`; random init or torchvision weights), trained. Its last
  feature map F keeps the spatial layout; mu and log sigma^2 are 1x1
  convolutions of F (`latent_channels` each), z = mu + sigma * eps with eps
  drawn from the step's key.
* Decoder (ours): a 3x3 conv of z, then per 2x bilinear up-sampling a ResNet
  basic block (channels halving from `decoder_channels`, at least 16), back to
  the image size, a 3x3 conv and a sigmoid.
* Discriminator (ours): three stride-2 4x4 convs with leaky ReLU, a 3x3 conv to
  one logit per position, averaged: real (the normal image) vs reconstructed.
* Attention (Grad-CAM, `gradcam`): s = sum of z over the latent (of mu at test
  time); alpha_k = spatial mean of ds/dF_k; A = ReLU(sum_k alpha_k F_k),
  divided by its per-image maximum (ours: per-image max, not min-max).
* Losses of the generator (encoder, latent, decoder, classifier), on the
  normal samples of a batch: `rec_weight` x MSE + `kl_weight` x KL (mean per
  latent element; ours) + `adv_weight` x non-saturating GAN loss +
  `ae_weight` (0.01) x mean(1 - A). A is differentiated through: the gradient
  of the loss passes through Grad-CAM's own gradient. The discriminator is
  updated after the generator in the same step, on the generator's
  reconstructions (BCE). Adam (lr `learning_rate`, beta1 0.5; ours).
* CAVGA-Rw (`weak=True`): a classifier (a dense layer on the flattened z) to
  the logits (normal, anomalous), softmax cross-entropy (= BCE) weight
  `bce_weight` (0.001); the complementary guided attention loss, weight
  `cga_weight` (0.01): on normal samples the classifier gets right, the
  Grad-CAM of the normal logit should cover the image and that of the
  anomalous logit vanish: mean(1 - A_normal) + mean(A_anomalous). The
  encoder then reads the 'augmented' image; the classifier's anomalous
  samples are pseudo-anomalies, real labelled anomalies
  (`config.data.labelled_anomalies`), or both (`classifier_data`).
  CAVGA-R reads the clean 'image' and skips real defects.
* Test: the map is 1 - A (`map_attention`: of the latent mu, or for CAVGA-Rw
  of the normal logit, or A of the anomalous logit), bilinearly up-sampled to
  the image; the image score is the reconstruction error (mean squared error
  of the image and the decoding of mu; `score='map'` scores the map instead,
  then TASAD's fine stage also changes the score).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tasad_jax.core import scoring, sharding, stage
from tasad_jax.runtime.errors import UserInputError
from tasad_jax.methods import base, registry
from tasad_jax.models import resnet
from tasad_jax.core.train_state import (Optimizer, TrainState, all_finite,
                                        finish_step, split_networks)

GENERATOR = ('encoder', 'latent', 'decoder')


def normalize_attention(cam: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Per-image division by the maximum: maps [N, h, w] >= 0 to [0, 1]."""
  return cam / (jnp.max(cam, axis=(1, 2), keepdims=True) + eps)


def gradcam(score_fn: Callable, features: jax.Array
            ) -> tuple[jax.Array, jax.Array, Any]:
  """Grad-CAM of per-image scores with respect to a feature map.

  Args:
    score_fn: features [N, h, w, C] -> (scores [N], aux); image n's score must
      depend on image n's features only (then the gradient of their sum is
      every image's own gradient).
    features: [N, h, w, C].

  Returns:
    (A [N, h, w] in [0, 1], scores, aux) with A = ReLU(sum_k alpha_k F_k) over
    its per-image maximum, alpha_k the spatial mean of d score / dF_k. Jax
    differentiates through it (a loss of A gets second-order terms).
  """
  scores, vjp_fn, aux = jax.vjp(score_fn, features, has_aux=True)
  (grads,) = vjp_fn(jnp.ones_like(scores))
  alpha = jnp.mean(grads, axis=(1, 2), keepdims=True)
  cam = jax.nn.relu(jnp.sum(alpha * features, axis=-1))
  return normalize_attention(cam), scores, aux


class Latent(nn.Module):
  """mu and log sigma^2 as 1x1 convolutions of the feature map."""
  channels: int

  @nn.compact
  def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
    mu = nn.Conv(self.channels, (1, 1), name='mu')(features)
    logvar = nn.Conv(self.channels, (1, 1), name='logvar')(features)
    return mu, jnp.clip(logvar, -10.0, 10.0)


class Decoder(nn.Module):
  """z [N, h, w, c] -> image [N, h*2^u, w*2^u, 3] in [0, 1]."""
  channels: int
  upsamplings: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    x = nn.Conv(self.channels, (3, 3), dtype=self.dtype, name='stem')(
        z.astype(self.dtype))
    for i in range(self.upsamplings):
      n, h, w, c = x.shape
      x = jax.image.resize(x, (n, 2 * h, 2 * w, c), 'bilinear')
      width = max(16, self.channels // 2 ** (i + 1))
      x = resnet.BasicBlock(width, 1, self.dtype, name=f'up{i}')(x, train)
    x = nn.Conv(3, (3, 3), dtype=self.dtype, name='out')(x)
    return jax.nn.sigmoid(x.astype(jnp.float32))


class Discriminator(nn.Module):
  """Image [N, S, S, 3] -> one real/fake logit per image."""
  channels: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(3):
      x = nn.Conv(self.channels * 2 ** i, (4, 4), strides=2, name=f'conv{i}')(x)
      x = nn.leaky_relu(x, 0.2)
    return jnp.mean(nn.Conv(1, (3, 3), name='out')(x), axis=(1, 2, 3))


class Classifier(nn.Module):
  """Flattened latent -> logits (normal, anomalous)."""

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    return nn.Dense(2, name='dense')(z.reshape(z.shape[0], -1))


def _mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """Weighted mean of per-sample values [N] (0 when all weights are 0)."""
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _per_image(x: jax.Array) -> jax.Array:
  return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


@registry.register
class Cavga(base.CoarseMethod):
  """CAVGA-R (unsupervised) and CAVGA-Rw (weak=True)."""

  method = 'cavga'
  defaults = {
      'weak': False,  # CAVGA-Rw: classifier + complementary guided attention.
      'encoder': 'random',  # 'random' or a torchvision resnet18 state dict (.pth/.npz).
      'encoder_layers': 3,  # ResNet-18 layers in the encoder (ours; latent stride 4*2^(L-1)).
      'latent_channels': 64,  # Channels of mu, log sigma^2 and z (ours).
      'decoder_channels': 128,  # Decoder width after the latent, halved per up-sampling (ours).
      'disc_channels': 32,  # Discriminator width (ours).
      'learning_rate': 2e-4,  # Adam lr of generator and discriminator (ours).
      'rec_weight': 1.0,  # Weight of the reconstruction MSE.
      'kl_weight': 1e-3,  # Weight of the KL term, mean per latent element (ours).
      'adv_weight': 0.01,  # Weight of the generator's adversarial loss (ours).
      'ae_weight': 0.01,  # Attention expansion loss mean(1 - A) (paper: 0.01).
      'bce_weight': 0.001,  # CAVGA-Rw classifier loss (paper: 0.001).
      'cga_weight': 0.01,  # CAVGA-Rw complementary guided attention (paper: 0.01).
      'classifier_data': 'both',  # CAVGA-Rw anomalous samples: 'pseudo', 'real' (labelled) or 'both'.
      'map_attention': 'auto',  # Test map: 'latent' (1 - A of mu), 'normal_class', 'anomalous_class'; auto: normal_class if weak.
      'score': 'reconstruction',  # Image score: 'reconstruction' (MSE) or 'map' (max of mean-filtered map).
  }

  def __init__(self, config):
    super().__init__(config)
    d = self.settings
    dtype = jnp.dtype(config.model.dtype)
    self.layers = int(d.encoder_layers)
    self.stride = 4 * 2 ** (self.layers - 1)
    self.encoder = resnet.ResNet18(self.layers, dtype)
    self.latent = Latent(int(d.latent_channels))
    # Up-samplings from the latent back to the image: log2(stride).
    self.decoder = Decoder(int(d.decoder_channels), self.layers + 1, dtype)
    self.discriminator = Discriminator(int(d.disc_channels))
    self.classifier = Classifier()
    self.weak = bool(d.weak)
    generator = GENERATOR + (('classifier',) if self.weak else ())
    tx = lambda: optax.adam(d.learning_rate, b1=0.5)  # pylint: disable=unnecessary-lambda-assignment
    self.optimizers = [Optimizer('generator', generator, tx()),
                       Optimizer('discriminator', ('discriminator',), tx())]

  def check_config(self) -> None:
    d, size = self.settings, self.config.data.image_size
    if d.encoder_layers not in (1, 2, 3, 4):
      raise UserInputError('config.coarse.cavga.encoder_layers: must be 1..4')
    if size % self.stride or size % 4:
      raise UserInputError(
          f'config.data.image_size: {size} must be a multiple of {self.stride}'
          f' (the latent stride of {d.encoder_layers} ResNet layers)')
    if d.encoder != 'random' and not d.encoder.endswith(('.pth', '.pt', '.npz')):
      raise UserInputError(
          f'config.coarse.cavga.encoder: {d.encoder!r}; use \'random\' or a '
          'torchvision resnet18 state dict (.pth, .pt or .npz)')
    if d.classifier_data not in ('pseudo', 'real', 'both'):
      raise UserInputError('config.coarse.cavga.classifier_data: '
                           f"{d.classifier_data!r}; use 'pseudo', 'real' or 'both'")
    if d.weak and d.classifier_data == 'real' and not self.config.data.get(
        'labelled_anomalies', ''):
      raise UserInputError(
          "config.coarse.cavga.classifier_data: 'real' needs labelled anomalies "
          '(config.data.labelled_anomalies)')
    if self._map_attention() not in ('latent', 'normal_class', 'anomalous_class'):
      raise UserInputError(f'config.coarse.cavga.map_attention: '
                           f'{d.map_attention!r} unknown')
    if self._map_attention() != 'latent' and not d.weak:
      raise UserInputError('config.coarse.cavga.map_attention: class attention '
                           'needs weak=True (the classifier)')
    if d.score not in ('reconstruction', 'map'):
      raise UserInputError(f'config.coarse.cavga.score: {d.score!r}; use '
                           "'reconstruction' or 'map'")

  def _map_attention(self) -> str:
    m = self.settings.map_attention
    return ('normal_class' if self.weak else 'latent') if m == 'auto' else m

  # Model.

  def _init_variables(self) -> dict:
    size = self.config.data.image_size
    x = jnp.zeros((1, size, size, 3))

    def init(key):
      keys = jax.random.split(key, 5)
      encoder = self.encoder.init(keys[0], x)
      features = self.encoder.apply(encoder, x)[-1]
      latent = self.latent.init(keys[1], features)
      z = self.latent.apply(latent, features)[0]
      out = {'encoder': encoder, 'latent': latent,
             'decoder': self.decoder.init(keys[2], z),
             'discriminator': self.discriminator.init(keys[3], x)}
      if self.weak:
        out['classifier'] = self.classifier.init(keys[4], z)
      return out

    variables = stage.jit_init(init)(self.init_key())
    if self.settings.encoder != 'random':
      variables['encoder'] = resnet.load_weights(self.settings.encoder,
                                                 self.layers)
    return variables

  def create_state(self, mesh) -> TrainState:
    state = TrainState.create(self._init_variables(), self.optimizers)
    return jax.device_put(state, sharding.replicated(mesh))

  def inference_variables(self, state: TrainState) -> dict:
    """Every network but the discriminator."""
    v = state.variables
    return {'params': {k: p for k, p in v['params'].items()
                       if k != 'discriminator'},
            'batch_stats': v['batch_stats']}

  def _attention(self, v: dict, features: jax.Array, kind: str,
                 noise: jax.Array | None = None):
    """(A, scores, (z, mu, logvar)) of 'latent' or a class's logit."""

    def score(f):
      mu, logvar = self.latent.apply(v['latent'], f)
      z = mu if noise is None else mu + jnp.exp(0.5 * logvar) * noise
      if kind == 'latent':
        s = jnp.sum(z, axis=(1, 2, 3))
      else:
        logits = self.classifier.apply(v['classifier'], z)
        s = logits[:, 0 if kind == 'normal_class' else 1]
      return s, (z, mu, logvar)
    return gradcam(score, features)

  def outputs(self, variables, images: jax.Array) -> dict[str, jax.Array]:
    """The map (1 - A, or A of the anomalous logit) and the reconstruction
    error [N] of the decoding of mu."""
    v = split_networks(variables)
    features = self.encoder.apply(v['encoder'], images, train=False)[-1]
    kind = self._map_attention()
    attention, _, (_, mu, _) = self._attention(v, features, kind)
    amap = attention if kind == 'anomalous_class' else 1.0 - attention
    n, s = images.shape[0], images.shape[1]
    amap = jax.image.resize(amap[..., None], (n, s, images.shape[2], 1),
                            'bilinear')
    recon = self.decoder.apply(v['decoder'], mu, train=False)
    return {'map': jnp.clip(amap, 0.0, 1.0).astype(jnp.float32),
            'recon_error': _per_image((images - recon) ** 2)}

  def anomaly_map(self, variables, images: jax.Array) -> jax.Array:
    return self.outputs(variables, images)['map']

  def image_score(self, maps: jax.Array, outputs: dict[str, jax.Array],
                  valid=None) -> jax.Array:
    if self.settings.score == 'map':
      return scoring.max_of_mean_filter(maps, self.score_window, valid)
    return outputs['recon_error']

  def scores_from_map(self) -> bool:
    return self.settings.score == 'map'

  def score_reduction(self):
    return (scoring.mean_filter_reduction(self.score_window)
            if self.scores_from_map() else None)

  def whole_image(self) -> bool:
    """No: the attention map is normalised over the whole input."""
    return False

  # Training.

  def batch_keys(self) -> tuple[str, ...]:
    return ('image', 'augmented', 'label', 'real')

  def _step(self, state: TrainState, batch, rng, context):
    """Generator (VAE + adversarial + attention [+ classifier]) then
    discriminator; rng draws the latent's noise."""
    del context
    d = self.settings
    label = batch['label'].astype(jnp.float32)
    real = batch['real'].astype(jnp.float32)
    if self.weak:
      x, normal = batch['augmented'], 1.0 - label
    else:
      x, normal = batch['image'], 1.0 - real
    v = split_networks(state.variables)
    stats = state.batch_stats
    disc = v['discriminator']

    def generator_loss(params):
      p = {**v, **{k: {'params': params[k], **({'batch_stats': stats[k]}
                                               if k in stats else {})}
                   for k in params}}
      features, enc_updates = self.encoder.apply(
          p['encoder'], x, train=True, mutable=['batch_stats'])
      features = features[-1]
      shape = features.shape[:3] + (int(d.latent_channels),)
      noise = jax.random.normal(jax.random.fold_in(rng, 1), shape)
      attention, _, (z, mu, logvar) = self._attention(p, features, 'latent',
                                                      noise)
      recon, dec_updates = self.decoder.apply(p['decoder'], z, train=True,
                                              mutable=['batch_stats'])
      rec = _mean(_per_image((x - recon) ** 2), normal)
      kl = _mean(_per_image(-0.5 * (1.0 + logvar - mu ** 2 - jnp.exp(logvar))),
                 normal)
      fake_logits = self.discriminator.apply(disc, recon)
      adv = _mean(optax.sigmoid_binary_cross_entropy(
          fake_logits, jnp.ones_like(fake_logits)), normal)
      ae = _mean(_per_image(1.0 - attention), normal)
      loss = (d.rec_weight * rec + d.kl_weight * kl + d.adv_weight * adv
              + d.ae_weight * ae)
      parts = {'rec': rec, 'kl': kl, 'adv': adv, 'ae': ae,
               'attention': _mean(_per_image(attention), normal)}
      if self.weak:
        logits = self.classifier.apply(p['classifier'], z)
        bce = optax.softmax_cross_entropy_with_integer_labels(
            logits, batch['label'].astype(jnp.int32))
        use = {'both': jnp.ones_like(label), 'real': 1.0 - label + real,
               'pseudo': 1.0 - real}[d.classifier_data]
        bce = _mean(bce, use)
        a_normal = self._attention(p, features, 'normal_class', noise)[0]
        a_anomalous = self._attention(p, features, 'anomalous_class', noise)[0]
        right = normal * (jnp.argmax(logits, -1) == 0)
        cga = _mean(_per_image(1.0 - a_normal) + _per_image(a_anomalous), right)
        loss += d.bce_weight * bce + d.cga_weight * cga
        parts.update(bce=bce, cga=cga, accuracy=jnp.mean(
            (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)))
      new_stats = {'encoder': enc_updates['batch_stats'],
                   'decoder': dec_updates['batch_stats']}
      return loss, (new_stats, recon, parts)

    generator = self.optimizers[0].networks
    (g_loss, (new_stats, recon, parts)), g_grads = jax.value_and_grad(
        generator_loss, has_aux=True)({k: state.params[k] for k in generator})
    updated = state.apply_gradients('generator', g_grads, new_stats)

    def discriminator_loss(params):
      logits_real = self.discriminator.apply({'params': params}, x)
      logits_fake = self.discriminator.apply(
          {'params': params}, jax.lax.stop_gradient(recon))
      return _mean(optax.sigmoid_binary_cross_entropy(
          logits_real, jnp.ones_like(logits_real))
                   + optax.sigmoid_binary_cross_entropy(
                       logits_fake, jnp.zeros_like(logits_fake)), normal)

    d_loss, d_grads = jax.value_and_grad(discriminator_loss)(
        state.params['discriminator'])
    updated = updated.apply_gradients('discriminator',
                                      {'discriminator': d_grads})
    finite = all_finite(g_loss, d_loss, g_grads, d_grads)
    return finish_step(state, updated, finite), {
        'loss': g_loss, 'disc_loss': d_loss, **parts}, finite

  def phases(self) -> list[stage.Phase]:
    return [stage.Phase(0, self._step, 'cavga')]

